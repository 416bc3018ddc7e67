"""The ATRC distillation module: one CP block per (target, source) pair and the fusion stack per target.

It refines the task features F_n of any multi-task network that also provides aux logits A_n. In the search
supergraph every pair is a MixedOp over its candidates; a fixed architecture builds only the chosen blocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from trcnas.nas.models.context import CONTEXTS, build_context, conv_bn_relu
from trcnas.nas.search.mixed import MixedOp
from trcnas.spaces.space import Decision


class TargetFusion(nn.Module):
    """concat(messages) -> 1x1 Conv-BN (BN zero-initialised: starts as 'no message') -> concat with F_T ->
    1x1 Conv-BN-ReLU back to C."""

    def __init__(self, n_messages: int, msg_channels: int, channels: int):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(n_messages * msg_channels, channels, 1, bias=False),
                                    nn.BatchNorm2d(channels))
        nn.init.zeros_(self.reduce[1].weight)
        nn.init.zeros_(self.reduce[1].bias)
        self.out = nn.Sequential(nn.Conv2d(2 * channels, channels, 1, bias=False), nn.BatchNorm2d(channels),
                                 nn.ReLU(inplace=True))

    def forward(self, messages: list[torch.Tensor], f_t: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([self.reduce(torch.cat(messages, 1)), f_t], 1))


def _key(target: str, source: str) -> str:
    return f"{target}__{source}"


class ATRCModule(nn.Module):
    """``pairs[target][source]``: with ``search=True`` the pair's ``Decision`` of the space (a MixedOp over its
    candidates, even for one candidate, so freezing/logging stay uniform); otherwise the pair's context type
    (``none`` pairs are dropped from the fusion)."""

    def __init__(self, tasks: Sequence[str], channels: int, pairs: Mapping[str, Mapping[str, Decision | str]],
                 search: bool, attn_channels: int | None = None):
        super().__init__()
        self.tasks = list(tasks)
        self.search = search
        self.channels = channels
        self.attn_channels = attn_channels or max(1, channels // 2)
        self.pairs = nn.ModuleDict()
        self.sources: dict[str, list[str]] = {}
        self.choice: dict[str, dict[str, str]] = {}
        for t in self.tasks:
            self.sources[t] = []
            for s in self.tasks:
                pair = pairs[t][s]
                if search:
                    if not isinstance(pair, Decision):
                        raise TypeError(f"search ATRC pair {t} <- {s} needs its space Decision, got {pair!r}")
                    ops = [build_context(c, channels, self.attn_channels, affine_value=False)
                           for c in pair.candidates]
                    self.pairs[_key(t, s)] = MixedOp.of(pair, ops)
                    self.sources[t].append(s)
                else:
                    if not isinstance(pair, str):
                        raise TypeError(f"fixed ATRC pair {t} <- {s} needs one context type, got {pair!r}")
                    self.choice.setdefault(t, {})[s] = pair
                    block = build_context(pair, channels, self.attn_channels)
                    if block is not None:  # a `none` pair sends no message
                        self.pairs[_key(t, s)] = block
                        self.sources[t].append(s)
        # a target without any message still gets the reference's bottleneck (1x1 Conv-BN-ReLU; dropout follows
        # in the network, as for every target)
        self.fusion = nn.ModuleDict({
            t: TargetFusion(len(self.sources[t]), self.attn_channels, channels) if self.sources[t]
            else conv_bn_relu(channels, channels)
            for t in self.tasks
        })

    def aux_tasks(self) -> set[str]:
        """Tasks whose aux logits some block may read (all tasks in search)."""
        if self.search:
            return set(self.tasks)
        need = set()
        for t, row in self.choice.items():
            for s, c in row.items():
                need.update({"target": t, "source": s}[side] for side in CONTEXTS.info(c).aux)
        return need

    def message(self, target: str, source: str, feats, aux) -> torch.Tensor | None:
        block = self.pairs[_key(target, source)]
        f_t, f_s = feats[target], feats[source]

        def run(op):
            return op(f_t, f_s, aux.get(target), aux.get(source))

        return block(run) if isinstance(block, MixedOp) else run(block)

    def forward(self, feats: Mapping[str, torch.Tensor], aux: Mapping[str, torch.Tensor],
                hooks: Mapping[tuple[str, str], callable] | None = None, valid=None) -> dict[str, torch.Tensor]:
        """``hooks[(t, s)](message)`` may replace a pair's message (used by permutation importance).
        ``valid`` (B x 1 x H x W bool, False on padding): the label contexts' spatial softmax over aux logits
        excludes padded pixels, as the reference does."""
        if valid is not None and aux:
            size = next(iter(aux.values())).shape[-2:]
            keep = F.interpolate(valid.float(), size=size, mode="nearest") > 0.5
            aux = {t: a.masked_fill(~keep, float("-inf")) for t, a in aux.items()}
        out = {}
        for t in self.tasks:
            if not self.sources[t]:
                out[t] = self.fusion[t](feats[t])
                continue
            msgs = []
            for s in self.sources[t]:
                m = self.message(t, s, feats, aux)
                if m is None:
                    f = feats[t]
                    m = f.new_zeros(f.shape[0], self.attn_channels, *f.shape[-2:])
                if hooks and (t, s) in hooks:
                    m = hooks[(t, s)](m)
                msgs.append(m)
            out[t] = self.fusion[t](msgs, feats[t])
        return out
