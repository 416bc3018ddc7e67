"""Search figures: per-decision probability trajectories with freeze events, the tau and entropy-weight
schedules, and Delta_m of the argmax subgraph at the end of search against after retraining (ATRC Fig. 4)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from trcnas.analysis.style import context_colour, context_label, decision_label, no_data, plt, save


def alpha_trajectories(history: pd.DataFrame | None, events: pd.DataFrame | None, out: Path) -> bool:
    if history is None or history.empty:
        fig, ax = plt.subplots(figsize=(6, 4))
        no_data(ax, "alpha_history.csv")
        save(fig, out, "alpha_trajectories")
        return False
    decisions = list(dict.fromkeys(c.split(":")[0] for c in history.columns if ":" in c))
    ncol = min(4, len(decisions))
    nrow = math.ceil(len(decisions) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.4 * nrow), sharex=True, sharey=True, squeeze=False)
    frozen = {} if events is None or events.empty else dict(zip(events["decision"], events["step"]))
    for ax, d in zip(axes.flat, decisions):
        for col in [c for c in history.columns if c.startswith(f"{d}:")]:
            cand = col.split(":", 1)[1]
            ax.plot(history["step"], history[col], color=context_colour(cand, None), label=context_label(cand))
        if d in frozen:
            ax.axvline(frozen[d], color="black", ls="--", lw=1)
        ax.set_title(decision_label(d), fontsize=9)
        ax.set_ylim(0, 1)
    for ax in list(axes.flat)[len(decisions):]:
        ax.set_axis_off()
    legends = {tuple(ax.get_legend_handles_labels()[1]) for ax in list(axes.flat)[: len(decisions)]}
    if len(legends) == 1:  # one candidate set (ATRC): one legend for the figure
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncol=len(labels), bbox_to_anchor=(0.5, 1.02))
    else:  # decisions with their own candidates (CompositeTasking, mTEB): a legend per panel
        for ax in list(axes.flat)[: len(decisions)]:
            ax.legend(fontsize=7, loc="best")
    fig.supxlabel("search step (dashed: frozen)")
    fig.supylabel("softmax(α)")
    save(fig, out, "alpha_trajectories")
    return True


def schedules(history: pd.DataFrame | None, out: Path) -> bool:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if history is None or "tau" not in history:
        no_data(ax, "alpha_history.csv")
        save(fig, out, "schedules")
        return False
    ax.plot(history["step"], history["tau"], color="#4C72B0", label="temperature τ")
    ax.set_xlabel("search step")
    ax.set_ylabel("τ")
    ax2 = ax.twinx()
    ax2.plot(history["step"], history["entropy_weight"], color="#C44E52", label="entropy weight")
    ax2.axhline(0, color="#C44E52", lw=0.5, ls=":")
    ax2.set_ylabel("entropy-regulariser weight")
    lines = ax.get_lines() + ax2.get_lines()[:1]
    ax.legend(lines, [ln.get_label() for ln in lines], loc="upper center")
    ax.set_title("Search schedules")
    save(fig, out, "schedules")
    return True


def search_vs_retrain(pairs: list[dict], out: Path) -> pd.DataFrame | None:
    """``pairs``: [{"run", "search_delta_m", "retrain_delta_m"}]."""
    fig, ax = plt.subplots(figsize=(5, 4))
    df = pd.DataFrame(pairs)
    if df.empty or df[["search_delta_m", "retrain_delta_m"]].isna().any(axis=None):
        no_data(ax, "Δm of a search and its retraining (set `baselines`)")
        save(fig, out, "search_vs_retrain")
        return None
    ax.scatter(df["search_delta_m"], df["retrain_delta_m"], color="#4C72B0")
    lo = min(df["search_delta_m"].min(), df["retrain_delta_m"].min())
    hi = max(df["search_delta_m"].max(), df["retrain_delta_m"].max())
    ax.plot([lo, hi], [lo, hi], color="#999999", ls="--", lw=1)
    ax.set_xlabel("Δm of the argmax subgraph at the end of search (%)")
    ax.set_ylabel("Δm after retraining (%)")
    ax.set_title("Search vs retrain")
    save(fig, out, "search_vs_retrain")
    return df
