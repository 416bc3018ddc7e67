"""Multi-task networks (ATRC Sec. 3.1): shared backbone, per-task features F_n, detached aux heads A_n,
optional distillation module, 1x1 prediction convs. Also the single-task baseline (one network per task)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn

from trcnas.nas.models.contract import DenseNetwork, PermutableUnit, SplitNetwork
from trcnas.nas.tasks import Task


class TaskFeatures(nn.Module):
    """F_n = 3x3 Conv-BN-ReLU from the backbone's channels to C."""

    def __init__(self, cin: int, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                                  nn.ReLU(inplace=True))

    def forward(self, x):
        return self.body(x)


class AuxHead(nn.Module):
    """A_n: 1x1 Conv-BN-ReLU (in -> in) then 1x1 conv to K_n label regions, on *detached* backbone features."""

    def __init__(self, cin: int, regions: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cin, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
                                  nn.Conv2d(cin, regions, 1))

    def forward(self, x):
        return self.body(x.detach())


def prediction_conv(channels: int, out: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, out, 1)
    nn.init.normal_(conv.weight, 0.0, 0.01)
    nn.init.zeros_(conv.bias)
    return conv


class MultiTaskNet(SplitNetwork):
    """Outputs ``{"pred": {task: logits}, "aux": {task: logits}}`` at feature resolution (1/4 input)."""

    def __init__(self, backbone: nn.Module, tasks: Mapping[str, Task], channels: int | None = None,
                 distill: nn.Module | None = None, aux_tasks: Sequence[str] = (), dropout: float = 0.0):
        super().__init__()
        self.task_names = list(tasks)
        cin = backbone.out_channels
        self.channels = channels or max(1, cin // 4)
        self.backbone = backbone
        self.features = nn.ModuleDict({t: TaskFeatures(cin, self.channels) for t in tasks})
        self.aux = nn.ModuleDict({t: AuxHead(cin, tasks[t].aux_regions) for t in aux_tasks})
        self.distill = distill
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.heads = nn.ModuleDict({t: prediction_conv(self.channels, tasks[t].out_channels) for t in tasks})

    def encode(self, image: torch.Tensor) -> tuple[dict, dict]:
        """Backbone, task features F_n and aux logits A_n (everything before the distillation module)."""
        x = self.backbone(image)
        return {t: m(x) for t, m in self.features.items()}, {t: m(x) for t, m in self.aux.items()}

    def decode(self, feats: dict, aux: dict, hooks=None, valid=None) -> dict[str, dict[str, torch.Tensor]]:
        probes = {} if getattr(self.distill, "probing", False) else None
        if self.distill is not None:
            feats = self.distill(feats, aux, hooks=hooks, valid=valid,
                                 **({"probes": probes} if probes is not None else {}))
        pred = {t: self.heads[t](self.dropout(feats[t])) for t in self.task_names}
        # a probe supergraph's candidates, each predicting its target on its own (nas/search/probes.py)
        return {"pred": pred, "aux": aux, **({"probes": probes} if probes is not None else {})}

    def forward(self, image: torch.Tensor, hooks=None, valid=None) -> dict[str, dict[str, torch.Tensor]]:
        """``valid``: B x 1 x H x W bool, False on padding (a padded crop or batch): label contexts' spatial
        softmax leaves those pixels out."""
        return self.decode(*self.encode(image), hooks=hooks, valid=valid)

    def forward_batch(self, batch: dict):
        return self(batch["image"], valid=batch.get("valid"))

    predict = forward_batch

    # a context block's message reaches only its target's fusion: permuting it changes no other task's output
    units_affect_only_their_target = True

    def permutable(self) -> list[PermutableUnit]:
        """Every context block of a fixed ATRC module (what permutation importance permutes)."""
        d = self.distill
        if d is None or d.search:
            return []
        return [PermutableUnit((t, s), t, s, d.choice[t][s]) for t in d.tasks for s in d.sources[t]]


class SingleTaskNets(DenseNetwork):
    """The single-task baseline: an independent network (own backbone) per task, same head design."""

    def __init__(self, build_backbone, tasks: Mapping[str, Task], channels: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.task_names = list(tasks)
        self.nets = nn.ModuleDict({
            t: MultiTaskNet(build_backbone(), {t: tasks[t]}, channels, dropout=dropout) for t in tasks
        })

    def forward(self, image, hooks=None):
        out = {"pred": {}, "aux": {}}
        for net in self.nets.values():
            out["pred"].update(net(image)["pred"])
        return out
