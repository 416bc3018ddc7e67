"""The configuration reference (docs/configuration.md), generated from the config schema: every key with its
type, default, range and the comment that explains it in the schema's source. ``trcnas configs --reference``
prints it; a test fails when the committed page is stale."""

from __future__ import annotations

import inspect
import re

from pydantic import BaseModel

from trcnas.nas.config import config_schema

HEADER = """# Configuration reference

Generated from the config schema (`nas/schema.py` and the sections families register) by
`trcnas configs --reference > docs/configuration.md`; a test fails when this page is stale. A config is
YAML that may extend another with `base:`; `--set key.path=value` overrides any key (a mapping merges into the
config's; `_delete_: true` in it replaces it whole, `{}` empties it). Unknown keys are refused and values are strict.
"""


def _comments(cls: type[BaseModel]) -> dict[str, str]:
    """Field name -> the comment on its line, or on the comment lines just above it, in the class source."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    out, above = {}, []
    for ln in lines:
        s = ln.strip()
        if s.startswith("#"):
            above.append(s.lstrip("# ").strip())
            continue
        m = re.match(r"(\w+)\s*:", s)
        if m and m.group(1) in cls.model_fields:
            text = " ".join(above)
            if "#" in s:
                text = (text + " " + s.split("#", 1)[1].strip()).strip()
            out[m.group(1)] = text
        above = []
    return out


def _type(ann) -> str:
    text = str(ann).replace("typing.", "").replace("<class '", "").replace("'>", "")
    return text.replace("trcnas.nas.schema.", "")


def _range(field) -> str:
    parts = []
    for m in field.metadata:
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            v = getattr(m, attr, None)
            if v is not None:
                parts.append(f"{sym} {v}")
    return ", ".join(parts)


def rows(cls: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str, str]]:
    out = []
    notes = _comments(cls)
    for name, f in cls.model_fields.items():
        ann = f.annotation
        key = f"{prefix}{name}"
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += rows(ann, f"{key}.")
            continue
        if f.default_factory is not None and getattr(f.default_factory, "__doc__", None) and \
                f.default_factory.__module__.startswith("trcnas."):  # a default read from a registry: what it is
            shown = f.default_factory.__doc__.strip().split("\n")[0].rstrip(".")
        else:
            default = f.get_default(call_default_factory=True)
            shown = repr(default) if default != "" else "''"
        out.append((key, _type(ann), shown, _range(f), notes.get(name, "")))
    return out


def reference_markdown() -> str:
    lines = [HEADER, "| key | type | default | range | what |", "|---|---|---|---|---|"]
    for key, typ, default, rng, note in rows(config_schema()):
        cell = [key, typ, default, rng, note]
        lines.append("| " + " | ".join(f"`{c}`" if i < 3 and c else c.replace("|", "\\|")
                                        for i, c in enumerate(cell)) + " |")
    return "\n".join(lines) + "\n"
