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
    """Directories holding a finished search: architecture.yaml next to alpha_history.csv (local runs and the
    checkpoints of Ray trials; for a Ray trial only its latest checkpoint counts)."""
    found = {}
    for arch in sorted(Path(root).rglob("architecture.yaml")):
        d = arch.parent
        if not (d / "alpha_history.csv").exists():
            continue
        key = d.parent if d.name.startswith("checkpoint_") else d
        if key not in found or d.name > found[key].name:
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
