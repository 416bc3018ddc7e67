"""Probe selection: every candidate trained and judged in isolation (``search.selection: probes``, ATRC).

What it addresses, measured on the planted-relations benchmark (docs/planted-relations.md): a candidate's merit
can show in a fixed network, where its block is the pair's only one and trains at full weight for the whole
budget, and in no supergraph tried. In a mixture the candidates of a pair are substitutes that the target's
fusion learns to combine, so one that learns fast (a global block) takes the function before a slower, better one
(a T-label block, which needs its target's aux regions to be confident) has learnt; single paths (SPOS) keep the
candidates apart but train each on a fifth of the steps.

Here each (pair, candidate) has its own probe (``nas.models.atrc.Probe``): a fusion and prediction conv that
predict the pair's target from the target's features and the candidate's message alone. Every step computes
every candidate and trains every probe on the target's loss (a target's probes weigh together as much as its
main output; their losses are taken at feature resolution against nearest-downsampled labels, as the aux
heads' are), so each block learns at full weight for the whole search with no other message beside it, as
in a one-block fixed network; the backbone, task features and aux heads are shared. At the end each pair
takes the candidate whose probe has the lowest validation loss of the target. Parameter-free ``none`` is judged
like any other (its probe sees the target's features alone). Closest published relative: block-wise supervision
of each candidate (DNA; Li et al., CVPR 2020) and splitting a supernet so that candidates share less (few-shot
NAS; Zhao et al., ICML 2021); the probe heads are this library's.

Measured (docs/planted-relations.md, Status): on the planted benchmark, seed 0, 1000 steps, it recovered 10 of 16
pairs by type class, worse than the paper's rule: alone, a message must carry everything its target needs, and a
global block over any source's features carries the image-wide statistics of the target's *other* relations too,
so the global probe had the lowest loss on 12 of 16 pairs. A candidate's merit depends on the other pairs' blocks,
which isolation removes. Kept as an option, measured, not a default.

Cost: one supergraph training that computes every candidate (as the paper's soft mixture does) plus a small
head per candidate. The search's own val metrics are those of its context-free main path, not of the chosen
architecture: retrain the architecture to measure it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from trcnas.nas.engine.evaluate import to_device
from trcnas.nas.losses import probe_loss
from trcnas.nas.search.mixed import MixedOp


@torch.no_grad()
def probe_losses(model, loader, tasks: Mapping, device, batches: int | None = None) -> dict[tuple[str, str], float]:
    """``{(decision, candidate): mean val loss of its target}`` (``probe_loss``: at the probe's resolution) over the
    first ``batches`` val batches (None: all), every probe on the same images."""
    model.eval()
    total: dict[tuple[str, str], float] = {}
    n = 0
    for k, batch in enumerate(loader):
        if batches is not None and k >= batches:
            break
        batch = to_device(batch, device)
        out = model.forward_batch(batch)
        b = batch["image"].shape[0]
        for t, preds in out["probes"].items():
            for key, p in preds.items():
                total[key] = total.get(key, 0.0) + float(probe_loss(tasks[t], p, batch[t])) * b
        n += b
    return {key: v / max(n, 1) for key, v in total.items()}


def select_by_probes(ops: Sequence[MixedOp], losses: Mapping[tuple[str, str], float]) -> list[dict]:
    """Freezes every live op to the candidate whose probe has the lowest loss (ties: the earlier candidate);
    returns one record per decision: its name, choice and each candidate's probe loss."""
    records = []
    for m in ops:
        if m.frozen:
            continue
        missing = [c for c in m.candidates if (m.name, c) not in losses]
        if missing:
            raise ValueError(f"decision {m.name}: no probe loss for candidates {missing}")
        row = [losses[(m.name, c)] for c in m.candidates]
        best = min(range(len(row)), key=lambda i: (row[i], i))
        m.freeze(best)
        records.append({"decision": m.name, "choice": m.candidates[best], "loss": dict(zip(m.candidates, row))})
    return records
