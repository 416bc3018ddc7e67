"""xTAM directional features and the multi-task exchange block (mTEB) of Lopes et al.

Directional feature j -> i = [diag(alpha) * xtask_{j->i}, self_{j->i}]:
- xtask: correlation-guided attention; queries from f_i max-pooled by s, keys/values from f_j max-pooled by
  s^2, 1x1 Conv-BN-ReLU projections, softmax(Q K^T / sqrt(d)), upsampled back; alpha (per channel) starts
  at 0, so exchange starts with self-attention only.
- self: F_f(f_j) * sigmoid(F_m(f_j)) (3x3 convs).
The downscale s is derived from the feature size: the smallest power of two that leaves at most
``max_query_tokens`` query positions (at 128x128 input and 256 tokens: s = 1, 1, 1, 2 from coarse to fine).

mTEB for target i: concat of its directional features -> 1x1 Conv-BN-ReLU = r_i, then fused with f_i by
``add`` (f + g*r), ``prod`` (f * (1 + g*r)) or ``concat`` (1x1 conv of [f, g*r], initialised to pass f).
g is a per-channel gate initialised to 0, so a new block returns its input unchanged whatever the fusion;
the block outputs the change it makes (delta), which the decoder adds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

FUSIONS = ("add", "concat", "prod")


def downscale_for(height: int, width: int, max_query_tokens: int) -> int:
    s = 1
    while math.ceil(height / s) * math.ceil(width / s) > max_query_tokens:
        s *= 2
    return s


def _proj(cin, cout, k=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def _pool(x, s):
    return x if s == 1 else F.max_pool2d(x, s, s, ceil_mode=True)


class Directional(nn.Module):
    """The directional feature source -> target (2 * ``out_channels`` channels)."""

    def __init__(self, channels: int, key_channels: int, out_channels: int, max_query_tokens: int = 256):
        super().__init__()
        self.q = _proj(channels, key_channels)
        self.k = _proj(channels, key_channels)
        self.v = _proj(channels, out_channels)
        self.alpha = nn.Parameter(torch.zeros(out_channels))
        self.self_f = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.self_m = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.max_query_tokens = max_query_tokens

    def xtask(self, f_t: torch.Tensor, f_s: torch.Tensor) -> torch.Tensor:
        h, w = f_t.shape[-2:]
        s = downscale_for(h, w, self.max_query_tokens)
        q = self.q(_pool(f_t, s))
        kv = _pool(f_s, s * s)
        k, v = self.k(kv), self.v(kv)
        b, _, hq, wq = q.shape
        def tokens(x):  # B x C x h x w -> B x 1 x hw x C
            return x.flatten(2).transpose(1, 2)[:, None]

        out = F.scaled_dot_product_attention(tokens(q), tokens(k), tokens(v))[:, 0]
        out = out.transpose(1, 2).reshape(b, -1, hq, wq)
        if (hq, wq) != (h, w):
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        return out

    def forward(self, f_t: torch.Tensor, f_s: torch.Tensor) -> torch.Tensor:
        gated = self.self_f(f_s) * torch.sigmoid(self.self_m(f_s))
        return torch.cat([self.xtask(f_t, f_s) * self.alpha.view(1, -1, 1, 1), gated], 1)


class Fusion(nn.Module):
    """One fusion op (a candidate of the fusion decision); ``concat`` uses the target's own conv."""

    def __init__(self, kind: str):
        super().__init__()
        if kind not in FUSIONS:
            raise ValueError(f"unknown mTEB fusion {kind!r}; use one of {', '.join(FUSIONS)}")
        self.kind = kind

    def forward(self, f: torch.Tensor, r: torch.Tensor, concat: nn.Module | None) -> torch.Tensor:
        if self.kind == "add":
            return f + r
        if self.kind == "prod":
            return f * (1 + r)
        return concat(torch.cat([f, r], 1))

    def extra_repr(self):
        return self.kind


def _identity_concat(channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(2 * channels, channels, 1, bias=False)
    with torch.no_grad():
        conv.weight[:, :channels] = torch.eye(channels)[:, :, None, None]
    return conv


class MTEB(nn.Module):
    """One mTEB at one decoder scale: a directional feature for every ordered pair, a residual and a fusion
    per target. ``fusions`` lists the fusion ops whose parameters it needs (one for a fixed network)."""

    def __init__(self, tasks: Sequence[str], channels: int, key_channels: int, out_channels: int,
                 fusions: Sequence[str] = ("add",), max_query_tokens: int = 256):
        super().__init__()
        self.tasks = list(tasks)
        self.directional = nn.ModuleDict({
            f"{t}__{s}": Directional(channels, key_channels, out_channels, max_query_tokens)
            for t in self.tasks for s in self.tasks if s != t
        })
        n_src = len(self.tasks) - 1
        self.residual = nn.ModuleDict({t: _proj(max(1, n_src) * 2 * out_channels, channels) for t in self.tasks})
        self.gate = nn.ParameterDict({t: nn.Parameter(torch.zeros(channels)) for t in self.tasks})
        self.concat = nn.ModuleDict({t: _identity_concat(channels) for t in self.tasks}) if "concat" in fusions \
            else None

    def sources(self, target: str) -> list[str]:
        return [s for s in self.tasks if s != target]

    def forward(self, feats: Mapping[str, torch.Tensor],
                fuse: Callable[[torch.Tensor, torch.Tensor, nn.Module | None], torch.Tensor],
                hooks: Mapping[tuple[str, str], Callable] | None = None) -> dict[str, torch.Tensor]:
        """-> {target: fused - f_target}. ``hooks[(target, source)](feature)`` may replace a directional
        feature (permutation importance)."""
        delta = {}
        for t in self.tasks:
            f = feats[t]
            dirs = []
            for s in self.sources(t):
                d = self.directional[f"{t}__{s}"](f, feats[s])
                if hooks and (t, s) in hooks:
                    d = hooks[(t, s)](d)
                dirs.append(d)
            if not dirs:
                delta[t] = torch.zeros_like(f)
                continue
            r = self.residual[t](torch.cat(dirs, 1)) * self.gate[t].view(1, -1, 1, 1)
            delta[t] = fuse(f, r, None if self.concat is None else self.concat[t]) - f
        return delta
