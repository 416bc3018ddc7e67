"""Perturbation-based architecture selection (DARTS-PT; Wang et al., ICLR 2021, "Rethinking Architecture
Selection in Differentiable NAS").

After the supergraph is trained, each live decision is decided in turn (a seeded order, as the paper draws its
edges): the supergraph runs with every live decision's deterministic mixture (softmax or sigmoid of alpha) and,
for each candidate, again with that candidate removed from its decision's mixture (its weight set to zero, the
others' kept). The candidate whose removal raises the validation loss most is chosen, and the decision is fixed
to it before the next one is judged. A parameter-free candidate (``none``) adds nothing to the mixture, so its
removal changes nothing: it is chosen only when removing any other candidate lowers the loss.

``tune`` (``search.selection_tune_steps``) trains the weights for a few steps after each decision is fixed, as the
paper tunes the supernet between two edge decisions; without it (the default) the fixed op computes its
candidate at full weight in a supergraph trained on its share of the mixture, and every later decision is judged
in that shifted network (on the planted-relations benchmark, seed 0, the supergraph's validation loss rose from
0.65 to 1.36 over the 16 decisions). Deviation from the paper: the validation score is the training objective on
the val split (the paper's is accuracy), which every task has.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from trcnas.nas.search.mixed import MixedOp


def select_by_perturbation(ops: Sequence[MixedOp], score: Callable[[], float], seed: int = 0,
                           tune: Callable[[], None] | None = None) -> list[dict]:
    """Decides (freezes) every live op of ``ops``; ``score()`` is the supergraph's validation loss with the
    ops as they are set (lower is better); ``tune()``, if given, trains the weights after each decision but the
    last. Returns one record per decision, in the order decided: its name, choice, each candidate's loss rise
    when removed, and the loss it was judged at (``base_loss``)."""
    live = [m for m in ops if not m.frozen]
    order = torch.randperm(len(live), generator=torch.Generator().manual_seed(seed)).tolist()
    records = []
    for m in live:
        m.mixture = m.mixture_weights()
    try:
        for k in order:
            m = live[k]
            full = m.mixture_weights()
            base = score()
            rises = []
            for i in range(len(m.candidates)):
                if m.is_none[i] or float(full[i]) == 0.0:
                    rises.append(0.0)  # removing it changes nothing
                    continue
                w = full.clone()
                w[i] = 0.0
                m.mixture = w
                rises.append(score() - base)
            best = max(range(len(rises)), key=lambda i: (rises[i], -i))  # ties: the earlier candidate
            m.mixture = None
            m.freeze(best)
            records.append({"decision": m.name, "choice": m.candidates[best], "base_loss": base,
                            "rise": dict(zip(m.candidates, rises))})
            if tune is not None and len(records) < len(live):
                tune()
    finally:
        for m in live:
            m.mixture = None
    return records
