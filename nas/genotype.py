"""The ATRC reference's JSON genotypes ``{"data": {target: {source: code}}, "step": N}``, read and written with the
codes the context types register (``ContextType.code``: 0 none, 1 global, 2 local, 3 tlabel, 4 slabel)."""

from __future__ import annotations

import json
from pathlib import Path

from trcnas.nas.models.context import CONTEXTS, context_for_code, context_types
from trcnas.spaces.architecture import Architecture
from trcnas.spaces.errors import UserError

# the reference's task names where they differ from ours (its PASCAL-Context genotype)
REFERENCE_TASK_NAMES = {"human_parts": "parts", "sal": "saliency"}


def _ours(name: str) -> str:
    return REFERENCE_TASK_NAMES.get(name, name)


def from_genotype(data: dict | str | Path, tasks: list[str] | None = None, space: str = "atrc") -> Architecture:
    """An architecture file's content from a reference genotype (a mapping, or the path of its JSON file); the
    reference's task names become ours (``REFERENCE_TASK_NAMES``)."""
    source = "genotype"
    if not isinstance(data, dict):
        source = str(data)
        try:
            data = json.loads(Path(data).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"cannot read genotype JSON {source}: {e}") from None
    rows = data.get("data") if isinstance(data, dict) else None
    if not isinstance(rows, dict):
        raise UserError(f"{source}: a genotype needs a 'data' mapping {{target: {{source: code}}}}")
    rows = {_ours(t): {_ours(s): c for s, c in row.items()} if isinstance(row, dict) else row
            for t, row in rows.items()}
    codes = sorted(t.code for t in context_types() if t.code is not None)
    tasks = list(tasks or rows.keys())
    choices: dict = {"atrc": {t: {} for t in tasks}}
    for t in tasks:
        for s in tasks:
            code = (rows.get(t) or {}).get(s)
            if not isinstance(code, int) or isinstance(code, bool) or code not in codes:
                raise UserError(f"{source}: data.{t}.{s} must be a code {codes[0]}..{codes[-1]}, got {code!r}")
            choices["atrc"][t][s] = context_for_code(code)
    search = {"step": data["step"]} if "step" in data else {}
    arch = Architecture(space, tasks, choices, search)
    arch.validate(source=source)
    return arch


def to_genotype(arch: Architecture) -> dict:
    """The reference's genotype of an ATRC architecture (``from_genotype`` reads it back unchanged)."""
    rows = arch.choices.get("atrc")
    if not isinstance(rows, dict):
        raise UserError(f"architecture of space {arch.space!r} has no ATRC pairs to write as a genotype")
    data: dict = {}
    for t in arch.tasks:
        data[t] = {}
        for s in arch.tasks:
            info = CONTEXTS.info(rows[t][s])
            if info.code is None:
                raise UserError(f"context type {info.name!r} ({t} <- {s}) has no reference genotype code")
            data[t][s] = info.code
    out = {"data": data}
    if "step" in arch.search:
        out["step"] = arch.search["step"]
    return out
