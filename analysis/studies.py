"""Optuna study figures from exported files: optimisation history, parameter importances, Pareto front."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from trcnas.analysis.style import no_data, plt, save


def objective_columns(trials: pd.DataFrame) -> list[str]:
    """The objective columns of Optuna's ``trials_dataframe``: ``value`` (one unnamed objective),
    ``value_<name>`` (one named), ``values_<i>`` / ``values_<name>`` (several)."""
    return [c for c in trials.columns if c == "value" or c.startswith(("value_", "values_"))]


def objective_name(column: str) -> str:
    return column.removeprefix("values_").removeprefix("value_")


def study_figures(trials: pd.DataFrame | None, importances: pd.DataFrame | None, pareto: pd.DataFrame | None,
                  out: Path, maximize: bool = True) -> dict:
    """The optuna figure; returns what each panel shows (``history_points``: complete trials plotted,
    ``importances``: parameters, ``pareto_points``: front size; 0 where the panel says 'no data')."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    shown = {"history_points": 0, "importances": 0, "pareto_points": 0}
    if trials is None or trials.empty:
        for ax in axes:
            no_data(ax, "trials.csv of an Optuna study (run `trcnas hpo`)")
        save(fig, out, "optuna")
        return shown
    done = trials[trials["state"] == "COMPLETE"]
    value_cols = objective_columns(trials)
    ax = axes[0]
    shown["history_points"] = int(done[value_cols[0]].notna().sum()) if value_cols else 0
    if not shown["history_points"]:
        no_data(ax, "a complete trial with an objective value")
    elif len(value_cols) == 1:
        col = value_cols[0]
        ax.scatter(done["number"], done[col], color="#4C72B0", label="trial")
        best = done[col].cummax() if maximize else done[col].cummin()
        ax.plot(done["number"], best, color="#C44E52", label="best so far")
        ax.set_ylabel(objective_name(col))
        ax.legend()
    elif value_cols:
        ax.scatter(done["number"], done[value_cols[0]], color="#4C72B0")
        ax.set_ylabel(objective_name(value_cols[0]))
    ax.set_xlabel("trial")
    ax.set_title("Optimisation history")
    if importances is not None and not importances.empty:
        shown["importances"] = len(importances)
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
        shown["pareto_points"] = len(pareto)
        axes[2].set_xlabel(objs[1])
        axes[2].set_ylabel(objs[0])
        axes[2].legend()
        axes[2].set_title("Pareto front")
    else:
        no_data(axes[2], "a multi-objective study")
    save(fig, out, "optuna")
    return shown
