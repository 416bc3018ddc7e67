"""The multi-scale multi-task decoder of the xTAM paper with mTEBs at chosen scales.

Scale 1 is the coarsest backbone level; each further scale upsamples every task's features 2x and merges
the backbone level there (as many scales as backbone levels: 4 for ResNet/HRNet and for the tiny CNN with
four widths). An mTEB refines the task features after its scale, and every scale carrying one adds an
intermediate prediction (and loss). In the supergraph each scale's placement is an off/on MixedOp and one
fusion MixedOp, shared by all blocks, is sampled once per forward.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.models.multitask import prediction_conv
from nas.models.xtam import MTEB, Fusion, _proj
from nas.search.mixed import MixedOp
from nas.tasks import Task


class MTEBNet(nn.Module):
    """``scales``: the scales carrying an mTEB (search: the scales that may), ``fusion``: its op (search: the
    candidate ops)."""

    def __init__(self, backbone: nn.Module, tasks: Mapping[str, Task], channels: int, scales: Sequence[int],
                 fusion: str | Sequence[str], search: bool = False, key_channels: int | None = None,
                 dir_channels: int | None = None, max_query_tokens: int = 256, dropout: float = 0.0,
                 name: str = "mteb"):
        super().__init__()
        self.task_names = list(tasks)
        self.backbone = backbone
        levels = list(reversed(backbone.pyramid_channels))  # coarse first
        self.n_scales = len(levels)
        bad = [k for k in scales if not 1 <= int(k) <= self.n_scales]
        if bad:
            raise ValueError(f"mTEB scales {bad} outside the decoder's scales 1..{self.n_scales}")
        self.stem = nn.ModuleDict({t: _proj(levels[0], channels, 3) for t in tasks})
        self.lateral = nn.ModuleList(nn.ModuleDict({t: _proj(c, channels) for t in tasks}) for c in levels[1:])
        self.merge = nn.ModuleList(nn.ModuleDict({t: _proj(2 * channels, channels, 3) for t in tasks})
                                   for _ in levels[1:])
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.heads = nn.ModuleDict({t: prediction_conv(channels, tasks[t].out_channels) for t in tasks})

        kc, dc = key_channels or max(1, channels // 2), dir_channels or max(1, channels // 2)
        fusions = list(fusion) if search else [fusion]
        self.search = search
        self.blocks = nn.ModuleDict()
        self.inter_heads = nn.ModuleDict()
        for k in sorted(int(k) for k in scales):
            block = MTEB(self.task_names, channels, kc, dc, fusions, max_query_tokens)
            self.blocks[str(k)] = MixedOp(f"{name}.scales.{k}", ["off", "on"], [None, block]) if search else block
            self.inter_heads[str(k)] = nn.ModuleDict({t: prediction_conv(channels, tasks[t].out_channels)
                                                      for t in tasks})
        if search:
            self.fusion = MixedOp(f"{name}.fusion", fusions, [Fusion(f) for f in fusions])
        else:
            self.fusion = Fusion(fusion)

    def fuse_fn(self):
        """The fusion every block of this forward uses (one Gumbel sample per forward in the supergraph)."""
        if isinstance(self.fusion, MixedOp):
            sel = self.fusion.selection()
            return lambda f, r, concat: self.fusion.apply(sel, lambda op: op(f, r, concat))
        return self.fusion

    def encode(self, image: torch.Tensor) -> tuple[list[torch.Tensor]]:
        """The backbone levels, coarse first (everything before the decoder)."""
        return (self.backbone.pyramid(image)[::-1],)

    def forward(self, image: torch.Tensor, hooks: Mapping[tuple[int, str, str], callable] | None = None) -> dict:
        """``{"pred", "aux": {}, "inter": {scale: {task: logits}}}``. ``hooks[(scale, target, source)]`` may
        replace a directional feature."""
        return self.decode(*self.encode(image), hooks=hooks)

    def permutable(self) -> list[tuple]:
        """(hook key, target, source, context) of every directional feature of the placed mTEBs."""
        if self.search:
            return []
        return [((k, t, s), t, s, f"mTEB scale {k}") for k in self.placed_scales()
                for t in self.task_names for s in self.blocks[str(k)].sources(t)]

    def decode(self, pyr: list[torch.Tensor], hooks: Mapping[tuple[int, str, str], callable] | None = None) -> dict:
        fuse = self.fuse_fn()
        feats = {t: m(pyr[0]) for t, m in self.stem.items()}
        inter = {}
        for k in range(1, self.n_scales + 1):
            if k > 1:
                lat, merge, x = self.lateral[k - 2], self.merge[k - 2], pyr[k - 1]
                feats = {t: merge[t](torch.cat([F.interpolate(f, size=x.shape[-2:], mode="bilinear",
                                                              align_corners=False), lat[t](x)], 1))
                         for t, f in feats.items()}
            block = self.blocks[str(k)] if str(k) in self.blocks else None
            if block is None:
                continue
            h = {(t, s): fn for (sc, t, s), fn in (hooks or {}).items() if sc == k}
            if isinstance(block, MixedOp):
                delta = block(lambda op, feats=feats, h=h: op(feats, fuse, h))
            else:
                delta = block(feats, fuse, h)
            if delta is None:
                continue
            feats = {t: f + delta[t] for t, f in feats.items()}
            inter[k] = {t: self.inter_heads[str(k)][t](f) for t, f in feats.items()}
        pred = {t: self.heads[t](self.dropout(f)) for t, f in feats.items()}
        return {"pred": pred, "aux": {}, "inter": inter}

    def placed_scales(self) -> list[int]:
        return [int(k) for k in self.blocks]
