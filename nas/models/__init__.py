"""Model registry: ``model.type`` in a config builds the network (multitask, single_task, atrc, composite, mteb);
a search builds ``<space>_search`` (atrc_search, composite_search, mteb_search)."""

from __future__ import annotations

from collections.abc import Mapping

from trcnas.nas.registry import Registry
from trcnas.nas.tasks import Task

MODELS = Registry("model type")


def _backbone_factory(cfg: dict):
    from trcnas.nas.models.backbones import BACKBONES

    b = cfg["model"]["backbone"]
    return lambda: BACKBONES.build(b["name"], b.get("weights"), **(b.get("options") or {}))


@MODELS.register("multitask")
def build_multitask(cfg: dict, tasks: Mapping[str, Task], **_):
    from trcnas.nas.models.multitask import MultiTaskNet

    m = cfg["model"]
    return MultiTaskNet(_backbone_factory(cfg)(), tasks, m["channels"], dropout=m["dropout"])


@MODELS.register("single_task")
def build_single_task(cfg: dict, tasks: Mapping[str, Task], **_):
    from trcnas.nas.models.multitask import SingleTaskNets

    return SingleTaskNets(_backbone_factory(cfg), tasks, cfg["model"]["channels"], cfg["model"]["dropout"])


def _atrc_net(cfg, tasks, candidates, search: bool):
    from trcnas.nas.models.atrc import ATRCModule
    from trcnas.nas.models.multitask import MultiTaskNet

    m = cfg["model"]
    backbone = _backbone_factory(cfg)()
    channels = m["channels"] or max(1, backbone.out_channels // 4)
    module = ATRCModule(list(tasks), channels, candidates, search=search, attn_channels=m["attn_channels"])
    return MultiTaskNet(backbone, tasks, channels, distill=module, aux_tasks=sorted(module.aux_tasks()),
                        dropout=0.0 if search else m["dropout"])


@MODELS.register("atrc")
def build_atrc(cfg: dict, tasks: Mapping[str, Task], architecture=None, **_):
    """A fixed ATRC network: only the chosen blocks; aux heads only for tasks some label block reads."""
    from trcnas.nas.errors import UserError

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


def _fixed_choices(cfg: dict, architecture, group: str) -> dict:
    """The architecture's choices of ``group``; without a file, the space's declared defaults."""
    if architecture is not None:
        return architecture.choices[group]
    from trcnas.spaces import default_architecture, load_space

    return default_architecture(load_space(group), list(cfg["data"]["tasks"])).choices[group]


def _composite_net(cfg, tasks, embedding):
    from trcnas.nas.composite.network import CompositeNet
    from trcnas.nas.composite.palette import build_palette_rule

    m, c = cfg["model"], cfg["model"]["composite"]
    if c["conditioning"] == "image" and c["palette"].get("rule", "mosaic") != "single":
        from trcnas.nas.errors import UserError

        raise UserError("model.composite.conditioning image (Task Switching) needs one task per image: "
                        f"set model.composite.palette.rule to single, not {c['palette'].get('rule', 'mosaic')!r}")
    backbone = _backbone_factory(cfg)()
    rule = build_palette_rule(c["palette"], list(tasks), getattr(next(iter(tasks.values())).info, "class_names", ()))
    return CompositeNet(backbone, tasks, embedding, m["channels"] or 64, rule, c["conditioning"],
                        anchor_eps=c["anchor_eps"], focal_gamma=c["focal_gamma"])


@MODELS.register("composite")
def build_composite(cfg: dict, tasks: Mapping[str, Task], architecture=None, **_):
    """CompositeTasking with a fixed task representation block (architecture file, else the space's defaults:
    depth 6, width 128)."""
    from trcnas.nas.composite.embedding import TaskEmbedding

    c = cfg["model"]["composite"]
    ch = _fixed_choices(cfg, architecture, "composite")
    emb = TaskEmbedding(len(tasks), int(ch["embedding_depth"]), int(ch["embedding_width"]), c["code_length"])
    return _composite_net(cfg, tasks, emb)


@MODELS.register("composite_search")
def build_composite_search(cfg: dict, tasks: Mapping[str, Task], space=None, **_):
    """The supergraph: Gumbel mixtures over the embedding network's depth exits and width masks."""
    from trcnas.nas.composite.embedding import SearchTaskEmbedding

    cands = {d.path[-1]: list(d.candidates) for d in space.decisions(list(tasks))}
    emb = SearchTaskEmbedding(len(tasks), cands["embedding_depth"], cands["embedding_width"],
                              cfg["model"]["composite"]["code_length"], name=space.group)
    return _composite_net(cfg, tasks, emb)


def _mteb_net(cfg, tasks, scales, fusion, search, name="mteb"):
    from trcnas.nas.models.mteb import MTEBNet

    m, x = cfg["model"], cfg["model"]["mteb"]
    backbone = _backbone_factory(cfg)()
    return MTEBNet(backbone, tasks, m["channels"] or 32, scales, fusion, search=search,
                   key_channels=x["key_channels"], dir_channels=x["dir_channels"],
                   max_query_tokens=x["max_query_tokens"], dropout=0.0 if search else m["dropout"], name=name,
                   finest_scale=x["finest_scale"])


@MODELS.register("mteb")
def build_mteb(cfg: dict, tasks: Mapping[str, Task], architecture=None, **_):
    """The multi-scale decoder with mTEBs at the architecture's scales (default: scale 1, add)."""
    ch = _fixed_choices(cfg, architecture, "mteb")
    return _mteb_net(cfg, tasks, ch["scales"], ch["fusion"], search=False)


@MODELS.register("mteb_search")
def build_mteb_search(cfg: dict, tasks: Mapping[str, Task], space=None, **_):
    """The supergraph: an off/on MixedOp per decoder scale and one shared fusion MixedOp."""
    decisions = space.decisions(list(tasks))
    scales = [d.element for d in decisions if d.element is not None]
    fusions = next(list(d.candidates) for d in decisions if d.path[-1] == "fusion")
    return _mteb_net(cfg, tasks, scales, fusions, search=True, name=space.group)


def build_model(cfg: dict, tasks: Mapping[str, Task], kind: str | None = None, **kw):
    from trcnas.nas.plugins import load_plugins

    load_plugins(cfg)
    return MODELS.build(kind or cfg["model"]["type"], cfg, tasks, **kw)
