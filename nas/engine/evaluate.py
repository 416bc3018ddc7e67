"""Evaluation over a whole split, losses, primary metrics and Delta_m."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager, nullcontext

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


@contextmanager
def batch_norm_on_batches(model: torch.nn.Module):
    """Within: the model's batch norms normalise with each batch's own statistics (the rest of the model as it is
    set); their running statistics are restored afterwards. A single path of a supergraph trained on sampled
    paths meets running statistics averaged over every path; SPOS recalibrates them per path, this is the cheap
    equivalent for batches of a dozen images or more."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.training, {k: v.clone() for k, v in m.named_buffers(recurse=False)}) for m in norms]
    for m in norms:
        m.train()
    try:
        yield model
    finally:
        for m, training, buffers in saved:
            m.train(training)
            for k, v in buffers.items():
                getattr(m, k).copy_(v)


@torch.no_grad()
def validation_loss(model, loader, tasks: Mapping[str, Task], weights: Mapping[str, float], device,
                    batches: int | None = None, batch_stats: bool = False) -> float:
    """The mean over val images of the weighted training objective (every task's loss and aux loss), on the
    first ``batches`` batches (None: all): the score of the selections after a search. ``batch_stats``: batch
    norms use each batch's statistics (``batch_norm_on_batches``)."""
    model.eval()
    total, n = 0.0, 0
    with batch_norm_on_batches(model) if batch_stats else nullcontext():
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
