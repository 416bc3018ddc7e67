"""The exception types the command line turns into one ``error:`` line: mistakes a user can fix (bad config,
missing file, wrong layout), and a training whose loss diverged."""

from trcnas.spaces.errors import UserError

__all__ = ["DivergedError", "UserError"]


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite. The CLI prints one ``error:`` line with what to try and exits
    with code 1 (the input was valid; the optimisation failed)."""
