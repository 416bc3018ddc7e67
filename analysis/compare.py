"""Tables of a multi-seed comparison (``trcnas compare``): one row per finished run, and mean ± std (sample
standard deviation, n - 1) per variant of every task metric and Δm, with the networks' params and MAdds (as
each run recorded them at its training size). Reads only result files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from trcnas.analysis.loaders import pair_rows
from trcnas.analysis.planted import pair_classes, recovery, score_of, write_proof
from trcnas.analysis.style import no_data, plt, save
from trcnas.nas.curves import LOSS_RISE, loss_rise
from trcnas.nas.metrics import delta_m
from trcnas.spaces.io import atomic_write_text

COST = ("params_M", "madds_G")  # recorded by every finished train/retrain run (older runs: missing, n/a)


def final_dir(variant: dict, run_dir: Path) -> Path:
    """The folder holding a run's final metrics: a searched variant's retrain (its search with
    ``retrain: false``), else the run folder itself."""
    if variant.get("architecture") != "search":
        return run_dir
    return run_dir / ("search" if variant.get("retrain") is False else "retrain")


def _choices(metrics: dict) -> str:
    """``decision=value; ...``, nested choices flattened with dots (ATRC: ``target.source=context``)."""
    def flat(d, prefix=""):
        for k, v in d.items():
            yield from flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}={v}"]

    arch = metrics.get("architecture") or {}
    return "; ".join(x for group in (arch.get("choices") or {}).values() for x in flat(group))


def collect_runs(out: Path, spec: dict, also_right: dict[str, dict | None] | None = None) -> pd.DataFrame:
    """One row per finished (variant, seed). ``also_right``: per variant, the score's classes of its config today
    (``data.also_right``), which score its searches in place of those stored with each run (classes change as the
    proof gains seeds; they change no run)."""
    rows = []
    for v in spec["variants"]:
        for s in spec["seeds"]:
            final = final_dir(v, out / v["name"] / f"seed{s}")
            f = final / "metrics.json"
            if not f.is_file():
                continue
            m = json.loads(f.read_text())
            row = {"variant": v["name"], "label": v.get("label", v["name"]), "seed": s,
                   **{t: m["primary"][t] for t in m["primary"]}, "delta_m": m.get("delta_m"),
                   "steps": m.get("steps"), "wall_s": m.get("wall_s"), "choices": _choices(m),
                   "params_M": m.get("params_M", float("nan")), "madds_G": m.get("madds_G", float("nan")),
                   "loss_rise": _loss_rise(m, final),
                   **_recovered(m, final, v, (also_right or {}).get(v["name"], ...))}
            rows.append(row)
    return pd.DataFrame(rows)


def _recovered(metrics: dict, final: Path, variant: dict, also_right=...) -> dict:
    """For a searched ATRC architecture on the relations dataset: how many pairs chose the planted type
    (``recovered`` of ``pairs``; the search's own config names the matrix, and the classes unless ``also_right``
    is given)."""
    choices = pair_rows(metrics.get("architecture") or {})
    scored = score_of(final.parent / "search") if variant.get("architecture") == "search" and choices else None
    if not scored:
        return {}
    if also_right is not ...:
        scored = (scored[0], pair_classes(scored[0], also_right))
    r = recovery(choices, *scored)
    return {"recovered": r["recovered"], "exact": r["exact"], "pairs": r["pairs"]}


def _loss_rise(metrics: dict, final: Path) -> float:
    """As the run recorded it; runs finished before runs recorded it: from their ``train_curve.csv``."""
    if "loss_rise" in metrics:
        return float(metrics["loss_rise"])
    curve = final / "train_curve.csv"
    return loss_rise(pd.read_csv(curve)["loss"]) if curve.is_file() else float("nan")


def rebase_delta_m(runs: pd.DataFrame, baseline: str, tasks: list[str], directions: dict[str, str]) -> dict:
    """Δm of every run against the ``baseline`` variant's per-task mean over its seeds (in place); returns
    that reference. Runs stay without Δm (NaN) until the baseline has a finished run."""
    base_runs = runs[runs["variant"] == baseline]
    if base_runs.empty:
        runs["delta_m"] = float("nan")
        return {}
    ref = {t: float(base_runs[t].astype(float).mean()) for t in tasks}
    higher = {t: directions[t] == "higher" for t in tasks}
    runs["delta_m"] = [delta_m({t: float(r[t]) for t in tasks}, ref, higher) for _, r in runs.iterrows()]
    return ref


def summarise(runs: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    cols = [*tasks, "delta_m", *(c for c in (*COST, "recovered") if c in runs)]
    rows = []
    for (variant, label), g in runs.groupby(["variant", "label"], sort=False):
        row = {"variant": variant, "label": label, "n": len(g), "seeds": " ".join(str(s) for s in g["seed"])}
        for c in cols:
            vals = g[c].astype(float).to_numpy()
            row[f"{c}_mean"] = float(np.mean(vals))
            row[f"{c}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def format_mean_std(mean: float, std: float, digits: int, n: int) -> str:
    """``mean ± std``; ``mean (1 seed)`` for one run; ``n/a`` for an undefined value."""
    if np.isnan(mean):
        return "n/a"
    if n == 1:
        return f"{mean:.{digits}f} (1 seed)"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown(summary: pd.DataFrame, tasks: list[str], directions: dict[str, str], metrics: dict[str, str]) -> str:
    heads = [f"{t} {metrics.get(t, '')} {'↑' if directions.get(t) == 'higher' else '↓'}" for t in tasks]
    lines = ["| Model | seeds | Params (M) | MAdds (G) | " + " | ".join(heads) + " | Δm (%) ↑ |",
             "|---" * (5 + len(tasks)) + "|"]
    for _, r in summary.iterrows():
        vals = [_cost(r, c) for c in COST]
        for t in tasks:
            digits = 4 if abs(r[f"{t}_mean"]) < 10 else 2
            vals.append(format_mean_std(r[f"{t}_mean"], r[f"{t}_std"], digits, r["n"]))
        dm = format_mean_std(r["delta_m_mean"], r["delta_m_std"], 2, r["n"])
        lines.append(f"| {r['label']} | {r['n']} | " + " | ".join(vals) + f" | {dm} |")
    return "\n".join(lines) + "\n"


def _cost(row, col: str) -> str:
    """The mean over seeds (a searched architecture may differ between seeds: then mean ± std)."""
    mean, std = float(row.get(f"{col}_mean", float("nan"))), float(row.get(f"{col}_std", float("nan")))
    if np.isnan(mean):
        return "n/a"
    return f"{mean:.3f}" if np.isnan(std) or std < 5e-4 else f"{mean:.3f} ± {std:.3f}"


def rising_note(runs: pd.DataFrame) -> str:
    """A line naming the runs whose training loss ended above ``LOSS_RISE`` times its best (their metrics are in
    the table; whether to keep such a seed is the reader's call, so the table does not drop it)."""
    rose = runs[runs["loss_rise"] > LOSS_RISE]
    if rose.empty:
        return ""
    names = ", ".join(f"{r['label']} seed {r['seed']} (x{r['loss_rise']:.3g})" for _, r in rose.iterrows())
    return (f"\nTraining loss at the end above {LOSS_RISE:g}x its best (mean of the last 10 % of logged steps "
            f"against the lowest such window; a late divergence?): {names}.\n")


def recovery_note(runs: pd.DataFrame) -> str:
    """Per searched variant on the planted-relations benchmark: pairs recovered per seed, mean ± std and the
    worst seed."""
    if "recovered" not in runs or runs["recovered"].isna().all():
        return ""
    lines = ["\nPlanted pairs recovered by the search (of the pairs per seed; a type the planting proof could not "
             "tell from the planted one counts as right, `data.also_right`; in brackets: the planted type itself):"]
    for (_, label), g in runs.dropna(subset=["recovered"]).groupby(["variant", "label"], sort=False):
        rec, pairs = g["recovered"].astype(int), int(g["pairs"].iloc[0])
        exact = g["exact"] if "exact" in g else pd.Series([float("nan")] * len(g), index=g.index)
        per = ", ".join(f"seed {s}: {r}" + (f" ({int(e)})" if e == e else "")
                        for s, r, e in zip(g["seed"], rec, exact))
        std = f" ± {rec.std(ddof=1):.2f}" if len(rec) > 1 else ""
        lines.append(f"- {label}: {rec.mean():.2f}{std} of {pairs} ({per}); worst seed {100 * rec.min() / pairs:.0f} %")
    return "\n".join(lines) + "\n"


def training_curves(out: Path, spec: dict, window: int = 10) -> pd.DataFrame:
    """The training loss of every finished run's final training (a searched variant: its retrain) per logged step:
    per variant, the mean over seeds of the raw loss (``loss_mean``) and of each seed's moving average over
    ``window`` logged steps (``smooth_mean``, ``smooth_min``, ``smooth_max``)."""
    frames = []
    for v in spec["variants"]:
        for s in spec["seeds"]:
            final = final_dir(v, out / v["name"] / f"seed{s}")
            f = final / "train_curve.csv"
            if not f.is_file() or not (final / "metrics.json").is_file():
                continue
            c = pd.read_csv(f)[["step", "loss"]]
            c["smooth"] = c["loss"].rolling(window, min_periods=1).mean()
            frames.append(c.assign(variant=v["name"], label=v.get("label", v["name"]), seed=s))
    if not frames:
        return pd.DataFrame()
    g = pd.concat(frames).groupby(["variant", "label", "step"], sort=False)
    curves = g["loss"].agg(loss_mean="mean", seeds="count").join(
        g["smooth"].agg(smooth_mean="mean", smooth_min="min", smooth_max="max"))
    return curves.reset_index()


def plot_training_curves(curves: pd.DataFrame, out: Path) -> None:
    """Smoothed training loss per variant (mean over seeds, band: the seeds' range), log scale. The losses of
    different model types are different sums (a single-task row adds its networks' losses), so the figure
    compares shapes (has the curve flattened at the budget?), not levels."""
    fig, ax = plt.subplots(figsize=(7, 4))
    if curves.empty:
        no_data(ax, "train_curve.csv")
    for (_, label), c in curves.groupby(["variant", "label"], sort=False):
        line = ax.plot(c["step"], c["smooth_mean"], label=f"{label} ({int(c['seeds'].max())} seeds)")[0]
        ax.fill_between(c["step"], c["smooth_min"], c["smooth_max"], color=line.get_color(), alpha=0.2, lw=0)
    if not curves.empty:
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("training loss (moving average)")
        ax.legend(fontsize=7)
    save(fig, out, "training_curves")


def write_comparison(out: str | Path, spec: dict | None = None, metric_names: dict[str, str] | None = None,
                     also_right: dict[str, dict | None] | None = None) -> dict:
    """Writes runs.csv, summary.csv and summary.md into ``out``; returns their paths and the summary rows.
    ``metric_names``: each task's primary metric, for the column heads; ``also_right``: see ``collect_runs``."""
    out = Path(out)
    if spec is None:
        spec = yaml.safe_load((out / "comparison.yaml").read_text())
    runs = collect_runs(out, spec, also_right)
    if runs.empty:
        return {"runs": 0, "summary": [], "files": []}
    first = next(p for v in spec["variants"] for s in spec["seeds"]
                 if (p := final_dir(v, out / v["name"] / f"seed{s}") / "metrics.json").is_file())
    m = json.loads(first.read_text())
    tasks = list(m["primary"])
    ref = rebase_delta_m(runs, spec["baseline"], tasks, m["directions"]) if spec.get("baseline") else None
    summary = summarise(runs, tasks)
    atomic_write_text(out / "runs.csv", runs.to_csv(index=False))
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    md = markdown(summary, tasks, m["directions"], metric_names or {})
    if ref is not None:
        label = next(v.get("label", v["name"]) for v in spec["variants"] if v["name"] == spec["baseline"])
        md += (f"\nΔm against {label} (mean over its seeds: "
               + ", ".join(f"{t} {v:.4g}" for t, v in ref.items()) + ").\n" if ref else
               f"\nΔm pending: {label} has no finished run yet.\n")
    else:
        md += "\nΔm against the config's fixed `baselines`.\n"
    md += rising_note(runs) + recovery_note(runs)
    atomic_write_text(out / "summary.md", md)
    curves = training_curves(out, spec)
    atomic_write_text(out / "training_curves.csv", curves.to_csv(index=False))
    plot_training_curves(curves, out)

    proof = write_proof(out, spec)
    return {"runs": len(runs), "summary": summary.to_dict("records"), "baseline": ref,
            "files": [str(out / n) for n in ("runs.csv", "summary.csv", "summary.md", "training_curves.csv",
                                             "training_curves.png")] + proof}
