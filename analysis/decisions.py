"""Figures for search spaces that are not per-task-pair (CompositeTasking's embedding size, mTEB placement and
fusion): the chosen value of each decision, the share of each value over search runs, and the agreement of
runs per decision."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from trcnas.analysis.agreement import fleiss_kappa
from trcnas.analysis.style import no_data, plt, save


def decision_values(arch: dict) -> dict[str, str]:
    """``{"group.decision": value}`` with list values (subsets) written as ``1,3`` (``-`` when empty)."""
    out = {}
    for group, node in arch["choices"].items():
        for name, v in (node or {}).items():
            if isinstance(v, list):
                out[f"{group}.{name}"] = ",".join(str(x) for x in v) or "-"
            else:
                out[f"{group}.{name}"] = str(v)
    return out


def chosen_table(arch: dict | None, out: Path) -> pd.DataFrame | None:
    fig, ax = plt.subplots(figsize=(6, 2.5))
    if arch is None:
        no_data(ax, "architecture.yaml")
        save(fig, out, "chosen_decisions")
        return None
    values = decision_values(arch)
    df = pd.DataFrame({"decision": list(values), "choice": list(values.values())})
    ax.axis("off")
    table = ax.table(cellText=df.to_numpy(), colLabels=["decision", "chosen"], loc="center", cellLoc="left")
    table.scale(1, 1.6)
    ax.set_title(f"Searched architecture ({arch['space']})")
    save(fig, out, "chosen_decisions")
    return df


def shares(archs: list[dict]) -> pd.DataFrame:
    """Share (%) of each value per decision over the runs (long format)."""
    rows = [{"decision": d, "choice": v} for a in archs for d, v in decision_values(a).items()]
    df = pd.DataFrame(rows)
    tab = df.groupby("decision")["choice"].value_counts(normalize=True).mul(100).rename("share").reset_index()
    return tab


def shares_figure(archs: list[dict], out: Path) -> pd.DataFrame | None:
    fig, ax = plt.subplots(figsize=(7, 4))
    if not archs:
        no_data(ax, "search runs (architecture.yaml with alpha_history.csv)")
        save(fig, out, "decision_proportions")
        return None
    tab = shares(archs)
    wide = tab.pivot(index="decision", columns="choice", values="share").fillna(0.0)
    bottom = np.zeros(len(wide))
    colors = plt.get_cmap("tab20")
    for i, c in enumerate(wide.columns):
        ax.bar(wide.index, wide[c], bottom=bottom, color=colors(i % 20), label=str(c))
        bottom += wide[c].to_numpy()
    ax.set_ylabel("share of search runs (%)")
    ax.set_title(f"Chosen values over {len(archs)} search run(s)")
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", title="value")
    save(fig, out, "decision_proportions")
    return tab


def agreement(archs: list[dict]) -> pd.DataFrame:
    """Per decision: % of pairs of runs that chose the same value."""
    values = [decision_values(a) for a in archs]
    rows = []
    for d in values[0]:
        agree = [values[i].get(d) == values[j].get(d) for i, j in combinations(range(len(values)), 2)]
        rows.append({"decision": d, "agreement": 100.0 * float(np.mean(agree))})
    return pd.DataFrame(rows)


def agreement_figure(archs: list[dict], out: Path) -> dict | None:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if len(archs) < 2:
        no_data(ax, "at least two search runs")
        save(fig, out, "decision_reliability")
        return None
    rel = agreement(archs)
    ax.bar(rel["decision"], rel["agreement"], color="#4C72B0")
    ax.set_ylim(0, 100)
    ax.set_ylabel("agreement between runs (%)")
    ax.set_title(f"Search reliability over {len(archs)} runs")
    save(fig, out, "decision_reliability")
    kappa = fleiss_kappa([a["choices"] for a in archs])
    return {"runs": len(archs), "mean_agreement": float(rel["agreement"].mean()),
            "chance_agreement": 100.0 * kappa["chance"], "fleiss_kappa": kappa["kappa"], "table": rel}
