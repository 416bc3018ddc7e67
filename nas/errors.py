"""The exception types the command line turns into one ``error:`` line: mistakes a user can fix (bad config,
missing file, wrong layout), and a training whose loss diverged."""


class UserError(Exception):
    """Raised for bad input. The CLI prints ``error: <message>`` on one line and exits with code 2."""

    def __init__(self, message: str):
        text = str(message)
        if "\nOriginal Traceback" in text:  # re-raised by a DataLoader worker: torch passes its whole traceback
            last = text.rstrip().splitlines()[-1]  # "trcnas.nas.errors.UserError: <the message>"
            text = last.split(": ", 1)[1] if ": " in last else last
        super().__init__(" ".join(text.split()))


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite. The CLI prints one ``error:`` line with what to try and exits
    with code 1 (the input was valid; the optimisation failed)."""
