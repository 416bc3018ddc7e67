"""Dataset-level metric meters (accumulate totals over the whole split, never batch averages) and Delta_m.

Each meter has ``update(pred, target)`` on one batch of full-resolution predictions,
``compute() -> dict`` and ``reset()`` which clears *every* total.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from trcnas.nas.boundary import bsds_thresholds, image_counts, summarize
from trcnas.nas.pool import WorkerPool
from trcnas.nas.tensorops import channel_norm, unit

IGNORE = 255


class Meter:
    def reset(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:  # pragma: no cover
        raise NotImplementedError

    def compute(self) -> dict[str, float]:  # pragma: no cover
        raise NotImplementedError


class ConfusionMeter(Meter):
    """mIoU (%) from a confusion matrix accumulated over the dataset; pixels labelled 255 are ignored.

    pred: B x K x H x W logits or B x H x W class indices; target: B x H x W.
    The mean runs over all ``num_classes`` classes, as the ATRC reference (and the multi-task survey code) do:
    a class absent from both prediction and ground truth of the whole dataset counts with IoU 0.
    """

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred, target):
        if pred.dim() == target.dim() + 1:
            pred = pred.argmax(1)
        p = pred.reshape(-1).cpu().numpy().astype(np.int64)
        t = target.reshape(-1).cpu().numpy().astype(np.int64)
        keep = t != IGNORE
        k = self.num_classes
        self.confusion += np.bincount(t[keep] * k + p[keep], minlength=k * k).reshape(k, k)

    def compute(self):
        c = self.confusion
        inter = np.diag(c).astype(np.float64)
        union = c.sum(0) + c.sum(1) - np.diag(c)
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        acc = inter.sum() / max(c.sum(), 1)
        return {"mIoU": float(iou.mean() * 100), "pixel_acc": float(acc * 100)}


class DigitMeter(ConfusionMeter):
    """Labels that are joint codes of several digits (class = sum of digit_k * place_k, places the running
    product of the radices): every digit's own mIoU (%) over its ``radix`` values, ``iou_<name>``, and their mean
    as ``digit_mIoU``. ``digits``: ``[(name, radix), ...]``, least significant first. Predictions are joint codes
    (B x H x W) or factorised logits (B x sum(radices) x H x W: each digit's logits in turn)."""

    def __init__(self, digits: list[tuple[str, int]]):
        self.digits = [(str(n), int(r)) for n, r in digits]
        super().__init__(int(np.prod([r for _, r in self.digits])))

    def update(self, pred, target):
        if pred.dim() == target.dim() + 1:
            pred = joint_code(pred, [r for _, r in self.digits])
        super().update(pred, target)

    def compute(self):
        c = self.confusion
        codes = np.arange(self.num_classes)
        out, place = {}, 1
        for name, radix in self.digits:
            value = (codes // place) % radix
            place *= radix
            onehot = np.eye(radix, dtype=np.int64)[value]  # classes x radix
            m = onehot.T @ c @ onehot  # radix x radix confusion of this digit
            inter = np.diag(m).astype(np.float64)
            union = m.sum(0) + m.sum(1) - inter
            iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
            out[f"iou_{name}"] = float(iou.mean() * 100)
        out["digit_mIoU"] = float(np.mean([out[f"iou_{n}"] for n, _ in self.digits]))
        out["pixel_acc"] = float(np.diag(c).sum() / max(c.sum(), 1) * 100)
        return out


def joint_code(logits: torch.Tensor, radices: list[int]) -> torch.Tensor:
    """Factorised logits (B x sum(radices) x ...) -> the joint code of each digit's argmax."""
    code, place, start = torch.zeros_like(logits[:, 0], dtype=torch.long), 1, 0
    for r in radices:
        code += logits[:, start : start + r].argmax(1) * place
        start, place = start + r, place * r
    return code


class DepthMeter(Meter):
    """RMSE and mean absolute error in metres over all valid pixels of the dataset (invalid: depth <= 0).
    Predictions are clamped at 0 first, as the ATRC reference does (a depth cannot be negative)."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.sq = 0.0
        self.abs = 0.0
        self.n = 0

    def update(self, pred, target):
        pred = pred.reshape(target.shape).double().clamp_min(0.0)
        t = target.double()
        valid = t > 0
        diff = (pred - t)[valid]
        self.sq += float((diff**2).sum())
        self.abs += float(diff.abs().sum())
        self.n += int(valid.sum())

    def compute(self):
        if self.n == 0:
            return {"rmse": float("nan"), "mae": float("nan")}
        return {"rmse": math.sqrt(self.sq / self.n), "mae": self.abs / self.n}


def angular_error_deg(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Angle between unit vectors along dim 1 as 2*atan2(|p - t|, |p + t|), in degrees (stable near 0 and 180)."""
    return torch.rad2deg(2 * torch.atan2(channel_norm(pred - target), channel_norm(pred + target)))


class NormalsMeter(Meter):
    """Mean and median angular error (degrees) and % of pixels within 11.25/22.5/30 degrees.

    Invalid ground truth (norm < 0.5, e.g. all zeros) is skipped. ``rmse`` is the root mean square of the
    angle, reported separately from the mean (a known mix-up in public code)."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.sum = 0.0
        self.sq = 0.0
        self.n = 0
        self.within = np.zeros(3, dtype=np.int64)
        self.hist = np.zeros(1801, dtype=np.int64)  # 0.1 degree bins for the median

    def update(self, pred, target):
        p = unit(pred.double())
        t = target.double()
        valid = channel_norm(t) > 0.5
        t = unit(t)
        ang = angular_error_deg(p, t)[valid]
        self.sum += float(ang.sum())
        self.sq += float((ang**2).sum())
        self.n += int(ang.numel())
        a = ang.cpu().numpy()
        self.within += np.array([(a < 11.25).sum(), (a < 22.5).sum(), (a < 30).sum()])
        self.hist += np.bincount(np.clip(np.round(a * 10).astype(np.int64), 0, 1800), minlength=1801)

    def compute(self):
        if self.n == 0:
            return {"mean": float("nan")}
        med = float(np.searchsorted(np.cumsum(self.hist), self.n / 2) / 10)
        w = self.within / self.n * 100
        return {
            "mean": self.sum / self.n,
            "median": med,
            "rmse": math.sqrt(self.sq / self.n),
            "within11.25": float(w[0]),
            "within22.5": float(w[1]),
            "within30": float(w[2]),
        }


def _thresholds(step: float = 0.05) -> np.ndarray:
    n = int(round((1 - step) / step))
    return np.round(np.arange(1, n + 1) * step, 6)


def f_measure(precision, recall, beta2: float = 1.0):
    precision, recall = np.asarray(precision, float), np.asarray(recall, float)
    den = beta2 * precision + recall
    return np.where(den > 0, (1 + beta2) * precision * recall / np.where(den > 0, den, 1), 0.0)


class SaliencyMeter(Meter):
    """Max F-measure (%) with beta^2 = 0.3 over thresholds 0.05..0.95, counts accumulated over the dataset.

    pred: probabilities (or logits with ``from_logits``) B x 1 x H x W; target {0, 1} (255 ignored)."""

    def __init__(self, beta2: float = 0.3, from_logits: bool = True):
        self.beta2, self.from_logits = beta2, from_logits
        self.thresholds = torch.tensor(_thresholds(0.05))
        self.reset()

    def reset(self):
        k = len(self.thresholds)
        self.tp = np.zeros(k)
        self.fp = np.zeros(k)
        self.fn = np.zeros(k)

    def update(self, pred, target):
        prob = torch.sigmoid(pred) if self.from_logits else pred
        prob = prob.reshape(-1).double().cpu()
        t = target.reshape(-1).cpu()
        keep = t != IGNORE
        prob, pos = prob[keep], t[keep] > 0
        above = prob[None, :] > self.thresholds[:, None]
        self.tp += (above & pos).sum(1).numpy()
        self.fp += (above & ~pos).sum(1).numpy()
        self.fn += (~above & pos).sum(1).numpy()

    def compute(self):
        prec = self.tp / np.maximum(self.tp + self.fp, 1e-12)
        rec = self.tp / np.maximum(self.tp + self.fn, 1e-12)
        f = f_measure(prec, rec, self.beta2)
        i = int(f.argmax())
        return {"maxF": float(f[i] * 100), "threshold": float(self.thresholds[i])}


def _edge_counts(job) -> np.ndarray:
    prob, gt, max_dist, thresholds, nms, valid = job
    return image_counts(prob, gt, max_dist, thresholds, nms=nms, valid=valid)


class EdgeMeter(Meter):
    """Boundary detection with the BSDS protocol (``nas/boundary.py``): edge NMS with border suppression, then
    at each of ``n_thresholds`` thresholds (0.01..0.99 for 99) morphological thinning and a one-to-one
    correspondence with the label's edge pixels within ``max_dist`` x image diagonal. Reports ODS-F (dataset
    scale, BSDS's interpolated maximum), OIS-F (per-image scale) and AP (area under the PR curve), all in %.

    pred: B x 1 x H x W logits (``from_logits``) or probabilities; target: B x 1 x H x W with 1 on edges, 0
    elsewhere and 255 for ignored pixels (e.g. padding), where neither predictions nor labels are counted."""

    def __init__(self, max_dist: float = 0.011, n_thresholds: int = 99, from_logits: bool = True, nms: bool = True):
        self.max_dist, self.from_logits, self.nms = max_dist, from_logits, nms
        self.thresholds = bsds_thresholds(n_thresholds)
        self._pool = WorkerPool()  # per-image counts on train.eval_workers processes, ended by compute()
        self.reset()

    def reset(self):
        self.per_image: list[np.ndarray] = []  # 4 x T counts of each image (OIS needs them separately)

    def update(self, pred, target):
        prob = torch.sigmoid(pred) if self.from_logits else pred
        prob = prob.reshape(target.shape[0], *target.shape[-2:]).double().cpu().numpy()
        tgt = target.reshape(prob.shape).cpu().numpy()
        jobs = []
        for p, t in zip(prob, tgt):
            valid = t != IGNORE
            if not valid.all() and valid.any():  # padding of a batch is at the bottom/right: the image's extent
                rows, cols = np.flatnonzero(valid.any(1)), np.flatnonzero(valid.any(0))
                p, t, valid = (a[: rows[-1] + 1, : cols[-1] + 1] for a in (p, t, valid))
            jobs.append((p, (t > 0) & valid, self.max_dist, self.thresholds, self.nms, None if valid.all() else valid))
        # per image and independent: on the evaluation worker processes (nas/pool.py), same counts in order
        self.per_image.extend(self._pool.map(_edge_counts, jobs))

    def counts(self) -> np.ndarray:
        """Dataset totals, 4 x T: matched label pixels, label pixels, matched predictions, predictions."""
        return np.sum(self.per_image, 0) if self.per_image else np.zeros((4, len(self.thresholds)))

    def compute(self):
        self._pool.close()  # the evaluation is over: no worker outlives it (a later update starts new ones)
        return summarize(np.asarray(self.per_image), self.thresholds)


def delta_m(
    metrics: Mapping[str, float], baselines: Mapping[str, float], higher_is_better: Mapping[str, bool]
) -> float:
    """Delta_m (%) = mean_t (-1)^{g_t} (M_t - B_t) / B_t * 100, g_t = 1 where lower is better. A baseline of 0
    (e.g. an untrained single-task edge network with no matched boundary pixel) leaves the relative change
    undefined: Delta_m is then NaN rather than an error at the end of a long table."""
    terms = []
    for task, base in baselines.items():
        if task not in metrics:
            raise KeyError(f"no metric for task {task!r} to compare with its baseline")
        sign = 1.0 if higher_is_better[task] else -1.0
        terms.append(sign * (metrics[task] - base) / base * 100.0 if base != 0 else float("nan"))
    if not terms:
        raise ValueError("Delta_m needs at least one task baseline")
    return float(np.mean(terms))
