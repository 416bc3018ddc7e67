"""Boundary evaluation with the BSDS protocol (Martin et al.; the SEISM / BSDS500 benchmark code, as ported by
``pyEdgeEval``), written on NumPy/SciPy/scikit-image so the default install needs no compiler.

Per image:

1. **Edge NMS** as in Dollár's structured-edge toolbox (``edgesNmsMex``, the step every boundary paper runs
   before evaluation): the map is smoothed by a triangle filter of radius 1, orientations come from the second
   derivatives of a radius-4 triangle-filtered copy, a pixel survives if ``1.01 x`` its value is not below
   the bilinearly interpolated values one pixel away on either side along the normal; values within 5 pixels
   of the image border are ramped down linearly (the standard border handling).
2. For each threshold t of ``linspace(1/(n+1), 1 - 1/(n+1), n)`` (0.01..0.99 for n = 99): the binary map
   ``nms >= t`` is **thinned** (``bwmorph(..., 'thin', inf)``: scikit-image's ``thin``, the same Guo-Hall
   algorithm, evaluated on border pixels only: ``_thin``) and put in **one-to-one correspondence** with the
   label's edge pixels: a bipartite graph joins a predicted and a label pixel closer than
   ``max_dist x image diagonal``; the number of matched pixels is that of a maximum matching (a unit-capacity
   max flow, SciPy's Dinic). BSDS's ``correspondPixels`` solves a min-cost assignment whose outlier cost
   (100 x maxDist) exceeds any match distance, so its optimum has this same cardinality.
3. Counts (matched label pixels, label pixels, matched predicted pixels, predicted pixels) per threshold.

Over the dataset: ODS-F from the summed counts, maximised over thresholds with BSDS's linear interpolation
between neighbouring thresholds (``maxF``); OIS-F from each image's best threshold; AP as BSDS's area under the
precision-recall curve (``Area_PR``: precision interpolated at recall 0, 0.01, ..., 0.99).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.csgraph import maximum_flow


def bsds_thresholds(n: int = 99) -> np.ndarray:
    return np.linspace(1.0 / (n + 1), 1.0 - 1.0 / (n + 1), n)


def _conv_tri(x: np.ndarray, r: int) -> np.ndarray:
    """Dollár's ``convTri``: separable triangle filter of radius r with symmetric padding (r <= 1 uses the
    [1 p 1] kernel with p = 12 / r / (r + 2) - 2)."""
    if r <= 1:
        p = 12.0 / r / (r + 2) - 2
        f = np.array([1.0, p, 1.0]) / (2 + p)
    else:
        f = np.concatenate([np.arange(1, r + 2), np.arange(r, 0, -1)]).astype(float) / (r + 1) ** 2
    # ndimage's "reflect" repeats the edge sample (d c b a | a b c d): MATLAB's / NumPy's "symmetric"
    return ndimage.correlate1d(ndimage.correlate1d(x, f, axis=0, mode="reflect"), f, axis=1, mode="reflect")


def _interp(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear lookup at column x, row y, clamped to [0, size - 1.001] as in ``edgesNmsMex``."""
    h, w = img.shape
    x = np.clip(x, 0, w - 1.001)
    y = np.clip(y, 0, h - 1.001)
    x0, y0 = x.astype(np.int64), y.astype(np.int64)
    dx, dy = x - x0, y - y0
    return (img[y0, x0] * (1 - dx) * (1 - dy) + img[y0, x0 + 1] * dx * (1 - dy)
            + img[y0 + 1, x0] * (1 - dx) * dy + img[y0 + 1, x0 + 1] * dx * dy)


def edge_nms(prob: np.ndarray, r: int = 1, s: int = 5, m: float = 1.01) -> np.ndarray:
    """Non-maximum suppression of a boundary probability map (H x W floats in [0, 1]), BSDS/structured-edge
    style (see the module docstring). Returns a float map that is zero off the ridges."""
    e = _conv_tri(np.asarray(prob, dtype=np.float64), 1)
    oy, ox = np.gradient(_conv_tri(e, 4))
    _, oxx = np.gradient(ox)
    oyy, oxy = np.gradient(oy)
    ori = np.mod(np.arctan(oyy * np.sign(-oxy) / (oxx + 1e-5)), np.pi)
    out = e.copy()
    ys, xs = np.nonzero(e)
    if len(ys):
        v = e[ys, xs] * m
        c, sn = np.cos(ori[ys, xs]), np.sin(ori[ys, xs])
        kill = np.zeros(len(ys), dtype=bool)
        for d in range(-r, r + 1):
            if d:
                kill |= v < _interp(e, xs + d * c, ys + d * sn)
        out[ys[kill], xs[kill]] = 0.0
    h, w = out.shape
    s = int(min(s, w // 2, h // 2))
    for i in range(s):  # ramp the border down, columns then rows, as edgesNmsMex does
        out[:, i] *= i / s
        out[:, w - 1 - i] *= i / s
    for i in range(s):
        out[i, :] *= i / s
        out[h - 1 - i, :] *= i / s
    return out


# the 3 x 3 neighbourhood code of scikit-image's thinning: (dy, dx, bit) for the mask [[8, 4, 2], [16, 0, 1],
# [32, 64, 128]]; the even bits are the 4-neighbours
_CODE_BITS = ((0, 1, 1), (-1, 1, 2), (-1, 0, 4), (-1, -1, 8), (0, -1, 16), (1, -1, 32), (1, 0, 64), (1, 1, 128))


@functools.lru_cache(maxsize=1)
def _guo_hall_tables() -> tuple[np.ndarray, np.ndarray]:
    """Deletion tables of Guo & Hall's two-subiteration thinning (Comm. ACM 32(3), 1989, algorithm A1) over the
    256 codes of ``_CODE_BITS`` (bit k-1 is the paper's neighbour x_k: x1 east, then counter-clockwise). A pixel
    is deleted when G1 (exactly one 4-connected transition), G2 (2 <= min(n1, n2) <= 3) and G3 (first
    subiteration) or G3' (second) hold."""
    first, second = np.zeros(256, bool), np.zeros(256, bool)
    for code in range(256):
        x = [(code >> k) & 1 for k in range(8)]  # x[k] is the paper's x_{k+1}
        g1 = sum(1 for k in (0, 2, 4, 6) if not x[k] and (x[k + 1] or x[(k + 2) % 8])) == 1
        n1 = sum(1 for k in (1, 3, 5, 7) if x[k] or x[k - 1])
        n2 = sum(1 for k in (1, 3, 5, 7) if x[k] or x[(k + 1) % 8])
        g12 = g1 and 2 <= min(n1, n2) <= 3
        first[code] = g12 and not ((x[1] or x[2] or not x[7]) and x[0])
        second[code] = g12 and not ((x[5] or x[6] or not x[3]) and x[4])
    return first, second


def _thin(binary: np.ndarray) -> np.ndarray:
    """``bwmorph(binary, 'thin', inf)``: the Guo-Hall two-subiteration thinning, the same as scikit-image's
    ``skimage.morphology.thin`` bit for bit (tested), but evaluated only on *border* pixels.

    A pixel can only be deleted when one of its 4-neighbours is background (condition G1 of the tables), so
    each subiteration computes the neighbourhood codes of the border pixels alone, all from the state before
    the subiteration (the parallel rule), deletes the ones the table marks, and adds the foreground
    4-neighbours of the deleted pixels to the border. scikit-image correlates the whole image twice per
    iteration; thinning the thick blobs that low thresholds of a smooth probability map leave after NMS takes
    dozens of iterations, so this was 97 % of an edge evaluation."""
    first, second = _guo_hall_tables()
    h, w = binary.shape
    width = w + 2
    img = np.zeros((h + 2) * width, np.uint8)  # a zero frame: neighbours never leave the array
    img.reshape(h + 2, width)[1:-1, 1:-1] = binary
    offsets = np.array([dy * width + dx for dy, dx, _ in _CODE_BITS])
    bits = np.array([b for _, _, b in _CODE_BITS], np.int64)
    four = offsets[::2]
    fg = np.flatnonzero(img)
    border = fg[(img[fg[:, None] + four] == 0).any(1)]
    in_border = np.zeros(img.size, bool)
    in_border[border] = True
    stamp = np.zeros(img.size, np.int64)
    changed = True
    while changed and len(border):
        changed = False
        for lut in (first, second):
            kill = lut[img[border[:, None] + offsets] @ bits]
            if not kill.any():
                continue
            dead = border[kill]
            img[dead] = 0
            in_border[dead] = False
            changed = True
            near = (dead[:, None] + four).ravel()
            near = near[(img[near] == 1) & ~in_border[near]]
            order = np.arange(len(near))
            stamp[near] = order
            near = near[stamp[near] == order]  # each pixel once (the last write of a repeated index wins)
            in_border[near] = True
            border = np.concatenate([border[~kill], near])
    return img.reshape(h + 2, width)[1:-1, 1:-1].astype(bool)


def _thin_skimage(binary: np.ndarray) -> np.ndarray:
    """scikit-image's ``thin`` on the bounding box of the set pixels plus a zero margin (the path before
    ``_thin``; kept for ``trcnas bench``'s before/after comparison)."""
    from skimage.morphology import thin

    ys, xs = np.flatnonzero(binary.any(1)), np.flatnonzero(binary.any(0))
    y0, y1 = max(ys[0] - 1, 0), ys[-1] + 2
    x0, x1 = max(xs[0] - 1, 0), xs[-1] + 2
    out = np.zeros_like(binary)
    out[y0:y1, x0:x1] = thin(binary[y0:y1, x0:x1])
    return out


THINNING = {"border": _thin, "scikit-image": _thin_skimage}


def _disk_offsets(radius: float) -> np.ndarray:
    r = int(math.floor(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    keep = dy * dy + dx * dx <= radius * radius
    return np.stack([dy[keep], dx[keep]], 1)


def image_counts(prob: np.ndarray, gt: np.ndarray, max_dist: float, thresholds: np.ndarray,
                 nms: bool = True, thin: bool = True, valid: np.ndarray | None = None,
                 thinning: str = "border") -> np.ndarray:
    """BSDS counts of one image: a 4 x T array (matched label pixels, label pixels, matched predicted pixels,
    predicted pixels) per threshold. ``gt``: boolean edge map (one pixel thin); ``valid``: pixels that count
    (outside it, e.g. padding, neither predictions nor labels are counted); ``thinning``: a key of ``THINNING``
    (the same result either way)."""
    gt = np.asarray(gt, dtype=bool)
    p = edge_nms(prob) if nms else np.asarray(prob, dtype=np.float64)
    if valid is not None:
        p = np.where(valid, p, 0.0)
        gt = gt & valid
    h, w = gt.shape
    counts = np.zeros((4, len(thresholds)))
    n_gt = int(gt.sum())
    counts[1] = n_gt
    cand = p >= thresholds.min()
    if not cand.any():
        return counts
    # candidate predicted pixels (a superset at every threshold) and their label neighbours within the radius
    cy, cx = np.nonzero(cand)
    cand_id = np.full((h, w), -1, dtype=np.int64)
    cand_id[cy, cx] = np.arange(len(cy))
    gt_id = np.full((h, w), -1, dtype=np.int64)
    gy, gx = np.nonzero(gt)
    gt_id[gy, gx] = np.arange(n_gt)
    rows, cols = [], []
    if n_gt:
        for dy, dx in _disk_offsets(max_dist * math.hypot(h, w)):
            ty, tx = cy + dy, cx + dx
            inside = (ty >= 0) & (ty < h) & (tx >= 0) & (tx < w)
            idx = np.nonzero(inside)[0]
            g = gt_id[ty[idx], tx[idx]]
            hit = g >= 0
            rows.append(idx[hit])
            cols.append(g[hit])
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    graph = sparse.csr_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(len(cy), max(n_gt, 1)))
    linked = np.diff(graph.indptr) > 0
    previous = None
    for i, t in enumerate(thresholds):
        binary = p >= t
        if not binary.any():
            break  # thresholds only grow: nothing is predicted above this one either
        if thin:
            binary = THINNING[thinning](binary)
        ids = cand_id[binary]
        counts[3, i] = len(ids)
        ids = ids[linked[ids]]
        if len(ids) == 0:
            continue
        ids = np.sort(ids)
        if previous is not None and np.array_equal(previous[0], ids):  # same set as at the last threshold
            matched = previous[1]
        else:
            matched = _max_matching(graph[ids])
            previous = (ids, matched)
        counts[0, i] = matched
        counts[2, i] = matched
    return counts


def _max_matching(graph: sparse.csr_matrix) -> int:
    """Cardinality of a maximum matching of a bipartite graph (rows x columns), as a unit-capacity max flow
    (Dinic). SciPy's ``maximum_bipartite_matching`` is not used: its Hopcroft-Karp search takes exponential
    time on layered graphs (scipy/scipy#26147), which parallel edge chains are."""
    coo = graph.tocoo()
    p, g = graph.shape
    n = p + g + 2
    rows = np.concatenate([np.zeros(p, np.int64), 1 + coo.row, 1 + p + np.arange(g)])
    cols = np.concatenate([1 + np.arange(p), 1 + p + coo.col, np.full(g, n - 1)])
    net = sparse.csr_matrix((np.ones(len(rows), np.int32), (rows, cols)), shape=(n, n))
    return int(maximum_flow(net, 0, n - 1, method="dinic").flow_value)


def _f(p, r):
    p, r = np.asarray(p, float), np.asarray(r, float)
    den = p + r
    return np.where(den > 0, 2 * p * r / np.where(den > 0, den, 1), 0.0)


def _pr(c: np.ndarray):
    rec = c[0] / np.where(c[1] > 0, c[1], 1)
    prec = c[2] / np.where(c[3] > 0, c[3], 1)
    return prec, rec


def interpolated_max_f(thresholds, prec, rec):
    """BSDS ``maxF``: the best F on the polyline through the (threshold, R, P) points, 100 steps per segment."""
    best = (float(thresholds[0]), float(rec[0]), float(prec[0]), float(_f(prec[0], rec[0])))
    d = np.linspace(0, 1, 101)
    for i in range(1, len(thresholds)):
        t = thresholds[i] * d + thresholds[i - 1] * (1 - d)
        r = rec[i] * d + rec[i - 1] * (1 - d)
        p = prec[i] * d + prec[i - 1] * (1 - d)
        f = _f(p, r)
        j = int(f.argmax())
        if f[j] > best[3]:
            best = (float(t[j]), float(r[j]), float(p[j]), float(f[j]))
    return best


def summarize(per_image: np.ndarray, thresholds: np.ndarray) -> dict[str, float]:
    """ODS / OIS / AP (in %) from per-image counts (N x 4 x T)."""
    if len(per_image) == 0:
        return {"odsF": float("nan"), "oisF": float("nan"), "AP": float("nan")}
    total = per_image.sum(0)
    prec, rec = _pr(total)
    t, r, p, f = interpolated_max_f(thresholds, prec, rec)
    best = np.zeros(4)
    for c in per_image:  # OIS: each image at its own best threshold
        ip, ir = _pr(c)
        best += c[:, int(_f(ip, ir).argmax())]
    op, orc = _pr(best[:, None])
    ru, iu = np.unique(rec, return_index=True)
    ap = float(np.interp(np.arange(0, 1, 0.01), ru, prec[iu], left=0.0, right=0.0).sum() * 0.01) if len(ru) > 1 \
        else 0.0
    return {"odsF": f * 100, "odsP": p * 100, "odsR": r * 100, "threshold": t,
            "oisF": float(_f(op[0], orc[0])) * 100, "AP": ap * 100}
