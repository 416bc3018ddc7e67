"""Resources and comparison: Delta_m vs params and vs MAdds for all variants (ATRC Fig. 5), and the
Table-1-style comparison as CSV, Markdown and LaTeX."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.style import no_data, number, plt, save
from spaces.io import atomic_write_text


def resources_figure(table: pd.DataFrame | None, out: Path) -> bool:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    if table is None or table.empty:
        for ax in axes:
            no_data(ax, "table.csv (run `trcnas table`)")
        save(fig, out, "resources")
        return False
    palette = plt.get_cmap("tab10")
    for ax, col, xl in ((axes[0], "params_M", "parameters (M)"), (axes[1], "madds_G", "multiply-adds (G)")):
        for i, (_, r) in enumerate(table.iterrows()):
            ax.scatter(r[col], r["delta_m"], color=palette(i % 10), s=50, label=r["model"])
        ax.set_xlabel(xl)
        ax.axhline(0, color="#999999", lw=0.5)
    axes[0].set_ylabel("Δm vs single-task (%)")
    axes[1].legend(bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle("Multi-task performance vs resources")
    save(fig, out, "resources")
    return True


def write_tables(df: pd.DataFrame, out: Path, name: str, floatfmt: str = "%.3f") -> list[Path]:
    """``name``.csv, .md and .tex."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.{e}" for e in ("csv", "md", "tex")]
    atomic_write_text(paths[0], df.to_csv(index=False))
    atomic_write_text(paths[1], _markdown(df, floatfmt))
    atomic_write_text(paths[2], df.to_latex(index=False, float_format=lambda x: number(x, floatfmt)))
    return paths


def _markdown(df: pd.DataFrame, floatfmt: str) -> str:
    def cell(v):
        return number(v, floatfmt) if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"
