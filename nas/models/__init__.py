"""Networks by ``model.type``: the plain networks registered in ``MODELS`` (multitask, single_task) and the
fixed network of a space family (atrc, composite, mteb: ``trcnas.nas.families``); ``build_supergraph`` builds a
family's search network over a space."""

from __future__ import annotations

from collections.abc import Mapping

from trcnas.nas.registry import Registry
from trcnas.nas.tasks import Task

MODELS = Registry("model type")


def backbone_of(cfg: dict):
    """A new backbone as ``model.backbone`` declares it."""
    from trcnas.nas.models.backbones import BACKBONES

    b = cfg["model"]["backbone"]
    return BACKBONES.build(b["name"], b.get("weights"), **(b.get("options") or {}))


@MODELS.register("multitask")
def build_multitask(cfg: dict, tasks: Mapping[str, Task]):
    from trcnas.nas.models.multitask import MultiTaskNet

    m = cfg["model"]
    return MultiTaskNet(backbone_of(cfg), tasks, m["channels"], dropout=m["dropout"])


@MODELS.register("single_task")
def build_single_task(cfg: dict, tasks: Mapping[str, Task]):
    from trcnas.nas.models.multitask import SingleTaskNets

    return SingleTaskNets(lambda: backbone_of(cfg), tasks, cfg["model"]["channels"], cfg["model"]["dropout"])


def model_types() -> list[str]:
    """Every valid ``model.type``: the plain networks, then the space families."""
    from trcnas.nas.families import family_names

    return MODELS.names() + family_names()


def build_model(cfg: dict, tasks: Mapping[str, Task], architecture=None):
    """The network ``model.type`` names: a plain network, or the fixed network of a family (``architecture``;
    None: the family's defaults where it declares them)."""
    from trcnas.nas.errors import UserError
    from trcnas.nas.families import family, is_family
    from trcnas.nas.plugins import load_plugins

    load_plugins(cfg)
    mtype = cfg["model"]["type"]
    if is_family(mtype):
        if architecture is not None and architecture.group != mtype:
            raise UserError(f"the architecture is of space family {architecture.group!r} but model.type is "
                            f"{mtype!r}; set model.type: {architecture.group}")
        return family(mtype).fixed(cfg, tasks, architecture)
    if architecture is not None:
        raise UserError(f"model.type {mtype!r} is a plain network and takes no architecture; set model.type: "
                        f"{architecture.group}")
    if mtype not in MODELS:
        raise UserError(f"model.type {mtype!r} unknown; use one of {', '.join(model_types())}")
    return MODELS.build(mtype, cfg, tasks)


def build_supergraph(cfg: dict, tasks: Mapping[str, Task], space):
    """The search network of ``space`` (one MixedOp per decision), built by the space's family."""
    from trcnas.nas.families import family
    from trcnas.nas.plugins import load_plugins

    load_plugins(cfg)
    return family(space.group).supergraph(cfg, tasks, space)
