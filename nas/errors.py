"""The one exception type for mistakes a user can fix (bad config, missing file, wrong layout)."""


class UserError(Exception):
    """Raised for bad input. The CLI prints ``error: <message>`` on one line and exits with code 2."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
