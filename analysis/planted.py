"""The planted-relations proof and score (reads only result files).

``proof``: for every (target, source) pair of a comparison expanded with ``expand: planted_pairs``, the planted
network against the same network with that one pair changed to each other candidate, scored by the target's
metric over the seeds. A pair's planted type is *separated* from an alternative when the planted mean beats the
alternative's by more than two standard deviations of the target's metric: the seed-to-seed standard deviation
pooled over every network of the comparison (``pooled_sd``: the within-network variance, as in a one-way ANOVA), so
that a verdict does not hang on two or three runs of one pair. The larger of the pair's own two sample standard
deviations is kept beside it (``pair_sd``, the rule until 2026-12-07).

``recovery``: how many pairs of an architecture chose the planted type, where each pair's types that the proof
could not tell apart count as one class: per pair (``classes``, from this matrix's own proof) or per planted type
(``type_classes``: what the proof separated on no pair of a type, stored in a config as
``data.also_right`` so that any matrix is scored alike).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from trcnas.analysis.style import context_colour, context_label, context_order, plt, save, task_label
from trcnas.spaces.io import atomic_write_text

SEPARATION = 2.0  # standard deviations


def _metric(final: Path, task: str) -> tuple[float, float] | None:
    """(the target's primary metric, the pair digit's IoU or NaN) of one finished run."""
    f = final / "metrics.json"
    if not f.is_file():
        return None
    m = json.loads(f.read_text())
    return float(m["primary"][task]), m


def proof_rows(out: Path, spec: dict) -> pd.DataFrame:
    """One row per (pair, alternative): the target's metric of the planted network and of the alternative
    (mean, sample std, n), the pair digit's IoU in both, the margin in standard deviations and the verdict."""
    by_name = {v["name"]: v for v in spec["variants"]}
    first = next((v["name"] for v in spec["variants"] if v.get("planted")), None)
    if first is None:
        return pd.DataFrame()

    def values(variant, target, source):
        metric, digit = [], []
        for s in spec["seeds"]:
            got = _metric(out / variant["name"] / f"seed{s}", target)
            if got is None:
                continue
            metric.append(got[0])
            digit.append(float(got[1]["metrics"][target].get(f"iou_{source}", float("nan"))))
        return np.array(metric), np.array(digit)

    pooled = pooled_sd(out, spec)
    rows = []
    for v in spec["variants"]:
        if "pair" not in v:
            continue
        t, s = v["pair"]
        # the planted variant it was expanded from (comparisons written before it was recorded: the first)
        p_metric, p_digit = values(by_name[v.get("planted_variant", first)], t, s)
        a_metric, a_digit = values(v, t, s)
        row = {"target": t, "source": s, "planted": v["planted_type"], "alternative": v["type"],
               "n_planted": len(p_metric), "n_alternative": len(a_metric)}
        for name, arr in (("planted", p_metric), ("alternative", a_metric)):
            row[f"{name}_mean"] = float(arr.mean()) if len(arr) else float("nan")
            row[f"{name}_std"] = float(arr.std(ddof=1)) if len(arr) > 1 else float("nan")
        row["planted_digit"], row["alternative_digit"] = _mean(p_digit), _mean(a_digit)
        row["pair_sd"] = max(row["planted_std"], row["alternative_std"])
        row["sd"] = sd = pooled.get(t, float("nan"))
        margin = row["planted_mean"] - row["alternative_mean"]
        row["margin"] = margin
        row["margin_sd"] = margin / sd if sd > 0 else (float("inf") if margin > 0 else float("nan"))
        done = len(p_metric) > 1 and len(a_metric) > 1
        row["separated"] = bool(done and margin > SEPARATION * sd)
        row["status"] = ("separated" if row["separated"] else "not separated") if done else "pending"
        rows.append(row)
    return pd.DataFrame(rows)


def pooled_sd(out: Path, spec: dict) -> dict[str, float]:
    """Per target task, the seed-to-seed standard deviation of its primary metric pooled over every network of the
    comparison with two or more finished seeds: sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1))."""
    squares: dict[str, float] = {}
    dof: dict[str, int] = {}
    for v in spec["variants"]:
        per_task: dict[str, list[float]] = {}
        for seed in spec["seeds"]:
            f = out / v["name"] / f"seed{seed}" / "metrics.json"
            if f.is_file():
                for task, value in json.loads(f.read_text())["primary"].items():
                    per_task.setdefault(task, []).append(float(value))
        for task, xs in per_task.items():
            if len(xs) > 1:
                squares[task] = squares.get(task, 0.0) + float(((np.array(xs) - np.mean(xs)) ** 2).sum())
                dof[task] = dof.get(task, 0) + len(xs) - 1
    return {t: float(np.sqrt(squares[t] / dof[t])) for t in squares}


def _mean(values: np.ndarray) -> float:
    """The mean of the finite values (NaN when none: a pair planted ``none`` has no digit of its own)."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def classes(rows: pd.DataFrame) -> dict[tuple[str, str], set[str]]:
    """Per pair, the types counted as right: the planted one and every alternative the proof did not separate
    from it (finished pairs only)."""
    out: dict[tuple[str, str], set[str]] = {}
    for (t, s), g in rows.groupby(["target", "source"], sort=False):
        out[(t, s)] = {g["planted"].iloc[0], *g.loc[g["status"] == "not separated", "alternative"]}
    return out


def type_classes(rows: pd.DataFrame, share: float = 1.0) -> dict[str, list[str]]:
    """Per planted type, the alternatives the proof did not separate from it on at least ``share`` of that type's
    finished pairs where the alternative was a candidate (default: on every one of them): the ``data.also_right``
    of a config, which scores any matrix by what the shipped matrix's proof showed per type."""
    out: dict[str, list[str]] = {}
    done = rows[rows["status"] != "pending"]
    order = list(done["alternative"].unique())
    for typ, g in done.groupby("planted", sort=False):
        kept = [alt for alt, a in g.groupby("alternative", sort=False)
                if (a["status"] == "not separated").mean() >= share]
        out[typ] = sorted(kept, key=order.index)
    return out


def pair_classes(planted: dict[str, dict[str, str]], also_right: dict[str, list[str]] | None
                 ) -> dict[tuple[str, str], set[str]]:
    """``also_right`` (per planted type) as :func:`recovery`'s per-pair classes of the matrix ``planted``."""
    return {(t, s): set((also_right or {}).get(typ, ())) for t, row in planted.items() for s, typ in row.items()}


def recovery(choices: dict[str, dict[str, str]], planted: dict[str, dict[str, str]],
             same: dict[tuple[str, str], set[str]] | None = None) -> dict:
    """Pairs whose chosen type is the planted one (or one the proof could not tell from it, ``same``);
    ``exact``: those whose chosen type is the planted one itself."""
    pairs = [(t, s) for t in planted for s in planted[t]]
    right = [(t, s) for t, s in pairs
             if choices[t][s] == planted[t][s] or choices[t][s] in (same or {}).get((t, s), set())]
    wrong = [(t, s) for t, s in pairs if (t, s) not in right]
    return {"recovered": len(right), "pairs": len(pairs), "share": len(right) / len(pairs),
            "exact": sum(choices[t][s] == planted[t][s] for t, s in pairs),
            "wrong": [f"{t}<-{s}: {choices[t][s]} (planted {planted[t][s]})" for t, s in wrong],
            "wrong_pairs": [[t, s] for t, s in wrong]}


def score_of(run: Path) -> tuple[dict[str, dict[str, str]], dict[tuple[str, str], set[str]]] | None:
    """The planted matrix a run was trained or searched on (its config.yaml's ``data.relations``) and its score's
    per-pair classes (from ``data.also_right``), or None off the relations dataset."""
    f = Path(run) / "config.yaml"
    data = ((yaml.safe_load(f.read_text()) or {}).get("data") or {}) if f.is_file() else {}
    if data.get("dataset") != "relations" or not data.get("relations"):
        return None
    return data["relations"], pair_classes(data["relations"], data.get("also_right"))


def plot_recovery(planted: dict[str, dict[str, str]], chosen: dict[str, dict[str, str]], out: Path,
                  same: dict[tuple[str, str], set[str]] | None = None) -> dict:
    """The planted matrix beside the chosen one, wrong pairs outlined (with their planted type), pairs right by
    the score's classes (``same``) outlined dashed; returns :func:`recovery`."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Rectangle

    tasks = list(planted)
    score = recovery(chosen, planted, same)
    order = context_order([v for m in (planted, chosen) for row in m.values() for v in row.values()])
    cmap = ListedColormap([context_colour(c) for c in order])
    fig, axes = plt.subplots(1, 2, figsize=(2.6 * len(tasks) + 1, 1.15 * len(tasks) + 1.6))
    for ax, m, title in ((axes[0], planted, "planted"),
                         (axes[1], chosen, f"chosen: {score['recovered']} of {score['pairs']} recovered")):
        ax.imshow([[order.index(m[t][s]) for s in tasks] for t in tasks], cmap=cmap, vmin=-0.5,
                  vmax=len(order) - 0.5)
        for i, t in enumerate(tasks):
            for j, s in enumerate(tasks):
                ax.text(j, i, context_label(m[t][s]), ha="center", va="center", color="white", fontsize=9)
                if m is chosen and [t, s] not in score["wrong_pairs"] and m[t][s] != planted[t][s]:
                    # right by the score's classes: the proof could not tell this type from the planted one
                    ax.add_patch(Rectangle((j - 0.42, i - 0.42), 0.84, 0.84, fill=False, ec="black", lw=1.2,
                                           ls="--"))
                if m is chosen and [t, s] in score["wrong_pairs"]:
                    ax.add_patch(Rectangle((j - 0.42, i - 0.42), 0.84, 0.84, fill=False, ec="black", lw=2.5))
                    ax.text(j, i + 0.3, f"planted: {context_label(planted[t][s])}", ha="center", va="center",
                            color="white", fontsize=6)
        ax.set_xticks(range(len(tasks)), [task_label(t) for t in tasks])
        ax.set_yticks(range(len(tasks)), [task_label(t) for t in tasks])
        ax.set_xlabel("source task")
        ax.set_title(title)
    axes[0].set_ylabel("target task")
    save(fig, out, "planted_vs_chosen")
    return score


def merits(rows: pd.DataFrame) -> dict[tuple[str, str], dict[str, float]]:
    """Per pair, each candidate's measured merit: the target's metric (mean over the seeds) of the fixed network with
    that candidate on the pair and every other pair at its planted type (the planted network for the planted
    type)."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for (t, s), g in rows.groupby(["target", "source"], sort=False):
        m = {g["planted"].iloc[0]: float(g["planted_mean"].iloc[0])}
        m.update({a: float(v) for a, v in zip(g["alternative"], g["alternative_mean"]) if v == v})
        out[(t, s)] = m
    return out


def proof_of(folder: str | Path) -> pd.DataFrame:
    """The proof rows of a ``relations-proof`` comparison's output folder (its ``comparison.yaml`` and runs)."""
    folder = Path(folder)
    return proof_rows(folder, yaml.safe_load((folder / "comparison.yaml").read_text()))


def decisions_vs_merit(history: pd.DataFrame | None, events: pd.DataFrame | None,
                       chosen: dict[str, dict[str, str]], planted: dict[str, dict[str, str]],
                       merit: dict[tuple[str, str], dict[str, float]],
                       same: dict[tuple[str, str], set[str]] | None = None, prefix: str = "atrc") -> pd.DataFrame:
    """Where a search's choice goes wrong, per pair: what it chose and when (frozen step, or the step from which
    the chosen candidate led for good), against the candidates' measured merit (the proof's fixed networks):
    the best candidate by merit, the chosen one's rank and its merit gap to the best, and whether the choice counts
    as right (``same``: the score's classes)."""
    frozen = {} if events is None or events.empty else dict(zip(events["decision"], events["step"]))
    history = history if history is not None else pd.DataFrame()
    rows = []
    for t, row in planted.items():
        for s, typ in row.items():
            c = chosen[t][s]
            m = merit.get((t, s), {})
            ranked = sorted(m, key=lambda k: -m[k])
            name = f"{prefix}.{t}.{s}"
            led = float("nan")
            if f"{name}:{c}" in history:
                cols = [k for k in history.columns if k.startswith(f"{name}:")]
                leader = history[cols].idxmax(axis=1) == f"{name}:{c}"
                lost = (~leader).to_numpy().nonzero()[0]
                start = 0 if not len(lost) else lost[-1] + 1
                led = float(history["step"].iloc[start]) if start < len(history) else float("nan")
            p_end = float(history[f"{name}:{typ}"].iloc[-1]) if f"{name}:{typ}" in history else float("nan")
            rows.append({
                "target": t, "source": s, "planted": typ, "chosen": c,
                "right": c == typ or c in (same or {}).get((t, s), set()),
                "frozen_at": frozen.get(name, float("nan")), "chosen_leads_from": led,
                "planted_probability_end": p_end,
                "best_by_merit": ranked[0] if ranked else "", "chosen_rank": ranked.index(c) + 1 if c in m else None,
                "merit_chosen": m.get(c, float("nan")), "merit_planted": m.get(typ, float("nan")),
                "merit_gap": (m[ranked[0]] - m[c]) if ranked and c in m else float("nan"),
            })
    return pd.DataFrame(rows)


def plot_trajectories_vs_merit(history: pd.DataFrame, events: pd.DataFrame | None,
                               merit: dict[tuple[str, str], dict[str, float]], planted: dict[str, dict[str, str]],
                               out: Path, prefix: str = "atrc") -> list[Path]:
    """Each pair's candidate probabilities over the search (dashed: frozen) beside each candidate's measured merit
    (the target's metric of its fixed network; the planted type marked)."""
    pairs = [(t, s) for t in planted for s in planted[t]]
    n = len(planted)
    fig, axes = plt.subplots(n, n, figsize=(3.4 * n, 2.5 * n), sharex=True, sharey=True, squeeze=False)
    frozen = {} if events is None or events.empty else dict(zip(events["decision"], events["step"]))
    for ax, (t, s) in zip(axes.flat, pairs):
        name, m = f"{prefix}.{t}.{s}", merit.get((t, s), {})
        best = max(m, key=m.get) if m else None
        for col in [c for c in history.columns if c.startswith(f"{name}:")]:
            cand = col.split(":", 1)[1]
            label = context_label(cand) + (f" {m[cand]:.2f}" if cand in m else "")
            label += (" (planted)" if cand == planted[t][s] else "") + (" *" if cand == best else "")
            ax.plot(history["step"], history[col], color=context_colour(cand), label=label,
                    lw=2.2 if cand == planted[t][s] else 1.2)
        if name in frozen:
            ax.axvline(frozen[name], color="black", ls="--", lw=1)
        ax.set_title(f"{task_label(t)} <- {task_label(s)}", fontsize=9)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=6, loc="upper left", title="merit: target metric (* best)", title_fontsize=6)
    fig.supxlabel("search step (dashed: frozen)")
    fig.supylabel("softmax(α)")
    return save(fig, out, "trajectories_vs_merit")


def proof_markdown(rows: pd.DataFrame) -> str:
    if rows.empty:
        return ""
    done = rows[rows["status"] != "pending"]
    lines = ["# Planted relations: is each planted type the best for its pair?\n",
             f"Each row: the planted network against the same network with one pair changed (target's metric, "
             f"mean ± sample std over seeds). Separated: planted mean - alternative mean > {SEPARATION:g} x the "
             f"seed-to-seed standard deviation of the target's metric, pooled over every network of the proof ("
             + ", ".join(f"{t} {v:.2f}" for t, v in rows.groupby("target", sort=False)["sd"].first().items())
             + f"). {int(done['separated'].sum())} of {len(done)} finished comparisons separated "
             f"({len(rows) - len(done)} pending).\n",
             "| target <- source | planted | alternative | planted metric | alternative metric | margin (pooled sd) "
             "| pair digit IoU planted / alt | verdict |", "|---|---|---|---|---|---|---|---|"]
    for _, r in rows.iterrows():
        lines.append(
            f"| {r['target']} <- {r['source']} | {r['planted']} | {r['alternative']} | "
            f"{_ms(r, 'planted')} | {_ms(r, 'alternative')} | {r['margin']:+.2f} ({r['margin_sd']:.1f}) | "
            f"{_digits(r)} | {r['status']} |")
    unsep = done[~done["separated"]]
    if not unsep.empty:
        lines.append("\nNot separated (counted as one class with the planted type by the benchmark's score): "
                     + ", ".join(f"{r['target']}<-{r['source']} {r['planted']}~{r['alternative']}"
                                 for _, r in unsep.iterrows()) + ".")
    if not done.empty:
        per_type = type_classes(rows)
        lines.append("\nPer planted type, the alternatives not separated on any of its finished pairs "
                     "(a config's `data.also_right`, which scores any matrix by them): `"
                     + yaml.safe_dump(per_type, default_flow_style=True, width=1000).strip() + "`.")
    return "\n".join(lines) + "\n"


def _digits(r) -> str:
    """The pair digit's IoU, planted / alternative ('no digit' on a pair planted none: it plants no bit)."""
    if r["planted_digit"] != r["planted_digit"] and r["alternative_digit"] != r["alternative_digit"]:
        return "(no digit)"
    return f"{r['planted_digit']:.1f} / {r['alternative_digit']:.1f}"


def _ms(r, name: str) -> str:
    m, s, n = r[f"{name}_mean"], r[f"{name}_std"], r[f"n_{name}"]
    if not n:
        return "pending"
    return f"{m:.2f} ± {s:.2f}" if n > 1 else f"{m:.2f} (1 seed)"


def write_proof(out: str | Path, spec: dict) -> list[str]:
    """proof.csv and proof.md into ``out`` (nothing when the comparison has no planted pairs)."""
    out = Path(out)
    rows = proof_rows(out, spec)
    if rows.empty:
        return []
    atomic_write_text(out / "proof.csv", rows.to_csv(index=False))
    atomic_write_text(out / "proof.md", proof_markdown(rows))
    return [str(out / "proof.csv"), str(out / "proof.md")]
