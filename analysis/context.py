"""Context figures: source-task importance heatmap (ATRC Fig. 6), chosen-context heatmap, context-type
proportions over search runs (Fig. 7) and search reliability with its correlation to importance."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from trcnas.analysis.agreement import fleiss_kappa
from trcnas.analysis.loaders import pair_choices, read_architecture
from trcnas.analysis.style import (
    annotation,
    context_colour,
    context_label,
    context_order,
    no_data,
    plt,
    save,
    task_label,
)


def importance_matrix(imp: pd.DataFrame, tasks: list[str], column: str = "drop_delta_m_mean") -> pd.DataFrame:
    """target x source matrix of mean drops (NaN where a pair has no block; an mTEB network's directional
    features of one pair at several scales are summed)."""
    m = pd.DataFrame(np.nan, index=tasks, columns=tasks)
    for (t, s), v in imp.groupby(["target", "source"], sort=False)[column].sum().items():
        m.loc[t, s] = v
    return m


def importance_heatmap(imp: pd.DataFrame | None, tasks: list[str], out: Path) -> pd.DataFrame | None:
    fig, ax = plt.subplots(figsize=(1.3 * len(tasks) + 2, 1.1 * len(tasks) + 1.5))
    if imp is None or imp.empty:
        no_data(ax, "importance.csv (run `trcnas importance`)")
        save(fig, out, "importance_heatmap")
        return None
    m = importance_matrix(imp, tasks)
    import seaborn as sns

    sns.heatmap(m, annot=m.map(annotation).to_numpy(), fmt="", cmap="rocket_r", ax=ax,
                cbar_kws={"label": "mean drop in Δm (% points)"},
                xticklabels=[task_label(t) for t in tasks], yticklabels=[task_label(t) for t in tasks])
    ax.set_xlabel("source task")
    ax.set_ylabel("target task")
    ax.set_title("Source-task importance (permutation)")
    save(fig, out, "importance_heatmap")
    return m


def choice_matrix(arch: dict) -> pd.DataFrame:
    tasks = arch["tasks"]
    m = pd.DataFrame("", index=tasks, columns=tasks)
    for (t, s), c in pair_choices(arch).items():
        m.loc[t, s] = c
    return m


def chosen_context_heatmap(arch: dict | None, out: Path) -> pd.DataFrame | None:
    if arch is None:
        fig, ax = plt.subplots(figsize=(5, 4))
        no_data(ax, "architecture.yaml")
        save(fig, out, "chosen_context")
        return None
    m = choice_matrix(arch)
    tasks = list(m.index)
    order = context_order(m.to_numpy().ravel())
    codes = m.apply(lambda col: col.map(order.index)).to_numpy(float)
    from matplotlib.colors import ListedColormap

    fig, ax = plt.subplots(figsize=(1.3 * len(tasks) + 2, 1.1 * len(tasks) + 1.5))
    ax.imshow(codes, cmap=ListedColormap([context_colour(c) for c in order]), vmin=-0.5, vmax=len(order) - 0.5)
    for i, t in enumerate(tasks):
        for j, s in enumerate(tasks):
            ax.text(j, i, context_label(m.loc[t, s]), ha="center", va="center", color="white", fontsize=10)
    ax.set_xticks(range(len(tasks)), [task_label(t) for t in tasks])
    ax.set_yticks(range(len(tasks)), [task_label(t) for t in tasks])
    ax.set_xlabel("source task")
    ax.set_ylabel("target task")
    ax.set_title("Chosen context per task pair")
    save(fig, out, "chosen_context")
    return m


def proportions(archs: list[dict]) -> pd.DataFrame:
    """Share (%) of each context type per target task over all runs."""
    rows = []
    for a in archs:
        for (t, _), c in pair_choices(a).items():
            rows.append({"target": t, "context": c})
    df = pd.DataFrame(rows)
    tab = pd.crosstab(df["target"], df["context"], normalize="index") * 100
    return tab.reindex(columns=[c for c in context_order(tab.columns) if c in tab.columns], fill_value=0.0)


def proportions_figure(archs: list[dict], out: Path) -> pd.DataFrame | None:
    fig, ax = plt.subplots(figsize=(7, 4))
    if not archs:
        no_data(ax, "search runs (architecture.yaml with alpha_history.csv)")
        save(fig, out, "context_proportions")
        return None
    tab = proportions(archs)
    bottom = np.zeros(len(tab))
    for c in tab.columns:
        ax.bar([task_label(t) for t in tab.index], tab[c], bottom=bottom, color=context_colour(c),
               label=context_label(c))
        bottom += tab[c].to_numpy()
    ax.set_ylabel("share of source connections (%)")
    ax.set_xlabel("target task")
    ax.set_title(f"Context types chosen over {len(archs)} search run(s)")
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left")
    save(fig, out, "context_proportions")
    return tab


def reliability(archs: list[dict]) -> pd.DataFrame:
    """Per pair: % of pairs of runs that chose the same context (percentage agreement)."""
    choices = [pair_choices(a) for a in archs]
    tasks = archs[0]["tasks"]
    pairs = [(t, s) for t in tasks for s in tasks if (t, s) in choices[0]]
    rows = []
    for p in pairs:
        agree = [choices[i][p] == choices[j][p] for i, j in combinations(range(len(choices)), 2)]
        majority = pd.Series([c[p] for c in choices]).value_counts()
        rows.append({"target": p[0], "source": p[1], "agreement": 100.0 * float(np.mean(agree)),
                     "majority": majority.index[0], "majority_share": 100.0 * majority.iloc[0] / len(choices)})
    return pd.DataFrame(rows)


def reliability_figure(archs: list[dict], imp: pd.DataFrame | None, out: Path) -> dict | None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if len(archs) < 2:
        no_data(axes[0], "at least two search runs")
        no_data(axes[1], "reliability vs importance")
        save(fig, out, "search_reliability")
        return None
    rel = reliability(archs)
    tasks = list(dict.fromkeys(rel["target"]))
    m = pd.DataFrame(np.nan, index=tasks, columns=tasks)
    for _, r in rel.iterrows():
        m.loc[r["target"], r["source"]] = r["agreement"]
    import seaborn as sns

    sns.heatmap(m, annot=True, fmt=".0f", vmin=0, vmax=100, cmap="mako", ax=axes[0],
                cbar_kws={"label": "agreement between runs (%)"},
                xticklabels=[task_label(t) for t in tasks], yticklabels=[task_label(t) for t in tasks])
    axes[0].set_xlabel("source task")
    axes[0].set_ylabel("target task")
    kappa = fleiss_kappa([a["choices"] for a in archs])
    axes[0].set_title(f"Search reliability over {len(archs)} runs (mean {rel['agreement'].mean():.1f} %, "
                      f"chance {100.0 * kappa['chance']:.1f} %"
                      + (f", κ {kappa['kappa']:.2f})" if kappa["kappa"] is not None else ")"), fontsize=10)
    result = {"runs": len(archs), "mean_agreement": float(rel["agreement"].mean()), "chance_agreement":
              100.0 * kappa["chance"], "fleiss_kappa": kappa["kappa"], "pearson_r": None, "p": None,
              "spearman_rho": None, "spearman_p": None, "n_pairs": 0, "top_k": []}
    if imp is not None and not imp.empty:
        merged = rel.merge(imp, on=["target", "source"])
        result.update(importance_agreement(merged, len(archs)))
        axes[1].scatter(merged["drop_delta_m_mean"], merged["agreement"], color="#4C72B0")
        for r in result["top_k"]:
            axes[1].annotate(f"{task_label(r['target'])} ← {task_label(r['source'])}",
                             (r["importance"], r["agreement"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        axes[1].set_xlabel("importance: mean drop in Δm (% points)")
        axes[1].set_ylabel("agreement (%)")
        if result["pearson_r"] is not None:
            axes[1].set_title(f"Pearson r = {result['pearson_r']:.2f} (p = {result['p']:.2g}), Spearman ρ = "
                              f"{result['spearman_rho']:.2f} (p = {result['spearman_p']:.2g}), "
                              f"{result['n_pairs']} pairs", fontsize=9)
        else:
            axes[1].set_title("correlation undefined (constant values)")
    else:
        no_data(axes[1], "importance.csv for the correlation")
    save(fig, out, "search_reliability")
    result["table"] = rel
    return result


def importance_agreement(merged: pd.DataFrame, runs: int, k: int = 3) -> dict:
    """The paper's reliability analysis over the pairs that have both an agreement and an importance: Pearson
    and Spearman correlation (with p values and the number of pairs) and the ``k`` most important
    connections with how many runs chose the majority context for each (the paper: the top 3 identical in
    5 of 5 runs)."""
    out: dict = {"n_pairs": int(len(merged)), "top_k": []}
    top = merged.sort_values("drop_delta_m_mean", ascending=False).head(k)
    for _, r in top.iterrows():
        identical = int(round(r["majority_share"] * runs / 100))
        out["top_k"].append({"target": r["target"], "source": r["source"],
                             "importance": float(r["drop_delta_m_mean"]), "agreement": float(r["agreement"]),
                             "majority": r["majority"], "identical_runs": identical, "runs": runs})
    if len(merged) > 2 and merged["agreement"].nunique() > 1 and merged["drop_delta_m_mean"].nunique() > 1:
        r, p = stats.pearsonr(merged["drop_delta_m_mean"], merged["agreement"])
        rho, sp = stats.spearmanr(merged["drop_delta_m_mean"], merged["agreement"])
        out.update(pearson_r=float(r), p=float(p), spearman_rho=float(rho), spearman_p=float(sp))
    return out


def load_archs(dirs: list[Path]) -> list[dict]:
    return [read_architecture(d / "architecture.yaml") for d in dirs]
