"""Label-space partitions for the aux heads: depth range for log bins, k-means centroids of unit normals."""

from __future__ import annotations

import numpy as np


def depth_range(depths: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """Percentile range of valid (> 0) depths, used as d0 and d1 of the log-spaced bins."""
    d = np.asarray(depths, dtype=np.float64).ravel()
    d = d[d > 0]
    if d.size == 0:
        raise ValueError("no valid depth values to derive the depth-bin range from")
    lo, hi = np.percentile(d, [low, high])
    return float(lo), float(max(hi, lo * 1.01))


def normal_centroids(normals: np.ndarray, k: int = 40, iters: int = 25, seed: int = 0,
                     max_points: int = 200_000) -> np.ndarray:
    """Spherical k-means (cosine similarity) on valid unit normals; returns k x 3 unit centroids,
    ordered by decreasing cluster size so the result is deterministic for a seed."""
    x = np.asarray(normals, dtype=np.float64).reshape(-1, 3)
    x = x[np.linalg.norm(x, axis=1) > 0.5]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    if len(x) > max_points:
        x = x[rng.choice(len(x), max_points, replace=False)]
    if len(x) < k:
        raise ValueError(f"need at least {k} valid normals for k-means, got {len(x)}")
    # k-means++ seeding on cosine distance
    c = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d = 1 - np.max(x @ np.array(c).T, axis=1)
        d = np.clip(d, 0, None) + 1e-12
        c.append(x[rng.choice(len(x), p=d / d.sum())])
    c = np.array(c)
    for _ in range(iters):
        assign = np.argmax(x @ c.T, axis=1)
        for j in range(k):
            members = x[assign == j]
            if len(members):
                m = members.sum(0)
                c[j] = m / max(np.linalg.norm(m), 1e-12)
    counts = np.bincount(np.argmax(x @ c.T, axis=1), minlength=k)
    return c[np.argsort(-counts, kind="stable")].astype(np.float32)
