"""``trcnas report DIR``: every figure and table that the result files under DIR allow, into DIR/figures/.
Nothing is recomputed; a figure whose data is missing says so."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from trcnas.analysis import context, decisions, resources, search_plots, studies, style
from trcnas.analysis.loaders import (
    first,
    is_retrain,
    pair_group,
    pair_rows,
    read_architecture,
    read_csv,
    read_importance,
    read_json,
    search_runs,
)
from trcnas.analysis.planted import (
    classes,
    decisions_vs_merit,
    merits,
    plot_recovery,
    plot_trajectories_vs_merit,
    proof_of,
    recovery,
    score_of,
)
from trcnas.analysis.report_md import chosen_types, report_markdown
from trcnas.spaces.errors import UserError
from trcnas.spaces.io import atomic_write_text


def make_report(root: str | Path, out: str | Path | None = None, importance: list[str | Path] | None = None,
                proof: str | Path | None = None, outputs: dict | None = None) -> dict:
    """Figures and tables into ``out`` (default ROOT/figures). Search runs of several spaces in one folder
    (e.g. an hpo folder with ATRC and CompositeTasking studies) get their decision figures per space, in
    ``out/<space>/``; everything else is drawn once. ``importance``: importance.csv files or folders to use
    instead of those under ROOT (averaged over the fitted models when several). ``proof``: the output folder of
    the planting proof of the searched matrix (``trcnas compare relations-proof``): the first search's decisions
    beside each candidate's measured merit (``trajectories_vs_merit``, ``decisions_vs_merit``). ``report.md`` opens
the folder (:mod:`trcnas.analysis.report_md`); ``outputs`` (name -> path) is listed at its end."""
    root = Path(root)
    out = Path(out) if out else root / "figures"
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"figures": str(out)}
    style.NOT_DRAWN.clear()

    runs = []
    groups: dict[str, list[Path]] = {}
    for r in search_runs(root):
        a = _readable_architecture(r / "architecture.yaml")
        if a is not None:
            runs.append(r)
            groups.setdefault(str(a.get("space")), []).append(r)
    chosen_files, chosen_paths = {}, {}
    for p in sorted(root.rglob("architecture.yaml")):
        a = _readable_architecture(p)
        if a is not None and str(a.get("space")) not in chosen_files:
            chosen_files[str(a.get("space"))], chosen_paths[str(a.get("space"))] = a, p
    first_space = next(iter(groups), next(iter(chosen_files), None))
    chosen, chosen_path = chosen_files.get(first_space), chosen_paths.get(first_space)
    archs = context.load_archs(groups.get(first_space, []))
    imp, summary["importance_models"] = read_importance(root, importance)
    tasks = chosen["tasks"] if chosen else (archs[0]["tasks"] if archs else [])

    m = context.importance_heatmap(imp, tasks, out)
    if m is not None:
        resources.write_tables(m.reset_index(names="target"), out, "importance_matrix", "%.3f")
        summary["importance_matrix"] = m.round(4).to_dict()
    if len(groups) > 1:
        summary["spaces"] = {space: _decision_figures(context.load_archs(dirs), dirs, chosen_files.get(space), imp,
                                                      out / space) for space, dirs in groups.items()}
    else:
        summary.update(_decision_figures(archs, groups.get(first_space, []), chosen, imp, out))
    summary["search_runs"] = len(runs)
    if chosen is not None and (types := chosen_types(pair_rows(chosen))):
        summary["chosen_types"] = types
        summary["architecture"] = str(chosen_path)
    recovered = _recovery(root, runs, chosen, out)
    if recovered:
        summary["recovery"] = recovered
    if proof is not None:
        summary["merit"] = _merit(proof, runs, out)
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
        summary["study"] = studies.study_figures(
            read_csv(trials_path), read_csv(d / "param_importances.csv"), read_csv(d / "pareto.csv"), out,
            maximize=(meta.get("directions") or ["maximize"])[0] == "maximize")
    else:
        summary["study"] = studies.study_figures(None, None, None, out)
    summary["not_drawn"] = dict(style.NOT_DRAWN)  # figure -> what it needs (more runs, a study, ...)
    summary["files"] = sorted({*(p.name for p in out.iterdir() if not p.name.startswith(".")), "report.md"})
    atomic_write_text(out / "report.md", report_markdown(root, out, summary, outputs))
    atomic_write_text(out / "report.json", json.dumps(json_safe(summary), indent=2, default=str, allow_nan=False))
    return summary


def _recovery(root: Path, runs: list[Path], chosen: dict | None, out: Path) -> dict | None:
    """On the planted-relations benchmark: the chosen architecture's pairs against the planted matrix (figure
    ``planted_vs_chosen``), and every search run's count."""
    sources = [*runs, *(p.parent for p in sorted(root.rglob("config.yaml")))]
    scored = next((m for r in sources if (m := score_of(r))), None)
    rows = pair_rows(chosen) if chosen is not None else None
    if scored is None or rows is None:
        return None
    planted, same = scored
    score = plot_recovery(planted, rows, out, same)
    per_run = {}
    for r in runs:
        a = _readable_architecture(r / "architecture.yaml")
        m = score_of(r)
        if a and m and (run_rows := pair_rows(a)) is not None:
            per_run[str(r.relative_to(root)) if r != root else "."] = recovery(run_rows, *m)["recovered"]
    return {**score, "planted": planted, "chosen": rows, "per_search_run": per_run,
            "also_right": {f"{t}<-{s}": sorted(v) for (t, s), v in same.items() if v}}


def _merit(proof: str | Path, runs: list[Path], out: Path) -> dict:
    """The first relations search's decisions against the candidates' merit measured by the proof in ``proof``
    (which must have planted the same matrix)."""
    rows = proof_of(proof)
    first_run, scored = next(((r, m) for r in runs if (m := score_of(r))), (None, None))
    if rows.empty or first_run is None:
        raise UserError(f"report --proof {proof}: " + ("no planted-pairs proof there (the output of `trcnas compare "
                        "relations-proof`)" if rows.empty else "no search on the relations dataset to compare with it"))
    planted = scored[0]
    for _, r in rows.drop_duplicates(["target", "source"]).iterrows():
        if planted.get(r["target"], {}).get(r["source"]) != r["planted"]:
            raise UserError(f"report --proof {proof}: the proof planted {r['planted']} on {r['target']} <- "
                            f"{r['source']}, the search {first_run} planted "
                            f"{planted.get(r['target'], {}).get(r['source'])}; give the proof of the same matrix")
    history, events = read_csv(first_run / "alpha_history.csv"), read_csv(first_run / "freeze_events.csv")
    merit = merits(rows)
    table = decisions_vs_merit(history, events, pair_rows(read_architecture(first_run / "architecture.yaml")),
                               planted, merit, classes(rows))
    resources.write_tables(table, out, "decisions_vs_merit", "%.2f")
    if history is not None and not history.empty:
        plot_trajectories_vs_merit(history, events, merit, planted, out)
    wrong = table[~table["right"]]
    return {"run": str(first_run), "right": int(table["right"].sum()), "pairs": len(table),
            "wrong": [f"{r.target}<-{r.source}: {r.chosen} (planted {r.planted}; merit rank {r.chosen_rank}, "
                      f"{r.merit_gap:.2f} below the best {r.best_by_merit}; led from step {r.chosen_leads_from:.0f})"
                      for r in wrong.itertuples()]}


def _readable_architecture(path: Path) -> dict | None:
    """An architecture file's mapping, or None for a file that is not one (skipped, not a crash)."""
    try:
        a = read_architecture(path)
    except (OSError, yaml.YAMLError):
        return None
    return a if isinstance(a, dict) and isinstance(a.get("choices"), dict) else None


def json_safe(value):
    """NaN and infinities as null (JSON has no NaN: ``report.json`` must parse with any reader)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        return json_safe(value.item())
    return value


def _decision_figures(archs: list[dict], runs: list[Path], chosen: dict | None, imp, out: Path) -> dict:
    """The figures of one space's searches: chosen decisions, their shares over runs, search reliability,
    and the first run's alpha trajectories and schedules."""
    summary: dict = {}
    ref = chosen or (archs[0] if archs else None)
    pairwise = ref is None or pair_group(ref) is not None
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
    hist = read_csv(runs[0] / "alpha_history.csv") if runs else None
    events = read_csv(runs[0] / "freeze_events.csv") if runs else None
    search_plots.alpha_trajectories(hist, events, out)
    search_plots.schedules(hist, out)
    summary["search_runs_of_space"] = len(runs)
    return summary


def _search_retrain_pairs(root: Path, runs: list[Path]) -> list[dict]:
    """A search's metrics.json next to a retrain of its architecture (``retrain/metrics.json`` in the same
    pipeline directory, or the retrain whose architecture equals the search's)."""
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
