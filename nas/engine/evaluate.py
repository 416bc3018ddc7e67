"""Evaluation over a whole split, losses, primary metrics and Delta_m."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from trcnas.nas.metrics import delta_m
from trcnas.nas.models.multitask import upsample_to
from trcnas.nas.progress import bar
from trcnas.nas.tasks import Task


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


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
    inter = out.get("inter", {})
    for k, preds in inter.items():  # averaged over the placed scales (xTAM supplement)
        for t, p in preds.items():
            loss = tasks[t].loss(upsample_to(p.float(), size), batch[t])
            parts[f"inter{k}_{t}"] = loss.detach()
            total = total + float(weights.get(t, 1.0)) * loss / len(inter)
    return total, parts


def downsample_nearest(label: torch.Tensor, size) -> torch.Tensor:
    if label.shape[-2:] == tuple(size):
        return label
    x = label[:, None] if label.dim() == 3 else label
    y = torch.nn.functional.interpolate(x.float(), size=tuple(size), mode="nearest").to(label.dtype)
    return y[:, 0] if label.dim() == 3 else y


@torch.no_grad()
def evaluate(model, loader, tasks: Mapping[str, Task], device, progress: bool = False,
             bf16: bool = False) -> dict[str, dict[str, float]]:
    """Metrics of every task accumulated over the loader."""
    model.eval()
    meters = {t: task.meter() for t, task in tasks.items()}
    for batch in bar(loader, desc="evaluating", enabled=progress, leave=False):
        batch = to_device(batch, device)
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            out = model.predict(batch)
        size = batch["image"].shape[-2:]
        for t in tasks:
            meters[t].update(upsample_to(out["pred"][t].float(), size), batch[t])
    return {t: m.compute() for t, m in meters.items()}


@torch.no_grad()
def validation_loss(model, loader, tasks: Mapping[str, Task], weights: Mapping[str, float], device,
                    batches: int | None = None) -> float:
    """The mean over val images of the weighted training objective (every task's loss and aux loss), on the
    first ``batches`` batches (None: all): perturbation-based selection's score."""
    model.eval()
    total, n = 0.0, 0
    for k, batch in enumerate(loader):
        if batches is not None and k >= batches:
            break
        batch = to_device(batch, device)
        loss, _ = model.compute_losses(model.forward_batch(batch), batch, tasks, weights)
        total += float(loss) * batch["image"].shape[0]
        n += batch["image"].shape[0]
    return total / max(n, 1)


def primary(metrics: Mapping[str, Mapping[str, float]], tasks: Mapping[str, Task]) -> dict[str, float]:
    return {t: metrics[t][task.metric] for t, task in tasks.items()}


def delta_m_of(metrics, tasks: Mapping[str, Task], baselines: Mapping[str, float]) -> float | None:
    """Delta_m against the single-task baselines (None when not every task has one)."""
    if not baselines or any(t not in baselines for t in tasks):
        return None
    return delta_m(primary(metrics, tasks), {t: baselines[t] for t in tasks},
                   {t: task.higher_is_better for t, task in tasks.items()})
