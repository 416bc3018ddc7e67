"""Checks of a training curve (the logged training losses of a run), for metrics.json and the comparison tables;
numpy only, so the analysis side reads them without torch."""

from __future__ import annotations

import numpy as np

# a training whose loss ends above this multiple of its best is flagged (metrics.json, `trcnas compare`): the
# loop's non-finite check stops a loss that overflows, not one that jumps by orders of magnitude and stays finite
# (composite-embedding, depth 6 / width 512, seed 0: 2.1 -> 1558 in the last 100 of 3000 steps, no clipping)
LOSS_RISE = 2.0


def loss_rise(losses, frac: float = 0.1) -> float:
    """The mean of the last ``frac`` of a run's logged training losses divided by the lowest mean over any window
    of as many consecutive logged losses: near 1 when the loss has flattened or still falls, far above 1 when it
    rose at the end (a late divergence). NaN without losses."""
    x = np.asarray(list(losses), dtype=float)
    if x.size == 0:
        return float("nan")
    w = max(1, round(x.size * frac))
    means = np.convolve(x, np.full(w, 1.0 / w), mode="valid")
    return float(means[-1] / means.min())
