"""One-shot evaluation: single-path supergraph training decided by validation (SPOS; Guo et al., ECCV 2020,
"Single Path One-Shot Neural Architecture Search with Uniform Sampling").

The search trains one uniformly drawn candidate per decision per step at full weight (every candidate learns to
work on its own, and alpha plays no part), then evaluates *architectures* on the supergraph's shared weights: the
candidate of each decision is the one with the lowest validation loss when it alone is computed there. SPOS
searches that space by evolution; here the decisions are decided by greedy coordinate descent, which suits spaces
whose decisions interact little (a context block changes one target's head): from a seeded random architecture,
each decision in a seeded order takes the candidate whose single path scores best with every other decision at
its current choice; sweeps repeat until one changes nothing (at most ``sweeps``). A parameter-free candidate
(``none``) is scored like any other, by running the network without the block.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from trcnas.nas.search.mixed import MixedOp


def select_by_evaluation(ops: Sequence[MixedOp], score: Callable[[], float], seed: int = 0,
                         sweeps: int = 2) -> list[dict]:
    """Decides (freezes) every live op of ``ops``; ``score()`` is the validation loss of the network with every op
    frozen as it is set (lower is better). Returns one record per decision, in the order of the last sweep: its
    name, choice, each candidate's loss in that sweep, and the sweep it was last changed in."""
    live = [m for m in ops if not m.frozen]
    if not live:
        return []
    gen = torch.Generator().manual_seed(seed)
    choice = {m.name: int(torch.randint(len(m.candidates), (1,), generator=gen)) for m in live}
    changed_in = {m.name: 0 for m in live}
    losses: dict[str, dict[str, float]] = {}
    for m in live:
        m.freeze(choice[m.name])
    for sweep in range(1, max(1, sweeps) + 1):
        changed = False
        for k in torch.randperm(len(live), generator=gen).tolist():
            m = live[k]
            row = []
            for i in range(len(m.candidates)):
                m.freeze(i)
                row.append(score())
            best = min(range(len(row)), key=lambda i: (row[i], i))  # ties: the earlier candidate
            m.freeze(best)
            losses[m.name] = dict(zip(m.candidates, row))
            if best != choice[m.name]:
                choice[m.name], changed_in[m.name], changed = best, sweep, True
        if not changed:
            break
    return [{"decision": m.name, "choice": m.candidates[choice[m.name]], "loss": losses[m.name],
             "changed_in_sweep": changed_in[m.name]} for m in live]
