"""``trcnas table``: the ATRC paper's Table 1 by command — single-task and multi-task baselines, every
fixed context type, and the searched ATRC architecture, each trained with the same settings and ``--seeds N``
seeds, with params, MAdds and Δm against the single-task baseline (mean ± std over seeds), written as CSV,
Markdown, LaTeX and a figure. It runs as a ``trcnas compare`` comparison, so a stopped table continues."""

from __future__ import annotations

import json
from pathlib import Path

from trcnas.analysis.compare import format_mean_std
from trcnas.analysis.report import json_safe
from trcnas.analysis.resources import delta_m_bars
from trcnas.nas.config import dump
from trcnas.nas.errors import UserError
from trcnas.nas.families import family, resolve_space
from trcnas.nas.schema import ConfigBase
from trcnas.nas.tasks import TASKS
from trcnas.runners.compare import run_compare
from trcnas.spaces import load_architecture
from trcnas.spaces.io import atomic_write_text

BASELINES = {"single_task": "Single-task baseline", "multitask": "Multi-task baseline"}


def variant_labels(cfg: ConfigBase) -> dict[str, str]:
    """Table 1's rows for the config's space family: the two baselines, the family's fixed variants (ATRC: one
    per registered context type in the space; ``none`` is the multi-task baseline) and the searched
    architecture (named as the family), with their row labels."""
    space = resolve_space(cfg)
    fam = family(space.group)
    return {**BASELINES, **fam.fixed_variants(space, list(cfg.data.tasks)), fam.name: fam.label}


def table_spec(cfg_path: Path, seeds: list[int], variants: list[str], architecture: str | None,
               labels: dict[str, str], searched: str) -> dict:
    """Table 1 as a ``trcnas compare`` comparison: every variant from the same config, Δm against the
    single-task runs' mean over the same seeds."""
    rows = []
    for v in variants:
        row = {"name": v, "label": labels[v]}
        if v in BASELINES:
            row["set"] = [f"model.type={v}"]
        elif v == searched:
            row["architecture"] = architecture or "search"
        else:
            row["architecture"] = f"fixed:{v}"
        rows.append(row)
    return {"name": "table", "config": str(cfg_path), "seeds": seeds, "baseline": "single_task", "variants": rows}


def run_table(cfg: ConfigBase, out: str | Path, architecture: str | None = None, variants=None,
              progress: bool = True, seeds: int = 1, ray: bool = False, address: str | None = None) -> dict:
    """Trains every variant with ``seeds`` seeds (from ``cfg.seed`` on) as a resumable comparison (finished
    runs are kept: run it again to continue), then writes table.csv / .md / .tex / .json (mean ± std of every
    task metric and Δm, params and MAdds) and a figure of Δm per variant with its standard deviation."""
    out = Path(out)
    labels = variant_labels(cfg)
    searched = cfg.model.type
    variants = list(variants or labels)
    unknown = set(variants) - set(labels)
    if unknown:
        raise UserError(f"unknown table variant(s) {sorted(unknown)}; choose from {', '.join(labels)}")
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    if "single_task" not in variants:
        variants.insert(0, "single_task")
    if architecture:
        load_architecture(architecture).validate(tasks=cfg.data.tasks, source=architecture)
        architecture = str(Path(architecture).resolve())
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "table-config.yaml"

    atomic_write_text(cfg_path, dump(cfg))
    spec = table_spec(cfg_path, [cfg.seed + i for i in range(seeds)], variants, architecture, labels, searched)
    res = run_compare(spec, out, progress=progress, ray=ray, address=address)
    rows = []
    for r in res["summary"]:  # every finished run recorded its cost (run_compare counts older runs' first)
        v = r["variant"]
        row = {"variant": v, "model": labels[v], "n": r["n"], "seeds": r["seeds"],
               "params_M": round(float(r.get("params_M_mean", float("nan"))), 4),
               "madds_G": round(float(r.get("madds_G_mean", float("nan"))), 4)}
        for t in cfg.data.tasks:
            row[t], row[f"{t}_std"] = r[f"{t}_mean"], r[f"{t}_std"]
        row["delta_m"], row["delta_m_std"] = r["delta_m_mean"], r["delta_m_std"]
        rows.append(row)
    if not any(r["variant"] == "single_task" for r in rows):
        return {"csv": None, "markdown": None, "rows": [], "errors": res["errors"]}
    directions = json.loads(next(out.glob("single_task/seed*/metrics.json")).read_text())["directions"]
    return {**write_table(out, rows, list(cfg.data.tasks), directions), "errors": res["errors"]}


def write_table(out: Path, rows: list[dict], tasks: list[str], directions: dict[str, str]) -> dict:
    import pandas as pd

    df = pd.DataFrame(rows)
    csv_path = out / "table.csv"
    atomic_write_text(csv_path, df.to_csv(index=False))
    heads = []
    for t in tasks:
        arrow = "↑" if directions[t] == "higher" else "↓"
        heads.append(f"{t} {TASKS.get(t).metric} {arrow}")
    lines = ["| Model | seeds | Params (M) | MAdds (G) | " + " | ".join(heads) + " | Δm (%) ↑ |",
             "|---" * (5 + len(tasks)) + "|"]
    for r in rows:
        vals = " | ".join(format_mean_std(r[t], r[f"{t}_std"], 4 if abs(r[t]) < 10 else 2, r["n"]) for t in tasks)
        lines.append(f"| {r['model']} | {r['n']} | {r['params_M']:.3f} | {r['madds_G']:.3f} | {vals} | "
                     f"{format_mean_std(r['delta_m'], r['delta_m_std'], 2, r['n'])} |")
    lines.append("\nΔm against the single-task baseline's mean over the same seeds; ± is the sample standard "
                 "deviation over seeds.")
    md_path = out / "table.md"
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    tex = df.to_latex(index=False, float_format=lambda x: f"{x:.4f}", na_rep="--")
    atomic_write_text(out / "table.tex", tex)
    atomic_write_text(out / "table.json", json.dumps(json_safe(rows), indent=2, allow_nan=False))
    delta_m_bars(df, out)
    return {"csv": str(csv_path), "markdown": str(md_path), "rows": rows}
