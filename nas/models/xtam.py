"""xTAM directional features and the multi-task exchange block (mTEB) of Lopes et al. (paper Eq. 3-5 and its
reference code).

Directional feature source j -> target i, on the source's features passed through its own extractor
E_{j->i} (3x3 conv + ReLU, one per ordered pair, as the reference code):
    f_{j->i} = [diag(alpha) * xtask(f_i, E(f_j)), self(E(f_j))]
- xtask: correlation-guided attention; queries from f_i max-pooled by s, keys/values from E(f_j) max-pooled
  by s^2 (the paper's equation; the reference code pools keys/values by s), 1x1 Conv-BN-ReLU projections,
  softmax(Q K^T / sqrt(d)), upsampled back. alpha (per channel) starts at 0, as in the paper, so exchange
  starts with self-attention only; at the very first step the q/k/v projections therefore get no gradient
  (only alpha does), from the second step on they do.
- self: F_f(E) * sigmoid(F_m(E)) (3x3 convs without bias).
Each directional feature is projected back to C channels by its own 1x1 Conv-BN-ReLU (per pair).
The downscale s is derived from the feature size: the smallest power of two that leaves at most
``max_query_tokens`` query positions.

mTEB for target i fuses the projected directional features of every other task with f_i (no zero gate: the
only zero-initialised parameter is alpha):
- ``add``:    f_i + P([d_j...])
- ``prod``:   f_i * P([d_j...])
- ``concat``: P([f_i, d_j...])
with P a 1x1 Conv-BN-ReLU to C (one per target and fusion op). The block returns the change it makes
(fused - f_i), which the decoder adds, so a supergraph's "off" candidate is a zero change.
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
    """The directional feature source -> target: ``features`` gives the paper's f_{j->i} (2 * ``out_channels``
    channels), ``forward`` its per-pair projection to ``channels``."""

    def __init__(self, channels: int, key_channels: int, out_channels: int, max_query_tokens: int = 256):
        super().__init__()
        self.extract = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.q = _proj(channels, key_channels)
        self.k = _proj(channels, key_channels)
        self.v = _proj(channels, out_channels)
        self.alpha = nn.Parameter(torch.zeros(out_channels))
        self.self_f = nn.Conv2d(channels, out_channels, 3, padding=1, bias=False)
        self.self_m = nn.Conv2d(channels, out_channels, 3, padding=1, bias=False)
        self.project = _proj(2 * out_channels, channels)
        self.max_query_tokens = max_query_tokens

    def xtask(self, f_t: torch.Tensor, f_s: torch.Tensor) -> torch.Tensor:
        """Correlation-guided attention (before alpha); ``f_s`` is the extracted source feature."""
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

    def features(self, f_t: torch.Tensor, f_s: torch.Tensor) -> torch.Tensor:
        e = self.extract(f_s)
        gated = self.self_f(e) * torch.sigmoid(self.self_m(e))
        return torch.cat([self.xtask(f_t, e) * self.alpha.view(1, -1, 1, 1), gated], 1)

    def forward(self, f_t: torch.Tensor, f_s: torch.Tensor, hook: Callable | None = None) -> torch.Tensor:
        d = self.features(f_t, f_s)
        return self.project(d if hook is None else hook(d))


class Fusion(nn.Module):
    """One fusion op (a candidate of the fusion decision); ``posts[kind]`` is the target's projection P."""

    def __init__(self, kind: str):
        super().__init__()
        if kind not in FUSIONS:
            raise ValueError(f"unknown mTEB fusion {kind!r}; use one of {', '.join(FUSIONS)}")
        self.kind = kind

    def forward(self, f: torch.Tensor, r: torch.Tensor, posts: Mapping[str, nn.Module]) -> torch.Tensor:
        post = posts[self.kind]
        if self.kind == "add":
            return f + post(r)
        if self.kind == "prod":
            return f * post(r)
        return post(torch.cat([f, r], 1))

    def extra_repr(self):
        return self.kind


class MTEB(nn.Module):
    """One mTEB at one decoder scale: a directional feature (with its projection) for every ordered pair and a
    fusion projection per target and fusion op. ``fusions`` lists the ops whose projections it needs (one for
    a fixed network, every candidate in a supergraph)."""

    def __init__(self, tasks: Sequence[str], channels: int, key_channels: int, out_channels: int,
                 fusions: Sequence[str] = ("add",), max_query_tokens: int = 256):
        super().__init__()
        self.tasks = list(tasks)
        bad = [f for f in fusions if f not in FUSIONS]
        if bad:
            raise ValueError(f"unknown mTEB fusion {bad[0]!r}; use one of {', '.join(FUSIONS)}")
        self.directional = nn.ModuleDict({
            f"{t}__{s}": Directional(channels, key_channels, out_channels, max_query_tokens)
            for t in self.tasks for s in self.tasks if s != t
        })
        n_src = len(self.tasks) - 1
        self.post = nn.ModuleDict({
            t: nn.ModuleDict({f: _proj((n_src + (f == "concat")) * channels, channels) for f in fusions})
            for t in self.tasks
        }) if n_src else nn.ModuleDict()

    def sources(self, target: str) -> list[str]:
        return [s for s in self.tasks if s != target]

    def forward(self, feats: Mapping[str, torch.Tensor],
                fuse: Callable[[torch.Tensor, torch.Tensor, Mapping[str, nn.Module]], torch.Tensor],
                hooks: Mapping[tuple[str, str], Callable] | None = None) -> dict[str, torch.Tensor]:
        """-> {target: fused - f_target}. ``hooks[(target, source)](feature)`` may replace a directional
        feature (permutation importance)."""
        delta = {}
        for t in self.tasks:
            f = feats[t]
            srcs = self.sources(t)
            if not srcs:
                delta[t] = torch.zeros_like(f)
                continue
            r = torch.cat([self.directional[f"{t}__{s}"](f, feats[s], (hooks or {}).get((t, s))) for s in srcs], 1)
            delta[t] = fuse(f, r, self.post[t]) - f
        return delta
