"""``trcnas table``: the ATRC paper's Table 1 by command — single-task and multi-task baselines, every
fixed context type, and the searched ATRC architecture, each trained with the same settings, with params,
MAdds and Delta_m against the single-task baseline, written as CSV and Markdown."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from nas.engine.search import ARCHITECTURE, search_run
from nas.engine.summary import model_summary
from nas.engine.train import train_run
from nas.metrics import delta_m
from nas.models import build_model
from nas.tasks import DatasetInfo, build_tasks
from spaces import fixed_architecture, load_architecture, load_space
from spaces.io import atomic_write_text

VARIANTS = ("single_task", "multitask", "global", "local", "tlabel", "slabel", "atrc")
LABELS = {"single_task": "Single-task baseline", "multitask": "Multi-task baseline", "global": "Global context",
          "local": "Local context", "tlabel": "T-label context", "slabel": "S-label context", "atrc": "ATRC (searched)"}


def _resources(cfg: dict, info: DatasetInfo, arch) -> tuple[float, float]:
    tasks = build_tasks(cfg["data"]["tasks"], info)
    model = build_model(cfg, tasks, kind="atrc" if arch else None, architecture=arch)
    s = model_summary(model, tuple(cfg["data"]["crop"] or cfg["data"]["image_size"]))
    return s["params_M"], s["madds_G"]


def run_table(cfg: dict, out: str | Path, architecture: str | None = None, variants=None,
              progress: bool = True) -> dict:
    out = Path(out)
    variants = list(variants or VARIANTS)
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        from nas.errors import UserError

        raise UserError(f"unknown table variant(s) {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    if "single_task" not in variants:
        variants.insert(0, "single_task")
    space = load_space(cfg["search"]["space"])
    tasks = list(cfg["data"]["tasks"])
    results = {}
    for v in variants:
        run_dir = out / v
        vcfg = copy.deepcopy(cfg)
        vcfg["name"] = f"{cfg['name']}-{v}"
        arch_path = None
        if v in ("single_task", "multitask"):
            vcfg["model"]["type"] = v
        elif v == "atrc":
            if architecture:
                arch_path = architecture
            else:
                search_run(vcfg, out / "search", progress=progress)
                arch_path = str(out / "search" / ARCHITECTURE)
        else:
            arch_path = str(fixed_architecture(space, tasks, v).save(out / "architectures" / f"{v}.yaml"))
        summary = train_run(vcfg, run_dir, architecture=arch_path, progress=progress)
        results[v] = (summary, arch_path, vcfg)
    info = _info_for(cfg)
    base = results["single_task"][0]["primary"]
    rows = []
    for v, (summary, arch_path, vcfg) in results.items():
        arch = load_architecture(arch_path) if arch_path else None
        params, madds = _resources(vcfg, info, arch)
        higher = {t: d == "higher" for t, d in summary["directions"].items()}
        row = {"variant": v, "model": LABELS[v], "params_M": round(params, 4), "madds_G": round(madds, 4)}
        row.update({t: summary["primary"][t] for t in tasks})
        row["delta_m"] = delta_m(summary["primary"], base, higher)
        rows.append(row)
    return write_table(out, rows, tasks, results["single_task"][0]["directions"])


def _info_for(cfg: dict) -> DatasetInfo:
    """Label-space sizes for counting resources (the runs have built the dataset already)."""
    from nas.data import build_dataset

    _, info = build_dataset(cfg["data"], "val", train=False, progress=False)
    return info


def write_table(out: Path, rows: list[dict], tasks: list[str], directions: dict[str, str]) -> dict:
    import pandas as pd

    from nas.tasks import TASKS

    df = pd.DataFrame(rows)
    csv_path = out / "table.csv"
    atomic_write_text(csv_path, df.to_csv(index=False))
    heads = []
    for t in tasks:
        task_cls = TASKS.get(t)
        arrow = "↑" if directions[t] == "higher" else "↓"
        heads.append(f"{t} {task_cls.metric} {arrow}")
    lines = ["| Model | Params (M) | MAdds (G) | " + " | ".join(heads) + " | Δm (%) ↑ |",
             "|---" * (4 + len(tasks)) + "|"]
    for r in rows:
        vals = " | ".join(f"{r[t]:.4f}" if r[t] < 10 else f"{r[t]:.2f}" for t in tasks)
        lines.append(f"| {r['model']} | {r['params_M']:.3f} | {r['madds_G']:.3f} | {vals} | {r['delta_m']:+.2f} |")
    md_path = out / "table.md"
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    atomic_write_text(out / "table.json", json.dumps(rows, indent=2))
    return {"csv": str(csv_path), "markdown": str(md_path), "rows": rows}
