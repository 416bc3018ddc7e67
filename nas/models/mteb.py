"""The multi-scale multi-task decoder of the xTAM paper with mTEBs at chosen scales.

Scales are named as in the paper: scale s is the decoder level whose feature map is the input / 2^s (its
number of downsamplings). The backbone's pyramid levels sit at strides 4, 8, 16, 32 (scales 2, 3, 4, 5).
The decoder starts at the coarsest level (a 3x3 Conv-BN-ReLU per task), and at each finer backbone level
upsamples every task's features 2x and merges the backbone level there (1x1 lateral + 3x3 merge). Below the
finest backbone level it goes on to ``finest_scale`` (default 1, the paper's 1/2 resolution) by upsampling
and a 3x3 Conv-BN-ReLU per task (there is no backbone feature to merge there). The prediction heads (1x1
convs, the last layer) read the finest scale; predictions are upsampled to the input in the losses.

An mTEB refines the task features at the end of its scale, and every scale carrying one adds an intermediate
prediction whose losses are averaged over the placed scales (xTAM supplement). The paper's best placement is
a single block at the finest decoder scale, before the last layer: ``scales: [1]``. In the supergraph each
scale's placement is an off/on MixedOp and one fusion MixedOp, shared by all blocks, is sampled once per
forward.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from trcnas.nas.errors import UserError
from trcnas.nas.models.contract import PermutableUnit, SplitNetwork
from trcnas.nas.models.multitask import prediction_conv
from trcnas.nas.models.xtam import MTEB, Fusion, _proj
from trcnas.nas.search.mixed import MixedOp
from trcnas.nas.tasks import Task
from trcnas.spaces.space import Decision

FINEST_BACKBONE_SCALE = 2  # pyramid level 0 is at stride 4


def scale_size(image_size: Sequence[int], scale: int) -> tuple[int, int]:
    """The feature size at a decoder scale: input / 2^scale (rounded up, as strided convs with padding do)."""
    return tuple(math.ceil(int(n) / 2 ** scale) for n in image_size)


class MTEBNet(SplitNetwork):
    """``scales``: the scales carrying an mTEB, ``fusion``: its op. With ``search=True``: the space's
    Decisions, one off/on decision per scale that may carry a block (``Decision.element`` is the scale) and the
    fusion decision over its candidate ops."""

    def __init__(self, backbone: nn.Module, tasks: Mapping[str, Task], channels: int,
                 scales: Sequence[int] | Sequence[Decision], fusion: str | Decision, search: bool = False,
                 key_channels: int | None = None, dir_channels: int | None = None, max_query_tokens: int = 256,
                 dropout: float = 0.0, finest_scale: int = 1):
        super().__init__()
        self.task_names = list(tasks)
        self.backbone = backbone
        levels = list(reversed(backbone.pyramid_channels))  # coarse first
        self.coarsest_scale = FINEST_BACKBONE_SCALE + len(levels) - 1
        if not 0 <= finest_scale <= FINEST_BACKBONE_SCALE:
            raise UserError(f"model.mteb.finest_scale: {finest_scale} is not a decoder scale below the backbone; "
                            f"use 0, 1 or 2 (feature map = input / 2^s)")
        self.finest_scale = int(finest_scale)
        self.scales = list(range(self.coarsest_scale, self.finest_scale - 1, -1))  # decoding order, coarse first
        if search and not (isinstance(fusion, Decision) and all(isinstance(d, Decision) for d in scales)):
            raise TypeError("an mTEB supergraph needs the space's Decisions for its scales and fusion")
        placed = {int(d.element): d for d in scales} if search else {int(k): None for k in scales}
        bad = [k for k in placed if k not in self.scales]
        if bad:
            raise UserError(f"mTEB scales {bad} are not decoder scales of this network: it decodes scales "
                            f"{self.finest_scale}..{self.coarsest_scale} (feature map = input / 2^s)")
        self.stem = nn.ModuleDict({t: _proj(levels[0], channels, 3) for t in tasks})
        self.lateral = nn.ModuleList(nn.ModuleDict({t: _proj(c, channels) for t in tasks}) for c in levels[1:])
        self.merge = nn.ModuleList(nn.ModuleDict({t: _proj(2 * channels, channels, 3) for t in tasks})
                                   for _ in levels[1:])
        self.refine = nn.ModuleList(nn.ModuleDict({t: _proj(channels, channels, 3) for t in tasks})
                                    for _ in range(self.finest_scale, FINEST_BACKBONE_SCALE))
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.heads = nn.ModuleDict({t: prediction_conv(channels, tasks[t].out_channels) for t in tasks})

        kc, dc = key_channels or max(1, channels // 2), dir_channels or max(1, channels // 2)
        fusions = list(fusion.candidates) if search else [fusion]
        self.search = search
        self.blocks = nn.ModuleDict()
        self.inter_heads = nn.ModuleDict()
        for k in sorted(placed):
            block = MTEB(self.task_names, channels, kc, dc, fusions, max_query_tokens)
            self.blocks[str(k)] = MixedOp.of(placed[k], [None, block]) if search else block
            self.inter_heads[str(k)] = nn.ModuleDict({t: prediction_conv(channels, tasks[t].out_channels)
                                                      for t in tasks})
        if search:
            self.fusion = MixedOp.of(fusion, [Fusion(f) for f in fusions])
        else:
            self.fusion = Fusion(fusion)

    def fuse_fn(self):
        """The fusion every block of this forward uses (one Gumbel sample per forward in the supergraph)."""
        if isinstance(self.fusion, MixedOp):
            sel = self.fusion.selection()
            return lambda f, r, posts: self.fusion.apply(sel, lambda op: op(f, r, posts))
        return self.fusion

    def encode(self, image: torch.Tensor) -> tuple[list[torch.Tensor], tuple[int, int]]:
        """The backbone levels, coarse first, and the input size (everything before the decoder)."""
        return self.backbone.pyramid(image)[::-1], tuple(image.shape[-2:])

    def forward(self, image: torch.Tensor, hooks: Mapping[tuple[int, str, str], callable] | None = None) -> dict:
        """``{"pred", "aux": {}, "inter": {scale: {task: logits at input / 2^scale}}}``.
        ``hooks[(scale, target, source)]`` may replace a directional feature."""
        return self.decode(*self.encode(image), hooks=hooks)

    def permutable(self) -> list[PermutableUnit]:
        """Every directional feature of the placed mTEBs."""
        if self.search:
            return []
        return [PermutableUnit((k, t, s), t, s, f"mTEB scale {k}") for k in self.placed_scales()
                for t in self.task_names for s in self.blocks[str(k)].sources(t)]

    def _stage(self, i: int, k: int, feats: dict, pyr: list, image_size) -> dict:
        """The task features at the i-th decoded scale k."""
        if i == 0:
            return {t: m(pyr[0]) for t, m in self.stem.items()}
        if i < len(pyr):
            lat, merge, x = self.lateral[i - 1], self.merge[i - 1], pyr[i]
            return {t: merge[t](torch.cat([F.interpolate(f, size=x.shape[-2:], mode="bilinear",
                                                         align_corners=False), lat[t](x)], 1))
                    for t, f in feats.items()}
        refine, size = self.refine[i - len(pyr)], scale_size(image_size, k)
        return {t: refine[t](F.interpolate(f, size=size, mode="bilinear", align_corners=False))
                for t, f in feats.items()}

    def decode(self, pyr: list[torch.Tensor], image_size, hooks=None) -> dict:
        fuse = self.fuse_fn()
        feats, inter = {}, {}
        for i, k in enumerate(self.scales):
            feats = self._stage(i, k, feats, pyr, image_size)
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
