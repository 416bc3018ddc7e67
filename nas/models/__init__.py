"""The plain networks, registered by ``model.type`` in ``MODELS`` (multitask, single_task); a space family's
networks (atrc, composite, mteb) are built by its family (``trcnas.nas.families``, which also holds
``build_model`` / ``build_supergraph``, the one entry point for every ``model.type``)."""

from __future__ import annotations

from collections.abc import Mapping

from trcnas.nas.models.backbones import backbone_of
from trcnas.nas.models.multitask import MultiTaskNet, SingleTaskNets
from trcnas.nas.registry import Registry
from trcnas.nas.tasks import Task

MODELS = Registry("model type")


@MODELS.register("multitask")
def build_multitask(cfg: dict, tasks: Mapping[str, Task]):
    m = cfg["model"]
    return MultiTaskNet(backbone_of(cfg), tasks, m["channels"], dropout=m["dropout"])


@MODELS.register("single_task")
def build_single_task(cfg: dict, tasks: Mapping[str, Task]):
    return SingleTaskNets(lambda: backbone_of(cfg), tasks, cfg["model"]["channels"], cfg["model"]["dropout"])
