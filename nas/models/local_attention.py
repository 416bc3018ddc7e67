"""9x9 (any odd window) local softmax attention without a compiled op and without materialising
B x C x K^2 x H x W for the whole map.

out_i = sum_{j in N(i)} softmax_j(q_i . k_j * scale) v_j, where N(i) is the window around i clipped to the
image: neighbours outside the image are *masked out* (excluded from the softmax), not given logit 0 as in
the reference CUDA op. The forward and backward passes run over row bands, unfolding only one band of
keys/values at a time, and save just q, k, v and the B x K^2 x H x W attention weights for backward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _band_rows(h: int, w: int, c: int, window: int, budget: int) -> int:
    """Rows per band so that one unfolded band holds about ``budget`` elements per batch item."""
    per_row = c * window * window * w
    return max(1, min(h, budget // max(per_row, 1)))


def _valid_mask(h, w, window, device, dtype):
    """K^2 x H x W mask of neighbours inside the image."""
    pad = window // 2
    ones = torch.ones(1, 1, h, w, device=device, dtype=dtype)
    return F.unfold(F.pad(ones, (pad, pad, pad, pad)), window).view(window * window, h, w) > 0


class _LocalAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, window: int, scale: float, budget: int):
        b, c, h, w = q.shape
        cv = v.shape[1]
        pad = window // 2
        kk = window * window
        kp = F.pad(k, (pad, pad, pad, pad))
        vp = F.pad(v, (pad, pad, pad, pad))
        mask = _valid_mask(h, w, window, q.device, q.dtype)
        attn = q.new_empty(b, kk, h, w)
        out = q.new_empty(b, cv, h, w)
        rows = _band_rows(h, w, max(c, cv), window, budget)
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            n = r1 - r0
            ku = F.unfold(kp[:, :, r0 : r1 + 2 * pad], window).view(b, c, kk, n, w)
            logits = torch.einsum("bcnw,bcknw->bknw", q[:, :, r0:r1], ku) * scale
            logits = logits.masked_fill(~mask[None, :, r0:r1], float("-inf"))
            a = torch.softmax(logits, dim=1)
            attn[:, :, r0:r1] = a
            vu = F.unfold(vp[:, :, r0 : r1 + 2 * pad], window).view(b, cv, kk, n, w)
            out[:, :, r0:r1] = torch.einsum("bknw,bcknw->bcnw", a, vu)
        ctx.save_for_backward(q, k, v, attn)
        ctx.window, ctx.scale, ctx.rows = window, scale, rows
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, attn = ctx.saved_tensors
        window, scale, rows = ctx.window, ctx.scale, ctx.rows
        b, c, h, w = q.shape
        cv = v.shape[1]
        pad = window // 2
        kk = window * window
        wp = w + 2 * pad
        kp = F.pad(k, (pad, pad, pad, pad))
        vp = F.pad(v, (pad, pad, pad, pad))
        gq = torch.zeros_like(q)
        gkp = torch.zeros_like(kp)
        gvp = torch.zeros_like(vp)
        grad_out = grad_out.contiguous()
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            n = r1 - r0
            a = attn[:, :, r0:r1]
            go = grad_out[:, :, r0:r1]
            vu = F.unfold(vp[:, :, r0 : r1 + 2 * pad], window).view(b, cv, kk, n, w)
            ga = torch.einsum("bcnw,bcknw->bknw", go, vu)
            gl = a * (ga - (a * ga).sum(1, keepdim=True)) * scale  # masked entries have a = 0
            ku = F.unfold(kp[:, :, r0 : r1 + 2 * pad], window).view(b, c, kk, n, w)
            gq[:, :, r0:r1] = torch.einsum("bknw,bcknw->bcnw", gl, ku)
            gku = torch.einsum("bknw,bcnw->bcknw", gl, q[:, :, r0:r1]).reshape(b, c * kk, n * w)
            gkp[:, :, r0 : r1 + 2 * pad] += F.fold(gku, (n + 2 * pad, wp), window)
            gvu = torch.einsum("bknw,bcnw->bcknw", a, go).reshape(b, cv * kk, n * w)
            gvp[:, :, r0 : r1 + 2 * pad] += F.fold(gvu, (n + 2 * pad, wp), window)
        gk = gkp[:, :, pad : pad + h, pad : pad + w]
        gv = gvp[:, :, pad : pad + h, pad : pad + w]
        return gq, gk, gv, None, None, None


def local_attention(q, k, v, window: int = 9, scale: float | None = None, budget: int = 1 << 20):
    """Local attention over a ``window`` x ``window`` neighbourhood. q, k: B x C x H x W; v: B x Cv x H x W.
    ``budget`` bounds the unfolded band size (elements per batch item) and so the peak extra memory."""
    if window % 2 != 1:
        raise ValueError(f"local attention window must be odd, got {window}")
    scale = 1.0 / math.sqrt(q.shape[1]) if scale is None else scale
    return _LocalAttention.apply(q, k, v, window, scale, budget)


def local_attention_unfold(q, k, v, window: int = 9, scale: float | None = None):
    """The naive version (autograd through a full unfold, B x C x K^2 x H x W): a reference for tests and
    benchmarks, same masking convention."""
    b, c, h, w = q.shape
    pad = window // 2
    kk = window * window
    scale = 1.0 / math.sqrt(c) if scale is None else scale
    ku = F.unfold(F.pad(k, (pad,) * 4), window).view(b, c, kk, h, w)
    vu = F.unfold(F.pad(v, (pad,) * 4), window).view(b, v.shape[1], kk, h, w)
    logits = (q.unsqueeze(2) * ku).sum(1) * scale
    logits = logits.masked_fill(~_valid_mask(h, w, window, q.device, q.dtype)[None], float("-inf"))
    a = torch.softmax(logits, dim=1)
    return (a.unsqueeze(1) * vu).sum(2)
