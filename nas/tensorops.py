"""Reductions over the channel axis and masked means, written so the CPU takes its fast paths.

``torch.linalg.vector_norm`` / ``Tensor.norm(dim=1)`` on a B x C x H x W map reduces across a strided axis and
runs about 100x slower on the CPU than the same sum of squares (23 ms vs 0.2 ms for 8 x 3 x 128 x 128), and a
boolean index (``x[mask].mean()``) materialises a copy through ``nonzero``. These helpers compute the same
values (up to floating-point reordering; ``tests/test_losses.py`` pins them against the plain formulas)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _wide(x: torch.Tensor) -> torch.Tensor:
    """``x`` in at least float32 (a bf16 prediction under autocast; a no-op for float32 and float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _sumsq(x: torch.Tensor, keepdim: bool) -> torch.Tensor:
    x = _wide(x)
    return (x * x).sum(1, keepdim=keepdim)


def channel_norm(x: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    """L2 norm along dim 1 (no gradient use: at 0 the square root's gradient is infinite; see ``unit``)."""
    return _sumsq(x, keepdim).sqrt()


def unit(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``F.normalize(x, dim=1, eps=eps)``: x / max(|x|, eps), with a finite gradient at x = 0 (the clamp is
    taken on the squared norm, before the square root)."""
    return x * _sumsq(x, True).clamp_min(eps * eps).rsqrt()


def cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``F.cosine_similarity(a, b, dim=1, eps=eps)``: (a . b) / sqrt(max(|a|^2 |b|^2, eps^2))."""
    dot = (_wide(a) * _wide(b)).sum(1)
    return dot * (_sumsq(a, False) * _sumsq(b, False)).clamp_min(eps * eps).rsqrt()


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x[mask].mean()`` (``mask`` broadcast to ``x``) without a boolean-index copy; NaN when mask is empty."""
    mask = mask.expand_as(x)
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum() / mask.sum()


def upsample_to(pred: torch.Tensor, size) -> torch.Tensor:
    """``pred`` resized bilinearly to ``size`` (itself when it has that size)."""
    if pred.shape[-2:] == tuple(size):
        return pred
    return F.interpolate(pred, size=size, mode="bilinear", align_corners=False)


def downsample_nearest(label: torch.Tensor, size) -> torch.Tensor:
    """A label map (B x H x W or B x C x H x W) resized to ``size`` by nearest neighbour, in its own dtype."""
    if label.shape[-2:] == tuple(size):
        return label
    x = label[:, None] if label.dim() == 3 else label
    y = F.interpolate(x.float(), size=tuple(size), mode="nearest").to(label.dtype)
    return y[:, 0] if label.dim() == 3 else y
