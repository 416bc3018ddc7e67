"""``trcnas run``: search (Ray Tune trials) -> export the best architecture -> retrain -> evaluate ->
permutation importance -> report figures."""

from __future__ import annotations

import time
from pathlib import Path

from trcnas.analysis.report import make_report
from trcnas.analysis.report_md import not_drawn_line
from trcnas.nas.engine.importance import NothingToPermute, permutation_importance
from trcnas.nas.engine.train import train_run
from trcnas.nas.schema import ConfigBase, updated
from trcnas.nas.tasks import TASKS
from trcnas.runners.export import export
from trcnas.runners.tune_search import run_tune_search


def run_pipeline(cfg: ConfigBase, out: str | Path, address: str | None = None, num_samples: int | None = None,
                 progress: bool = True) -> dict:
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cfg = updated(cfg, {"ray.storage_path": str(out)})
    exp = run_tune_search(cfg, "search", address=address, num_samples=num_samples or cfg.ray.num_samples,
                          verbose=1 if progress else 0)
    t_search = time.perf_counter() - t0
    metric = cfg.ray.metric if cfg.baselines else f"val/{cfg.data.tasks[0]}"
    first = TASKS.get(cfg.data.tasks[0])
    mode = cfg.ray.mode if cfg.baselines else ("max" if first.higher_is_better else "min")
    arch_path = out / "architecture.yaml"
    export(exp, arch_path, metric=metric, mode=mode)
    t1 = time.perf_counter()
    summary = train_run(cfg, out / "retrain", architecture=str(arch_path), progress=progress)
    t2 = time.perf_counter()
    try:
        permutation_importance(out / "retrain", cfg.report.importance_repeats, cfg.seed,
                               progress=progress, out=out / "retrain")
    except NothingToPermute:  # CompositeTasking: the report draws the rest
        pass
    t3 = time.perf_counter()
    outputs = {
        "experiment": exp, "summary": exp / "summary.csv", "architecture": arch_path,
        "retrain": out / "retrain", "metrics": out / "retrain" / "metrics.json",
        "importance": out / "retrain" / "importance.csv", "figures": out / "figures",
        "report": out / "figures" / "report.md",
    }
    report = make_report(out, outputs=outputs)
    wall = {"search": t_search, "retrain": t2 - t1, "importance": t3 - t2, "total": time.perf_counter() - t0}
    return {"outputs": outputs, "metrics": summary, "wall_s": wall, "selected_by": f"{metric} ({mode})",
            "not_drawn": not_drawn_line(report), "recovery": report.get("recovery")}
