"""ATRC: one context type per (target, source) pair (spaces/atrc.yaml); fixed variants = one per context type."""

from __future__ import annotations

from trcnas.nas.families import SpaceFamily, model_type, register_family
from trcnas.nas.genotype import from_genotype, to_genotype
from trcnas.nas.models.atrc import ATRCModule
from trcnas.nas.models.backbones import backbone_of
from trcnas.nas.models.context import context_types
from trcnas.nas.models.multitask import MultiTaskNet
from trcnas.nas.schema import ConfigBase


def atrc_net(cfg: ConfigBase, tasks, pairs, search: bool):
    m = cfg.model
    backbone = backbone_of(cfg)
    channels = m.channels or max(1, backbone.out_channels // 4)
    probing = search and cfg.search.selection == "probes"
    probes = {t: task.out_channels for t, task in tasks.items()} if probing else None
    module = ATRCModule(list(tasks), channels, pairs, search=search, attn_channels=m.attn_channels,
                        probe_outputs=probes)
    return MultiTaskNet(backbone, tasks, channels, distill=module, aux_tasks=sorted(module.aux_tasks()),
                        dropout=0.0 if search else m.dropout)


@register_family
class ATRC(SpaceFamily):
    name = space = "atrc"
    config = "synthetic-atrc"
    label = "ATRC (searched)"

    def supergraph(self, cfg, tasks, space):
        """A MixedOp over the space's candidates for every (target, source) pair."""
        pairs = {t: {} for t in tasks}
        for d in space.decisions(list(tasks)):
            _, t, s = d.path
            pairs[t][s] = d
        return atrc_net(cfg, tasks, pairs, search=True)

    def fixed(self, cfg, tasks, architecture):
        """Only the chosen blocks; aux heads only for tasks some label block reads. Without an architecture:
        the multi-task baseline (the paper's Table 1 row the context blocks are added to)."""
        if architecture is None:  # no architecture: the multi-task network the ATRC module refines
            return model_type("multitask").fixed(cfg, tasks, None)
        rows = architecture.choices["atrc"]
        return atrc_net(cfg, tasks, {t: {s: rows[t][s] for s in tasks} for t in tasks}, search=False)

    def fixed_variants(self, space, tasks):
        cands = {c for d in space.decisions(list(tasks)) for c in d.candidates}
        return {t.name: f"{t.label[:1].upper()}{t.label[1:]} context" for t in context_types()
                if t.name != "none" and t.name in cands}

    def from_genotype(self, data, tasks=None):
        return from_genotype(data, tasks, space=self.space)

    def to_genotype(self, architecture):
        return to_genotype(architecture)
