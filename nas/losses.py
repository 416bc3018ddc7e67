"""Per-task losses. Predictions and targets are at the same (label) resolution."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from trcnas.nas.tensorops import channel_norm, cosine, downsample_nearest, masked_mean, unit, upsample_to

if TYPE_CHECKING:
    from trcnas.nas.tasks import Task

IGNORE = 255


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if not (target != IGNORE).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target.long(), ignore_index=IGNORE)


def masked_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 on pixels with a valid (positive) target."""
    valid = target > 0
    if not valid.any():
        return pred.sum() * 0.0
    return masked_mean((pred - target).abs(), valid)


def normals_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between the L2-normalised prediction and the unit target, on pixels with a non-zero target."""
    valid = channel_norm(target, keepdim=True) > 0.5
    if not valid.any():
        return pred.sum() * 0.0
    return masked_mean((unit(pred) - target).abs(), valid)


def balanced_bce(logits: torch.Tensor, target: torch.Tensor, pos_weight: float | None = None) -> torch.Tensor:
    """Weighted binary cross-entropy. With ``pos_weight`` w: w on positives, 1 - w on negatives (ATRC edges);
    without: the weight is the batch's negative fraction (balanced BCE for saliency). 255 is ignored."""
    t = target.float()
    valid = t != IGNORE
    t = torch.where(valid, t, torch.zeros_like(t))
    if pos_weight is None:
        pos = (t * valid).sum()
        w = 1.0 - pos / valid.sum().clamp_min(1)
    else:
        w = torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    weight = torch.where(t > 0.5, w, 1 - w) * valid
    loss = F.binary_cross_entropy_with_logits(logits, t, weight=weight, reduction="sum")
    return loss / valid.sum().clamp_min(1)


def normals_cosine(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - cos(pred, target) on pixels with a non-zero target (CompositeTasking's normals loss)."""
    valid = channel_norm(target) > 0.5
    if not valid.any():
        return pred.sum() * 0.0
    return masked_mean(1 - cosine(pred, target, eps=1e-6), valid)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (1 - p_t)^gamma * CE over labelled pixels (IGNORE skipped)."""
    valid = target != IGNORE
    if not valid.any():
        return logits.sum() * 0.0
    t = torch.where(valid, target.long(), torch.zeros_like(target.long()))
    logp = torch.log_softmax(logits.float(), dim=1).gather(1, t[:, None])[:, 0]
    return masked_mean(-(1 - logp.exp()) ** gamma * logp, valid)


def probe_loss(task: Task, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """A probe's loss (``search.selection: probes``): the task's loss at the probe's own (feature) resolution,
    against nearest-downsampled labels as the aux heads' loss, so the many probes cost less than full-resolution
    heads (measured on synthetic-relations' 76 probes, one thread: 0.44 s of a 1.6 s step at full resolution,
    0.06 s at feature resolution)."""
    return task.loss(pred.float(), downsample_nearest(label, pred.shape[-2:]))


def compute_losses(out: dict, batch: dict, tasks: Mapping[str, Task], weights: Mapping[str, float]):
    """-> (total, {name: detached value}). Final, aux and intermediate (``out["inter"][scale]``, multi-scale
    decoders) losses use the same per-task weight; intermediate losses are averaged over the scales that
    produced them, so they weigh as much as the final loss together whatever the number of placed blocks."""
    size = batch["image"].shape[-2:]
    total = 0.0
    parts = {}
    for t, task in tasks.items():
        w = float(weights.get(t, 1.0))
        loss = task.loss(upsample_to(out["pred"][t].float(), size), batch[t])
        parts[t] = loss.detach()
        total = total + w * loss
        if t in out["aux"]:  # aux CE at feature resolution against nearest-downsampled labels (cheaper)
            logits = out["aux"][t].float()
            aux = task.aux_loss(logits, downsample_nearest(batch[t], logits.shape[-2:]))
            parts[f"aux_{t}"] = aux.detach()
            total = total + w * aux
    for t, preds in out.get("probes", {}).items():  # a probe supergraph: each candidate's own prediction, mean
        if preds:
            loss = torch.stack([probe_loss(tasks[t], p, batch[t]) for p in preds.values()]).mean()
            parts[f"probes_{t}"] = loss.detach()
            total = total + float(weights.get(t, 1.0)) * loss
    inter = out.get("inter", {})
    for k, preds in inter.items():  # averaged over the placed scales (xTAM supplement)
        for t, p in preds.items():
            loss = tasks[t].loss(upsample_to(p.float(), size), batch[t])
            parts[f"inter{k}_{t}"] = loss.detach()
            total = total + float(weights.get(t, 1.0)) * loss / len(inter)
    return total, parts
