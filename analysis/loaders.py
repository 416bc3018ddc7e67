"""Finding and reading result files under a directory (run dirs, search runs, Ray trials, tables, studies)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pandas as pd
import yaml

from trcnas.spaces.errors import UserError
from trcnas.spaces.space import SearchSpace, load_space


def read_architecture(path: Path) -> dict:
    return yaml.safe_load(Path(path).read_text())


@lru_cache(maxsize=64)
def _space_per(name: str) -> tuple[str, str] | None:
    try:
        space = load_space(name)
    except (UserError, OSError):
        return None
    return space.group, space.per


def pair_group(arch: dict) -> str | None:
    """The group of ``arch``'s choices that its space decides per task pair (``per: task_pair``, as ATRC's
    space does: target -> source -> choice), or None: a space decided otherwise, or one this process cannot
    load (a plugin's space not on this machine)."""
    spec = arch.get("space_spec")
    if isinstance(spec, dict):
        try:
            space = SearchSpace.from_dict(spec)
        except UserError:
            return None
        group_per = (space.group, space.per)
    else:
        group_per = _space_per(str(arch.get("space")))
    if group_per is None or group_per[1] != "task_pair":
        return None
    return group_per[0] if isinstance((arch.get("choices") or {}).get(group_per[0]), dict) else None


def pair_rows(arch: dict) -> dict[str, dict[str, str]] | None:
    """``{target: {source: choice}}`` of a space decided per task pair, else None (``pair_group``)."""
    group = pair_group(arch)
    return arch["choices"][group] if group else None


def pair_choices(arch: dict) -> dict[tuple[str, str], str]:
    return {(t, s): c for t, row in (pair_rows(arch) or {}).items() for s, c in row.items()}


def is_retrain(metrics: Path) -> bool:
    """Whether a metrics.json is a trained fixed architecture's (a retrain; searches write "<space>_search")."""
    m = read_json(metrics) or {}
    return bool(m.get("architecture")) and not str(m.get("model", "")).endswith("_search")


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


RESULT_FILES = ("architecture.yaml", "metrics.json", "table.csv", "trials.csv", "importance.csv")


def result_files(root: Path) -> list[Path]:
    """The files under ``root`` that a report draws from (any depth)."""
    return [p for name in RESULT_FILES for p in sorted(root.rglob(name))]


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


def importance_files(sources: list[Path]) -> list[Path]:
    """The importance.csv files named by ``sources``: a file as given, a directory searched recursively."""
    out: list[Path] = []
    for src in map(Path, sources):
        out.extend([src] if src.is_file() else sorted(src.rglob("importance.csv")))
    return out


def read_importance(root: Path, sources: list[Path] | None = None) -> tuple[pd.DataFrame | None, int]:
    """Permutation importance of every fitted model under ROOT (or in ``sources``: importance.csv files or
    directories holding them, e.g. retrains kept apart from a reliability study's searches), and how many
    there are. One importance.csv is returned as written. Several (e.g. the retrains of several seeds; the
    ATRC paper's Fig. 6 is measured over its fitted models) are reduced per (target, source): each model's
    drops summed over its blocks of that pair (an mTEB pair at several scales), then averaged over the models
    that have a block there; ``drop_*_std`` becomes the std over those models, ``n_models`` counts them."""
    files = importance_files(sources) if sources else sorted(Path(root).rglob("importance.csv"))
    frames = [f for f in map(read_csv, files) if f is not None]
    if len(frames) < 2:
        return (frames[0] if frames else None), len(frames)
    means = [c for c in frames[0].columns if c.startswith("drop_") and c.endswith("_mean")]
    per_model = [f.groupby(["target", "source"], sort=False)
                 .agg({**{c: "sum" for c in means}, "context": lambda v: "+".join(map(str, v))}).reset_index()
                 for f in frames]
    stacked = pd.concat(per_model, ignore_index=True)
    g = stacked.groupby(["target", "source"], sort=False)
    out = g[means].mean()
    for c in means:
        out[c[:-len("_mean")] + "_std"] = g[c].std(ddof=0)
    out["context"] = g["context"].agg(lambda v: "/".join(sorted(set(v))))
    out["n_models"] = g.size()
    return out.reset_index(), len(frames)
