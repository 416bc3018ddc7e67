"""Shared figure style: a consistent palette per context type and task, readable labels, saving PNG + PDF
atomically, and an explicit 'no data' panel instead of an empty axis."""

from __future__ import annotations

import os
import textwrap
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from trcnas.nas.models.context import context_types
from trcnas.nas.tasks import TASKS, task_title  # noqa: E402


def _context_types() -> dict:
    """name -> ContextType of every registered context type (the built-in ones and those of loaded plugins)."""
    return {t.name: t for t in context_types()}


def context_order(names=()) -> list[str]:
    """The registered context types in registration order, then any other ``names`` (a context of a plugin this
    process has not loaded, read from a result file), sorted."""
    known = list(_context_types())
    return known + sorted({str(n) for n in names} - set(known))


def context_label(name) -> str:
    t = _context_types().get(name)
    return t.label if t else str(name)


def context_colour(name, default: str | None = "auto") -> str | None:
    """A context type's registered colour. Another name: ``default``, or with ``"auto"`` a fixed colour of
    the tab10 palette picked by the name (the same in every figure)."""
    t = _context_types().get(name)
    if t:
        return t.colour
    if default != "auto":
        return default

    from matplotlib.colors import to_hex

    return to_hex(plt.get_cmap("tab10")(zlib.crc32(str(name).encode()) % 10))
def task_label(t: str) -> str:
    """The task's own title (``Task.title``), or its name."""
    return task_title(t)


def decision_label(name: str) -> str:
    """A decision's figure title: ``target ← source`` for an ATRC pair, ``scale s (1/2^s)`` for an mTEB
    placement (the paper's numbering: feature map = input / 2^s), else the name after the group."""
    parts = name.split(".")
    if len(parts) == 3 and parts[1] in TASKS and parts[2] in TASKS:  # a task pair's decision
        return f"{task_label(parts[1])} ← {task_label(parts[2])}"
    if len(parts) == 3 and parts[1] == "scales" and parts[2].isdigit():
        return f"scale {parts[2]} (1/{2 ** int(parts[2])})"
    return ".".join(parts[1:]) or name


def no_data(ax, what: str, fontsize: float = 10) -> None:
    """'no data: <what>' centred in the panel, wrapped to the panel's width so it never runs into a
    neighbouring panel."""
    ax.set_axis_off()
    ax._trcnas_no_data = what  # a figure of such panels only is not written (save)
    fig = ax.get_figure()
    width_in = ax.get_position().width * fig.get_figwidth()
    chars = max(12, int(0.9 * width_in * 72 / (0.6 * fontsize)))  # average glyph ~0.6 em wide
    ax.text(0.5, 0.5, textwrap.fill(f"no data: {what}", chars), ha="center", va="center", fontsize=fontsize,
            color="#555555", transform=ax.transAxes)


def annotation(v: float) -> str:
    """A heatmap cell's label: two decimals, or two significant digits in scientific notation for a small
    non-zero value (1e-6 is not printed as 0.00)."""
    return number(v, "%.2f")


def number(v: float, floatfmt: str = "%.3f") -> str:
    """``floatfmt % v``, except a non-zero value that would print as zero: two significant digits, e.g. 1.0e-06;
    NaN prints as an empty cell."""
    if v != v:
        return ""
    text = floatfmt % v
    if v != 0 and not any(ch in "123456789" for ch in text.split("e")[0]):
        return f"{v:.1e}"
    return text



NOT_DRAWN: dict[str, str] = {}  # figure name -> what it needed, for the report's one line (reset per report)


def save(fig, out_dir: Path, name: str) -> list[Path]:
    """Writes ``name.png`` and ``name.pdf`` (temporary file, then rename) and closes the figure. A figure whose
    every panel says 'no data' is not written (an older copy of it is removed): its name and what it needs go
    to ``NOT_DRAWN``."""
    panels = [a for a in fig.axes if a.get_visible()]
    if panels and all(getattr(a, "_trcnas_no_data", None) for a in panels):
        NOT_DRAWN[name] = "; ".join(dict.fromkeys(a._trcnas_no_data for a in panels))
        plt.close(fig)
        for ext in ("png", "pdf"):
            (out_dir / f"{name}.{ext}").unlink(missing_ok=True)
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        final = out_dir / f"{name}.{ext}"
        tmp = out_dir / f".{name}.tmp.{ext}"
        fig.savefig(tmp, dpi=130, bbox_inches="tight")
        os.replace(tmp, final)
        paths.append(final)
    plt.close(fig)
    return paths
