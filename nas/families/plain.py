"""The plain networks: ``model.type`` multitask (a shared backbone, one head per task) and single_task (one
network per task), without a search space."""

from __future__ import annotations

from collections.abc import Mapping

from trcnas.nas.families import register_network
from trcnas.nas.models.backbones import backbone_of
from trcnas.nas.models.multitask import MultiTaskNet, SingleTaskNets
from trcnas.nas.schema import ConfigBase
from trcnas.nas.tasks import Task


@register_network("multitask", "Multi-task baseline")
def build_multitask(cfg: ConfigBase, tasks: Mapping[str, Task]):
    m = cfg.model
    return MultiTaskNet(backbone_of(cfg), tasks, m.channels, dropout=m.dropout)


@register_network("single_task", "Single-task networks")
def build_single_task(cfg: ConfigBase, tasks: Mapping[str, Task]):
    return SingleTaskNets(lambda: backbone_of(cfg), tasks, cfg.model.channels, cfg.model.dropout)
