"""Search reliability: how alike the architectures of several searches are (percentage agreement, as the ATRC
paper reports it, and Fleiss' kappa, which corrects it for chance)."""

from __future__ import annotations

from collections import Counter
from itertools import combinations

from trcnas.spaces.architecture import decision_leaves


def mean_agreement(choices: list[dict]) -> float:
    """Search reliability: for each decision, the % of pairs of architectures that took the same value;
    averaged over the decisions (100 = every search chose alike)."""
    leaves = [decision_leaves(c) for c in choices]
    if len(leaves) < 2:
        raise ValueError("agreement needs at least two architectures")
    per = [sum(a[d] == b[d] for a, b in combinations(leaves, 2)) / (len(leaves) * (len(leaves) - 1) / 2)
           for d in leaves[0]]
    return 100.0 * sum(per) / len(per)


def fleiss_kappa(choices: list[dict]) -> dict[str, float | None]:
    """Agreement corrected for chance, Fleiss' kappa (the ATRC paper's percentage agreement is not corrected,
    as its Sec. F notes): the decisions are the subjects, the searches the raters. ``observed`` is
    ``mean_agreement`` / 100; ``chance`` the agreement expected if every search drew its values from the
    pooled shares of all values (sum of squared shares); kappa = (observed - chance) / (1 - chance): 0 at
    chance, 1 when all agree; None when every value is the same (chance = 1)."""
    leaves = [decision_leaves(c) for c in choices]
    counts = Counter(repr(leaf[d]) for leaf in leaves for d in leaves[0])
    total = sum(counts.values())
    chance = sum((n / total) ** 2 for n in counts.values())
    observed = mean_agreement(choices) / 100.0
    kappa = None if chance >= 1.0 else (observed - chance) / (1.0 - chance)
    return {"observed": observed, "chance": chance, "kappa": kappa}
