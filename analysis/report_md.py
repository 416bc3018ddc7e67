"""The report's opening page, ``report.md``: what a newcomer looks for first. On the planted-relations benchmark
the planted matrix beside the chosen one (pairs recovered, x of N); the retrained network's Δm beside the
reference figures measured once for its config (``report.reference``: the multi-task baseline, the best fixed
context), with their provenance; which figures were drawn, which need more runs; where every output went."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import yaml

from trcnas.analysis.loaders import is_retrain, read_json


def retrained_run(root: Path) -> Path | None:
    """The retrained network a report headlines: ``ROOT/retrain`` (the layout of ``trcnas run``), else the one
    trained fixed architecture under ROOT (None when there are several: a comparison has its own tables)."""
    if is_retrain(root / "retrain" / "metrics.json"):
        return root / "retrain"
    found = [p.parent for p in sorted(root.rglob("metrics.json")) if is_retrain(p)]
    return found[0] if len(found) == 1 else None


def run_config(run: Path) -> dict:
    """The config a run stored (its config.yaml), {} without one."""
    f = run / "config.yaml"
    cfg = yaml.safe_load(f.read_text()) if f.is_file() else None
    return cfg if isinstance(cfg, dict) else {}


def reference_figures(cfg: dict) -> list[dict]:
    """A stored config's ``report.reference`` (the Δm figures measured once for it), [] when it has none."""
    ref = (cfg.get("report") or {}).get("reference")
    return [r for r in ref or [] if isinstance(r, dict) and "delta_m" in r]


def _signed(v: float | None, std: float | None = None) -> str:
    if v is None:
        return "–"
    return f"{v:+.2f}" + (f" ± {std:.2f}" if std is not None else "")


def _search_section(summary: dict) -> list[str]:
    rec = summary.get("recovery")
    if rec:
        right_by_class = rec["recovered"] - rec["exact"]
        lines = ["## What the search found: the planted matrix against the chosen one", "",
                 f"**{rec['recovered']} of {rec['pairs']} pairs recovered** ({rec['exact']} the planted type itself"
                 + (f", {right_by_class} a type the planting proof cannot tell from it, `data.also_right`"
                    if right_by_class else "") + ").", ""]
        if rec["wrong"]:
            lines += ["Wrong: " + "; ".join(rec["wrong"]) + ".", ""]
        per_run = rec.get("per_search_run") or {}
        if len(per_run) > 1:
            lines += ["Every search run: " + ", ".join(f"`{k}` {v} of {rec['pairs']}" for k, v in per_run.items())
                      + ".", ""]
        lines += ["![planted vs chosen](planted_vs_chosen.png)", ""]
        return lines
    chosen = summary.get("chosen_types")
    if chosen:
        return ["## What the search chose", "",
                ", ".join(f"{k}: {v}" for k, v in chosen.items()) + f" (`{summary.get('architecture')}`).", ""]
    return []


def _retrain_section(root: Path, run: Path | None) -> list[str]:
    if run is None:
        return []
    m = read_json(run / "metrics.json") or {}
    cfg = run_config(run)
    seed = cfg.get("seed")
    rel = run.relative_to(root) if run.is_relative_to(root) else run
    lines = ["## The retrained network", "",
             "| network | Δm (%) ↑ | seeds | measured |", "|---|---|---|---|",
             f"| this run: the chosen architecture retrained ({m.get('steps', '?')} steps"
             + (f", seed {seed}" if seed is not None else "") + f") | {_signed(m.get('delta_m'))} | 1 | "
             f"`{rel}/metrics.json` |"]
    refs = reference_figures(cfg)
    for r in refs:
        lines.append(f"| {r.get('label', '?')} | {_signed(r['delta_m'], r.get('std'))} | {r.get('seeds', 1)} | "
                     f"{r.get('source', '?')} |")
    lines.append("")
    if m.get("delta_m") is None:
        lines += ["Δm is not computed: the config has no single-task `baselines`.", ""]
    elif not refs:
        lines += ["No reference figures for this config (`report.reference`).", ""]
    primary = m.get("primary") or {}
    if primary:
        lines += ["Per task (primary metric): " + ", ".join(f"{t} {v:.4g}" for t, v in primary.items()) + ".", ""]
    return lines


def report_markdown(root: Path, out: Path, summary: dict, outputs: dict | None = None) -> str:
    """The text of ``report.md`` (written next to the figures)."""
    lines = [f"# trcnas report: {root}", ""]
    lines += _search_section(summary)
    lines += _retrain_section(root, retrained_run(root))
    figures = sorted(f for f in summary.get("files", []) if f.endswith(".png"))
    lines += ["## Figures", "", f"In `{out}` (each also as PDF): " + (", ".join(figures) or "none") + ".", ""]
    skipped = not_drawn_line(summary)
    if skipped:
        lines += [skipped[0].upper() + skipped[1:] + ".", ""]
    if outputs:
        lines += ["## Where every output went", "", "| output | path |", "|---|---|"]
        lines += [f"| {k} | `{v}` |" for k, v in outputs.items()]
        lines.append("")
    return "\n".join(lines)


def not_drawn_line(summary: dict) -> str | None:
    """One line naming the figures a report left out for want of data, and what each needs."""
    skipped = summary.get("not_drawn") or {}
    if not skipped:
        return None
    return "not drawn, nothing to show yet: " + "; ".join(f"{k} (needs {v})" for k, v in skipped.items())


def chosen_types(rows: dict[str, dict[str, str]] | None) -> dict[str, int] | None:
    """How many task pairs chose each type (an ATRC-style architecture), most frequent first."""
    if not rows:
        return None
    return dict(Counter(c for row in rows.values() for c in row.values()).most_common())
