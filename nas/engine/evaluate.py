"""Evaluation over a whole split, losses, primary metrics and Delta_m."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from trcnas.nas.metrics import delta_m
from trcnas.nas.progress import bar
from trcnas.nas.tasks import Task
from trcnas.nas.tensorops import upsample_to


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


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
