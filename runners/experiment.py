"""Reading a Ray Tune experiment directory from its files (no Ray needed): per-trial final results,
errors, checkpoints, the summary table and the best trial by a metric."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from trcnas.nas.errors import UserError
from trcnas.spaces.io import atomic_write_text


def trial_dirs(exp_dir: Path) -> list[Path]:
    return sorted(p for p in Path(exp_dir).iterdir() if p.is_dir() and (p / "params.json").exists())


def _results(trial: Path) -> list[dict]:
    f = trial / "result.json"
    if not f.exists():
        return []
    return [json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()]


def is_live(row: dict) -> bool:
    """A live-metrics report (every logging step; it carries the run's ``total_steps``), not a checkpoint,
    final or study report. Ray fills ``done`` into every row, so that key does not tell them apart."""
    return "total_steps" in row


def latest_checkpoint(trial: Path) -> Path | None:
    cks = sorted(trial.glob("checkpoint_*"), key=lambda p: int(p.name.split("_")[-1]))
    return cks[-1] if cks else None


def trial_rows(exp_dir: Path) -> list[dict]:
    rows = []
    for t in trial_dirs(exp_dir):
        params = json.loads((t / "params.json").read_text())
        res = [r for r in _results(t) if not is_live(r)]  # the checkpoint and final reports
        last = res[-1] if res else {}
        error = None
        err_file = t / "error.txt"
        if err_file.exists():
            lines = [ln for ln in err_file.read_text().splitlines() if ln.strip()]
            error = lines[-1] if lines else "error"
        status = "done" if last.get("done") else ("error" if error else "unfinished")
        ck = latest_checkpoint(t)
        arch = None
        if ck is not None and (ck / "architecture.yaml").exists() and status == "done":
            choices = yaml.safe_load((ck / "architecture.yaml").read_text())["choices"]
            arch = json.dumps(choices, separators=(",", ":"))
        row = {"trial": t.name, "seed": params.get("seed"), "status": status, "error": error,
               "step": last.get("step"), "node_id": last.get("node_id"),
               "wall_s": last.get("time_total_s"), "checkpoint": str(ck) if ck else None, "architecture": arch}
        row.update({k: v for k, v in (params.get("overrides") or {}).items()})
        row.update({k: v for k, v in last.items() if k.startswith("val/") or k in ("delta_m", "frozen")})
        rows.append(row)
    return rows


def write_summary(exp_dir: Path) -> Path:
    import pandas as pd

    rows = trial_rows(exp_dir)
    df = pd.DataFrame(rows)
    path = Path(exp_dir) / "summary.csv"
    atomic_write_text(path, df.to_csv(index=False))
    return path


def best_trial_dir(exp_dir: Path, metric: str = "delta_m", mode: str = "max") -> Path:
    """The latest checkpoint of the finished trial with the best ``metric``."""
    if not trial_dirs(exp_dir):
        raise UserError(f"{exp_dir} is neither a search run directory nor a Ray Tune experiment")
    done = [r for r in trial_rows(exp_dir) if r["status"] == "done"]
    if not done:
        raise UserError(f"{exp_dir}: no finished trial to export")
    scored = [r for r in done if r.get(metric) is not None]
    if not scored:
        known = sorted({k for r in done for k in r if k.startswith("val/") or k == "delta_m"})
        raise UserError(f"{exp_dir}: no trial reports {metric!r} (set baselines for delta_m); try one of {known}")
    best = (max if mode == "max" else min)(scored, key=lambda r: r[metric])
    return Path(best["checkpoint"])
