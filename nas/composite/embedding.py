"""The task representation block: task codes -> FC network (LeakyReLU 0.2) -> one embedding per task.

``TaskEmbedding`` has a fixed depth (Linear layers) and width (units of every layer, also the embedding's
channels); every layer ends in the activation, the last one too, as in the paper. ``SearchTaskEmbedding`` is
its supergraph: a network of the largest depth and width whose depth is a Gumbel mixture over exits (the
output of layer d, for every candidate d) and whose
width is a Gumbel mixture over channel masks (the first w units of every layer). A mask keeps the first w
units scaled by sqrt(max width / w), so every candidate width starts with the activation scale of its own
Kaiming-initialised network; a masked layer then computes exactly what the sliced ``TaskEmbedding`` layer of
width w computes with weights and bias times that scale, and retraining builds that size.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from trcnas.nas.search.mixed import MixedOp
from trcnas.spaces.space import Decision

SLOPE = 0.2
# how the FC layers start: kaiming (normal weights at the LeakyReLU(0.2) gain, zero bias: every layer keeps its
# input's scale) or torch (PyTorch's nn.Linear default, U(+-1/sqrt(fan_in)) for weights and bias: the
# reference's; each layer shrinks its input's scale about 2.4x, so at depth 6 the biases dominate the output)
EMBEDDING_INITS = ("kaiming", "torch")


def _linear(cin: int, cout: int, init: str = "kaiming") -> nn.Linear:
    if init not in EMBEDDING_INITS:
        raise ValueError(f"embedding init must be one of {EMBEDDING_INITS}, got {init!r}")
    layer = nn.Linear(cin, cout)  # torch: as constructed
    if init == "kaiming":
        nn.init.kaiming_normal_(layer.weight, a=SLOPE, nonlinearity="leaky_relu")
        nn.init.zeros_(layer.bias)
    return layer


def task_codes(num_tasks: int, code_length: int = 20) -> torch.Tensor:
    """K x (code_length * K): task k has ones in its own block, zeros elsewhere; rows L2-normalised."""
    z = torch.zeros(num_tasks, code_length * num_tasks)
    for k in range(num_tasks):
        z[k, k * code_length:(k + 1) * code_length] = 1.0
    return F.normalize(z, dim=1)


class TaskEmbedding(nn.Module):
    def __init__(self, num_tasks: int, depth: int, width: int, code_length: int = 20, init: str = "kaiming"):
        super().__init__()
        self.register_buffer("codes", task_codes(num_tasks, code_length), persistent=False)
        dims = [code_length * num_tasks] + [width] * depth
        self.layers = nn.ModuleList(_linear(a, b, init) for a, b in zip(dims[:-1], dims[1:]))
        self.out_channels = width

    def forward(self) -> torch.Tensor:
        h = self.codes
        for layer in self.layers:
            h = F.leaky_relu(layer(h), SLOPE)  # the paper's FC layers all end in LeakyReLU(0.2), the last too
        return h  # K x width


class _Exit(nn.Module):
    def __init__(self, depth: int):
        super().__init__()
        self.depth = depth


class _WidthMask(nn.Module):
    def __init__(self, width: int, max_width: int):
        super().__init__()
        scale = (max_width / width) ** 0.5
        self.register_buffer("mask", (torch.arange(max_width) < width).float() * scale, persistent=False)


class SearchTaskEmbedding(nn.Module):
    """``depth`` / ``width``: the space's Decisions over the network's depth and width."""

    def __init__(self, num_tasks: int, depth: Decision, width: Decision, code_length: int = 20,
                 init: str = "kaiming"):
        super().__init__()
        self.register_buffer("codes", task_codes(num_tasks, code_length), persistent=False)
        depths, widths = [int(d) for d in depth.candidates], [int(w) for w in width.candidates]
        wmax, dmax = max(widths), max(depths)
        dims = [code_length * num_tasks] + [wmax] * dmax
        self.layers = nn.ModuleList(_linear(a, b, init) for a, b in zip(dims[:-1], dims[1:]))
        self.depth = MixedOp.of(depth, [_Exit(d) for d in depths])
        self.width = MixedOp.of(width, [_WidthMask(w, wmax) for w in widths])
        self.out_channels = wmax

    def forward(self) -> torch.Tensor:
        mask = self.width(lambda op: op.mask)
        depth_sel = self.depth.selection()
        last = max(self.depth.candidates[i] for i, _ in depth_sel)
        exits, h = {}, self.codes
        for d, layer in enumerate(self.layers[:last], start=1):
            h = F.leaky_relu(layer(h) * mask, SLOPE)
            exits[d] = h
        return self.depth.apply(depth_sel, lambda op: exits[op.depth])  # K x max width (masked)
