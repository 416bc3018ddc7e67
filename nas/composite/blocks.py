"""The task composition block (CompositeTasking Fig. 4) and the palette embedding pyramid."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

BLOCK_SLOPE = 0.01  # the reference's task composition blocks: nn.LeakyReLU() (PyTorch's default)


class TaskCompositionBlock(nn.Module):
    """conv (3x3 in the decoder, 1x1 in the skip connections, as the reference) -> parameter-free BN ->
    gamma * x + beta -> LeakyReLU, with per-pixel gamma and beta from the palette embedding at this scale
    (two 1x1 conv layers; final bias initialised to gamma 1, beta 0). The embedding may be B x E x 1 x 1 (one
    task per image: Task Switching), then gamma/beta broadcast. ``slope``: of both LeakyReLUs (the reference's
    blocks use PyTorch's default, 0.01; its embedding network uses 0.2). ``hidden``: the width of the gamma/beta
    network's hidden layer (None: the block's output width; the reference: 128 or 256 by level)."""

    def __init__(self, cin: int, cout: int, emb_channels: int, kernel_size: int = 3, slope: float = BLOCK_SLOPE,
                 hidden: int | None = None):
        super().__init__()
        self.slope = slope
        hidden = hidden or cout
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.BatchNorm2d(cout, affine=False)
        self.film = nn.Sequential(nn.Conv2d(emb_channels, hidden, 1), nn.LeakyReLU(slope),
                                  nn.Conv2d(hidden, 2 * cout, 1))
        nn.init.constant_(self.film[2].bias[:cout], 1.0)
        nn.init.zeros_(self.film[2].bias[cout:])

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(emb).chunk(2, dim=1)
        return F.leaky_relu(self.norm(self.conv(x)) * gamma + beta, self.slope)


def palette_pyramid(palette_onehot: torch.Tensor, sizes,
                    antialias: bool = False) -> dict[tuple[int, int], torch.Tensor]:
    """The one-hot palette at every size in ``sizes``, by repeated 2x bilinear halving from the input, as the
    reference builds its embedding pyramid (``F.interpolate(..., size=half, mode="bilinear")``, no antialiasing:
    at an exact factor of 2 that averages each 2x2 cell, so a level's value is the share of each task in its
    cell of the input), then, for a size that halving does not reach exactly (the reference only takes inputs
    divisible by 32), a final antialiased resize. ``antialias``: antialiased halving instead (a triangle filter
    over 4 x 4 input pixels, not the reference's; a deviation kept as an option)."""
    out, p = {}, palette_onehot
    want = sorted({tuple(s) for s in sizes}, key=lambda s: -s[0] * s[1])
    for size in want:
        if p.shape[-1] == 1:  # one task per image (Task Switching): broadcasts at every size
            out[size] = p
            continue
        while p.shape[-2] >= 2 * size[0] and p.shape[-1] >= 2 * size[1]:
            p = F.interpolate(p, size=(p.shape[-2] // 2, p.shape[-1] // 2), mode="bilinear", align_corners=False,
                              antialias=antialias)
        out[size] = p if tuple(p.shape[-2:]) == size else F.interpolate(p, size=size, mode="bilinear",
                                                                        align_corners=False, antialias=True)
    return out


def embedding_map(palette: torch.Tensor, task_embeddings: torch.Tensor) -> torch.Tensor:
    """The palette's embedding from its (downsampled) one-hot map: the task embeddings mixed by each pixel's
    task shares (the same as downsampling the broadcast embedding, K times cheaper)."""
    return torch.einsum("bkhw,kc->bchw", palette, task_embeddings.to(palette.dtype))
