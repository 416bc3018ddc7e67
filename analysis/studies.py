"""Optuna study figures from exported files: optimisation history, parameter importances, Pareto front."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.style import no_data, plt, save


def study_figures(trials: pd.DataFrame | None, importances: pd.DataFrame | None, pareto: pd.DataFrame | None,
                  out: Path, maximize: bool = True) -> bool:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    if trials is None or trials.empty:
        for ax in axes:
            no_data(ax, "trials.csv of an Optuna study (run `trcnas hpo`)")
        save(fig, out, "optuna")
        return False
    done = trials[trials["state"] == "COMPLETE"]
    value_cols = [c for c in trials.columns if c == "value" or c.startswith("values_")]
    ax = axes[0]
    if len(value_cols) == 1:
        col = value_cols[0]
        ax.scatter(done["number"], done[col], color="#4C72B0", label="trial")
        best = done[col].cummax() if maximize else done[col].cummin()
        ax.plot(done["number"], best, color="#C44E52", label="best so far")
        ax.set_ylabel(col.removeprefix("values_"))
        ax.legend()
    elif value_cols:
        ax.scatter(done["number"], done[value_cols[0]], color="#4C72B0")
        ax.set_ylabel(value_cols[0].removeprefix("values_"))
    ax.set_xlabel("trial")
    ax.set_title("Optimisation history")
    if importances is not None and not importances.empty:
        axes[1].barh(importances["param"], importances["importance"], color="#55A868")
        axes[1].invert_yaxis()
        axes[1].set_xlabel("importance (fANOVA)")
        axes[1].set_title("Parameter importances")
    else:
        no_data(axes[1], "param_importances.csv (needs >= 2 complete trials)")
    if pareto is not None and len(value_cols) >= 2:
        axes[2].scatter(done[value_cols[1]], done[value_cols[0]], color="#bdbdbd", label="trials")
        objs = [c for c in pareto.columns if c not in ("trial", "architecture")][:2]
        axes[2].scatter(pareto[objs[1]], pareto[objs[0]], color="#C44E52", label="Pareto front")
        axes[2].set_xlabel(objs[1])
        axes[2].set_ylabel(objs[0])
        axes[2].legend()
        axes[2].set_title("Pareto front")
    else:
        no_data(axes[2], "a multi-objective study")
    save(fig, out, "optuna")
    return True
