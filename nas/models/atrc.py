"""The ATRC distillation module: one CP block per (target, source) pair and the fusion stack per target.

It refines the task features F_n of any multi-task network that also provides aux logits A_n. In the search
supergraph every pair is a MixedOp over its candidates; a fixed architecture builds only the chosen blocks.

With ``probe_outputs`` (``search.selection: probes``) the supergraph trains every candidate of every pair in
isolation instead of in a mixture: each (pair, candidate) has its own *probe*, a fusion and prediction conv that
predicts the pair's target from the target's features and that candidate's message alone (a ``none`` candidate:
from the target's features alone). No candidate shares its probe with another, so none can lean on another's
message; each trains at full weight every step, as a fixed network's block does (nas/search/probes.py decides).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from trcnas.nas.models.context import CONTEXTS, build_context, conv_bn_relu
from trcnas.nas.models.multitask import prediction_conv
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


class Probe(nn.Module):
    """One candidate's own path to its target's prediction: a one-message ``TargetFusion`` and a prediction conv
    initialised as the network's heads."""

    def __init__(self, msg_channels: int, channels: int, outputs: int):
        super().__init__()
        self.fusion = TargetFusion(1, msg_channels, channels)
        self.head = prediction_conv(channels, outputs)

    def forward(self, message: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
        return self.head(self.fusion([message], f_t))


class ATRCModule(nn.Module):
    """``pairs[target][source]``: with ``search=True`` the pair's ``Decision`` of the space (a MixedOp over its
    candidates, even for one candidate, so freezing/logging stay uniform); otherwise the pair's context type
    (``none`` pairs are dropped from the fusion). ``probe_outputs`` (search only: ``{task: output channels}``)
    gives every (pair, candidate) its own :class:`Probe` and the targets a context-free main path."""

    def __init__(self, tasks: Sequence[str], channels: int, pairs: Mapping[str, Mapping[str, Decision | str]],
                 search: bool, attn_channels: int | None = None, probe_outputs: Mapping[str, int] | None = None):
        super().__init__()
        if probe_outputs is not None and not search:
            raise ValueError("probes are a search supergraph's: a fixed ATRC network has none")
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
        # in the network, as for every target); with probes the main path is that bottleneck for every target
        self.probing = probe_outputs is not None
        self.fusion = nn.ModuleDict({
            t: TargetFusion(len(self.sources[t]), self.attn_channels, channels)
            if self.sources[t] and not self.probing else conv_bn_relu(channels, channels)
            for t in self.tasks
        })
        self.probes = nn.ModuleDict({
            f"{_key(t, s)}__{c}": Probe(self.attn_channels, channels, probe_outputs[t])
            for t in self.tasks for s in self.sources[t] for c in self.pairs[_key(t, s)].candidates
        } if self.probing else {})

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

    def probe(self, feats, aux) -> dict[str, dict[tuple[str, str], torch.Tensor]]:
        """``{target: {(decision, candidate): prediction logits}}``: every candidate of every pair through its own
        probe (whatever the pair's freeze state: the probes are what a probe selection compares)."""
        out: dict[str, dict[tuple[str, str], torch.Tensor]] = {}
        for t in self.tasks:
            f_t = feats[t]
            out[t] = {}
            for s in self.sources[t]:
                mixed = self.pairs[_key(t, s)]
                for i, c in enumerate(mixed.candidates):
                    m = None if mixed.is_none[i] else mixed.ops[i](f_t, feats[s], aux.get(t), aux.get(s))
                    if m is None:
                        m = f_t.new_zeros(f_t.shape[0], self.attn_channels, *f_t.shape[-2:])
                    out[t][(mixed.name, c)] = self.probes[f"{_key(t, s)}__{c}"](m, f_t)
        return out

    def forward(self, feats: Mapping[str, torch.Tensor], aux: Mapping[str, torch.Tensor],
                hooks: Mapping[tuple[str, str], callable] | None = None, valid=None,
                probes: dict | None = None) -> dict[str, torch.Tensor]:
        """``hooks[(t, s)](message)`` may replace a pair's message (used by permutation importance).
        ``valid`` (B x 1 x H x W bool, False on padding): the label contexts' spatial softmax over aux logits
        excludes padded pixels, as the reference does. With probes, ``probes`` (a dict) receives :meth:`probe`'s
        predictions and every target's output is its context-free main path."""
        if valid is not None and aux:
            size = next(iter(aux.values())).shape[-2:]
            keep = F.interpolate(valid.float(), size=size, mode="nearest") > 0.5
            aux = {t: a.masked_fill(~keep, float("-inf")) for t, a in aux.items()}
        if self.probing:
            if probes is not None:
                probes.update(self.probe(feats, aux))
            return {t: self.fusion[t](feats[t]) for t in self.tasks}
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
