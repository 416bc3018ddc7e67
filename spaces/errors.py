"""Errors in a search-space or architecture file (the CLI prints them as one line, exit code 2)."""


class SpecError(ValueError):
    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
