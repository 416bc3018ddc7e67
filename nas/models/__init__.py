"""Model registry: ``model.type`` in a config builds the network (multitask, single_task, atrc, atrc_search)."""

from __future__ import annotations

from collections.abc import Mapping

from nas.registry import Registry
from nas.tasks import Task

MODELS = Registry("model type")


def _backbone_factory(cfg: dict):
    from nas.models.backbones import BACKBONES

    b = cfg["model"]["backbone"]
    return lambda: BACKBONES.build(b["name"], b.get("weights"), **(b.get("options") or {}))


@MODELS.register("multitask")
def build_multitask(cfg: dict, tasks: Mapping[str, Task], **_):
    from nas.models.multitask import MultiTaskNet

    m = cfg["model"]
    return MultiTaskNet(_backbone_factory(cfg)(), tasks, m["channels"], dropout=m["dropout"])


@MODELS.register("single_task")
def build_single_task(cfg: dict, tasks: Mapping[str, Task], **_):
    from nas.models.multitask import SingleTaskNets

    return SingleTaskNets(_backbone_factory(cfg), tasks, cfg["model"]["channels"], cfg["model"]["dropout"])


def _atrc_net(cfg, tasks, candidates, search: bool):
    from nas.models.atrc import ATRCModule
    from nas.models.multitask import MultiTaskNet

    m = cfg["model"]
    backbone = _backbone_factory(cfg)()
    channels = m["channels"] or max(1, backbone.out_channels // 4)
    module = ATRCModule(list(tasks), channels, candidates, search=search, attn_channels=m["attn_channels"])
    return MultiTaskNet(backbone, tasks, channels, distill=module, aux_tasks=sorted(module.aux_tasks()),
                        dropout=0.0 if search else m["dropout"])


@MODELS.register("atrc")
def build_atrc(cfg: dict, tasks: Mapping[str, Task], architecture=None, **_):
    """A fixed ATRC network: only the chosen blocks; aux heads only for tasks some label block reads."""
    from nas.errors import UserError

    if architecture is None:
        raise UserError("model.type atrc needs an architecture file (model.architecture or --architecture)")
    return _atrc_net(cfg, tasks, architecture.atrc_candidates(), search=False)


@MODELS.register("atrc_search")
def build_atrc_search(cfg: dict, tasks: Mapping[str, Task], space=None, **_):
    """The search supergraph: a MixedOp over the space's candidates for every (target, source) pair."""
    names = list(tasks)
    cands = {t: {} for t in names}
    for d in space.decisions(names):
        _, t, s = d.path
        cands[t][s] = list(d.candidates)
    return _atrc_net(cfg, tasks, cands, search=True)


def build_model(cfg: dict, tasks: Mapping[str, Task], kind: str | None = None, **kw):
    return MODELS.build(kind or cfg["model"]["type"], cfg, tasks, **kw)
