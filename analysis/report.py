"""``trcnas report DIR``: every figure and table that the result files under DIR allow, into DIR/figures/.
Nothing is recomputed; a figure whose data is missing says so."""

from __future__ import annotations

import json
from pathlib import Path

from analysis import context, decisions, resources, search_plots, studies
from analysis.loaders import first, read_architecture, read_csv, read_json, search_runs
from spaces.io import atomic_write_text


def make_report(root: str | Path, out: str | Path | None = None) -> dict:
    root = Path(root)
    out = Path(out) if out else root / "figures"
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"figures": str(out)}

    runs = search_runs(root)
    archs = context.load_archs(runs)
    imp_path = first(root, "importance.csv")
    imp = read_csv(imp_path) if imp_path else None
    chosen_path = first(root, "architecture.yaml")
    chosen = read_architecture(chosen_path) if chosen_path else None
    tasks = chosen["tasks"] if chosen else (archs[0]["tasks"] if archs else [])

    m = context.importance_heatmap(imp, tasks, out)
    if m is not None:
        resources.write_tables(m.reset_index(names="target"), out, "importance_matrix", "%.3f")
        summary["importance_matrix"] = m.round(4).to_dict()
    ref = chosen or (archs[0] if archs else None)
    pairwise = ref is None or "atrc" in ref["choices"]
    if pairwise:  # per task pair (ATRC): heatmaps over target x source
        c = context.chosen_context_heatmap(chosen, out)
        if c is not None:
            resources.write_tables(c.reset_index(names="target"), out, "chosen_context", "%s")
        tab = context.proportions_figure(archs, out)
        if tab is not None:
            resources.write_tables(tab.reset_index(), out, "context_proportions", "%.1f")
        rel = context.reliability_figure(archs, imp, out)
    else:  # named decisions (CompositeTasking, mTEB)
        c = decisions.chosen_table(chosen, out)
        if c is not None:
            resources.write_tables(c, out, "chosen_decisions", "%s")
        tab = decisions.shares_figure(archs, out)
        if tab is not None:
            resources.write_tables(tab, out, "decision_proportions", "%.1f")
        rel = decisions.agreement_figure(archs, out)
    if rel is not None:
        resources.write_tables(rel.pop("table"), out, "search_reliability" if pairwise else "decision_reliability",
                               "%.1f")
        summary["reliability"] = rel
    summary["search_runs"] = len(runs)

    hist_dir = runs[0] if runs else None
    hist = read_csv(hist_dir / "alpha_history.csv") if hist_dir else None
    events = read_csv(hist_dir / "freeze_events.csv") if hist_dir else None
    search_plots.alpha_trajectories(hist, events, out)
    search_plots.schedules(hist, out)
    search_plots.search_vs_retrain(_search_retrain_pairs(root, runs), out)

    table_path = root / "table.csv" if (root / "table.csv").exists() else first(root, "table.csv")
    table = read_csv(table_path) if table_path else None
    resources.resources_figure(table, out)
    if table is not None:
        resources.write_tables(table, out, "comparison", "%.4f")

    trials_path = first(root, "trials.csv")
    if trials_path:
        d = trials_path.parent
        meta = read_json(d / "study.json") or {}
        studies.study_figures(read_csv(trials_path), read_csv(d / "param_importances.csv"), read_csv(d / "pareto.csv"),
                              out, maximize=(meta.get("directions") or ["maximize"])[0] == "maximize")
    else:
        studies.study_figures(None, None, None, out)
    summary["files"] = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    atomic_write_text(out / "report.json", json.dumps(summary, indent=2, default=str))
    return summary


def _search_retrain_pairs(root: Path, runs: list[Path]) -> list[dict]:
    """A search's metrics.json next to a retrain of its architecture (``retrain/metrics.json`` in the same
    pipeline directory, or the retrain whose architecture equals the search's)."""
    def is_retrain(p: Path) -> bool:  # a trained fixed architecture (searches write "<space>_search")
        m = read_json(p) or {}
        return bool(m.get("architecture")) and not str(m.get("model", "")).endswith("_search")

    retrains = [p.parent for p in root.rglob("metrics.json") if is_retrain(p)]
    pairs = []
    for r in runs:
        sm = read_json(r / "metrics.json")
        if not sm:
            continue
        choices = read_architecture(r / "architecture.yaml")["choices"]
        for rt in retrains:
            rm = read_json(rt / "metrics.json")
            if rm and rm.get("architecture") and rm["architecture"]["choices"] == choices:
                pairs.append({"run": str(r), "search_delta_m": sm.get("delta_m"),
                              "retrain_delta_m": rm.get("delta_m")})
                break
    return pairs
