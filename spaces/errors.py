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


_TYPES = {"int_type": "an integer", "float_type": "a number", "string_type": "text", "bool_type": "true or false",
          "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping", "int_from_float": "an integer"}


def first_violation(e, source: str, unknown: str = "key") -> str:
    """A pydantic ``ValidationError``'s first violation as one line: ``<source>: <key.path> <what is wrong>``
    (``unknown``: what an extra key is called, e.g. "config key")."""
    err = e.errors(include_url=False)[0]
    path = ".".join(str(p) for p in err["loc"])
    v, kind = err.get("input"), err["type"]
    if kind == "extra_forbidden":
        return f"{source}: unknown {unknown} {path!r}"
    if kind == "missing":
        return f"{source}: {path} is missing"
    if v is None and kind in _TYPES:
        return f"{source}: {path} may not be empty"
    if kind in _TYPES:
        return f"{source}: {path} must be {_TYPES[kind]}, got {v!r}"
    if kind == "literal_error":
        choices = err["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
        return f"{source}: {path} must be one of {choices}, got {v!r}"
    if kind == "value_error":  # the models' own validators
        return f"{source}: {path + ' ' if path else ''}{err['ctx']['error']}"
    msg = err["msg"].replace("Input should be", "must be")
    return f"{source}: {path} {msg}, got {v!r}"
