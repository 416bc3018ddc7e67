"""Data-parallel training across processes (DDP: gloo on CPUs, NCCL on GPUs), as Ray Train workers run it.

Every rank builds the same model from the same seed, takes its equal slice of each global batch, and
normalises with statistics of the whole global batch, so N workers compute the gradients of one worker
on the same global batch. Architecture sampling draws from the search's own generator, identical on every
rank. Only rank 0 writes files.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.nn.functional import all_reduce
from torch.nn.parallel import DistributedDataParallel


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm (1d or 2d) whose training statistics cover every rank's batch (differentiable
    all-reduce). The CPU counterpart of ``nn.SyncBatchNorm``, which only runs on accelerators."""

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world()[1] == 1:
            return super().forward(x)

        c = x.shape[1]
        xf = x.float()
        xd = x.double()  # sums of x and x^2 in float64: E[x^2] - E[x]^2 cancels badly in float32
        dims = [0, *range(2, x.dim())]
        local = torch.cat([xd.sum(dims), (xd * xd).sum(dims), xd.new_full((1,), x.numel() // c)])
        total = all_reduce(local)
        n = total[-1]
        mean = total[:c] / n
        var = (total[c:2 * c] / n - mean * mean).clamp_min(0)
        mean, var, n = mean.float(), var.float(), n.float()
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1).clamp_min(1), alpha=m)
                self.num_batches_tracked.add_(1)
        shape = (1, c) + (1,) * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replaces every BatchNorm2d in place by its cross-rank version (``SyncBatchNorm`` on accelerators,
    ``GlobalBatchNorm`` on CPU), keeping the same Parameter objects and buffers."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) in (nn.BatchNorm1d, nn.BatchNorm2d):
            new = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats)
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            if child.track_running_stats:
                new.running_mean, new.running_var = child.running_mean, child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            convert_batchnorm(child, device)
    return module


class TrainForward(nn.Module):
    """``forward(batch)`` = the model's training forward, so DDP can wrap models whose forward needs more
    than the image (CompositeTasking's palette)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model.forward_batch(batch)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The DDP module for the training forward (unused parameters allowed: frozen decisions skip ops)."""
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(TrainForward(model), device_ids=ids, find_unused_parameters=True)


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of a (detached) tensor over the ranks (every rank gets it)."""
    if world()[1] == 1:
        return value
    t = value.detach().float().clone()
    dist.all_reduce(t)
    return t / world()[1]
