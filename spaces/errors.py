"""The one exception for bad input, in the lowest layer so that every layer raises the same class: a mistake a
user can fix (a bad config, space or architecture file, a missing file, a wrong dataset layout). The command line
prints it as one ``error:`` line and exits with code 2."""


class UserError(ValueError):
    """Bad input; the message is one line (whitespace folded)."""

    def __init__(self, message: str):
        text = str(message)
        if "\nOriginal Traceback" in text:  # re-raised by a DataLoader worker: torch passes its whole traceback
            last = text.rstrip().splitlines()[-1]  # "trcnas.spaces.errors.UserError: <the message>"
            text = last.split(": ", 1)[1] if ": " in last else last
        super().__init__(" ".join(text.split()))


SpecError = UserError  # the name space and architecture code raises (one class: catching either catches both)
