"""Finding and reading result files under a directory (run dirs, search runs, Ray trials, tables, studies)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml


def read_architecture(path: Path) -> dict:
    return yaml.safe_load(Path(path).read_text())


def pair_choices(arch: dict) -> dict[tuple[str, str], str]:
    rows = arch["choices"].get("atrc", {})
    return {(t, s): c for t, row in rows.items() for s, c in row.items()}


def search_runs(root: Path) -> list[Path]:
    """Directories holding a finished search: architecture.yaml next to alpha_history.csv (local runs, and
    Ray trials: each trial counts once, by its ``run`` directory, else its latest checkpoint)."""
    found = {}
    for arch in sorted(Path(root).rglob("architecture.yaml")):
        d = arch.parent
        if not (d / "alpha_history.csv").exists():
            continue
        in_trial = (d.parent / "params.json").exists() and (d.name == "run" or d.name.startswith("checkpoint_"))
        key = d.parent if in_trial or d.name.startswith("checkpoint_") else d
        rank = (d.name == "run", d.name)  # the trial's own run directory first, then the newest checkpoint
        if key not in found or rank > (found[key].name == "run", found[key].name):
            found[key] = d
    return sorted(found.values())


def read_json(path: Path) -> dict | None:
    return json.loads(Path(path).read_text()) if Path(path).is_file() else None


def read_csv(path: Path) -> pd.DataFrame | None:
    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        return None
    return pd.read_csv(p)


def first(root: Path, name: str) -> Path | None:
    hits = sorted(Path(root).rglob(name))
    return hits[0] if hits else None
