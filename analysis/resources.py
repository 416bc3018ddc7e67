"""Resources and comparison: Delta_m vs params and vs MAdds for all variants (ATRC Fig. 5), and the
Table-1-style comparison as CSV, Markdown and LaTeX."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from trcnas.analysis.style import no_data, number, plt, save
from trcnas.spaces.io import atomic_write_text


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
            std = r.get("delta_m_std", float("nan"))
            ax.errorbar(r[col], r["delta_m"], yerr=None if std != std else std, fmt="o", color=palette(i % 10),
                        ms=7, capsize=3, label=r["model"])
        ax.set_xlabel(xl)
        ax.axhline(0, color="#999999", lw=0.5)
    axes[0].set_ylabel("Δm vs single-task (%)")
    axes[1].legend(bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle("Multi-task performance vs resources")
    save(fig, out, "resources")
    return True


def delta_m_bars(table: pd.DataFrame, out: Path) -> bool:
    """Δm per variant with ± one standard deviation over seeds (``table.csv`` of ``trcnas table``)."""
    fig, ax = plt.subplots(figsize=(1.1 * len(table) + 2, 4))
    if table is None or table.empty:
        no_data(ax, "table.csv (run `trcnas table`)")
        save(fig, out, "table_delta_m")
        return False
    std = table["delta_m_std"].fillna(0) if "delta_m_std" in table else None
    colors = plt.get_cmap("tab10")(range(len(table)))
    ax.bar(range(len(table)), table["delta_m"], yerr=std, capsize=4, color=colors)
    ax.axhline(0, color="#999999", lw=0.5)
    ax.set_xticks(range(len(table)), table["model"], rotation=30, ha="right")
    n = int(table["n"].min()) if "n" in table else 1
    ax.set_ylabel("Δm vs single-task (%)")
    ax.set_title(f"Δm per variant (mean ± std over {n} seed{'s' if n > 1 else ''})")
    save(fig, out, "table_delta_m")
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
