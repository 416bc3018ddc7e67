"""The task composition block (CompositeTasking Fig. 4) and the palette embedding pyramid."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.composite.embedding import SLOPE


class TaskCompositionBlock(nn.Module):
    """conv 3x3 -> parameter-free BN -> gamma * x + beta -> LeakyReLU, with per-pixel gamma and beta from
    the palette embedding at this scale (two 1x1 conv layers; final bias initialised to gamma 1, beta 0).
    The embedding may be B x E x 1 x 1 (one task per image: Task Switching), then gamma/beta broadcast."""

    def __init__(self, cin: int, cout: int, emb_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(cout, affine=False)
        self.film = nn.Sequential(nn.Conv2d(emb_channels, cout, 1), nn.LeakyReLU(SLOPE), nn.Conv2d(cout, 2 * cout, 1))
        nn.init.constant_(self.film[2].bias[:cout], 1.0)
        nn.init.zeros_(self.film[2].bias[cout:])

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(emb).chunk(2, dim=1)
        return F.leaky_relu(self.norm(self.conv(x)) * gamma + beta, SLOPE)


def embedding_map(palette_onehot: torch.Tensor, task_embeddings: torch.Tensor, size) -> torch.Tensor:
    """The palette's embedding at ``size``: bilinear downsampling of the one-hot palette, then the task
    embeddings mixed accordingly (the same as downsampling the broadcast embedding, K times cheaper)."""
    p = palette_onehot
    if p.shape[-2:] != tuple(size) and p.shape[-1] != 1:
        p = F.interpolate(p, size=tuple(size), mode="bilinear", align_corners=False)
    return torch.einsum("bkhw,kc->bchw", p, task_embeddings.to(p.dtype))
