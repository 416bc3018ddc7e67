"""xTAM / mTEB: which decoder scales carry a multi-task exchange block and how it fuses (spaces/mteb.yaml)."""

from __future__ import annotations

from pydantic import Field

from trcnas.nas.families import SpaceFamily, register_family
from trcnas.nas.models.backbones import backbone_of
from trcnas.nas.models.mteb import MTEBNet
from trcnas.nas.schema import ConfigBase, Section, register_section


class MtebSection(Section):
    """``model.mteb``: the xTAM / mTEB multi-scale decoder (nas/models/mteb.py)."""

    max_query_tokens: int = Field(256, gt=0)  # derives each scale's attention downscale s from its feature size
    key_channels: int | None = Field(None, gt=0)  # d of the correlation attention (default C / 2)
    dir_channels: int | None = Field(None, gt=0)  # channels of each half of a directional feature (default C / 2)
    finest_scale: int = Field(1, ge=0, le=2)  # the decoder goes down to input / 2^finest_scale (paper: 1)


register_section("model.mteb", MtebSection)


def mteb_net(cfg: ConfigBase, tasks, scales, fusion, search: bool):
    m, x = cfg.model, cfg.model.mteb
    return MTEBNet(backbone_of(cfg), tasks, m.channels or 32, scales, fusion, search=search,
                   key_channels=x.key_channels, dir_channels=x.dir_channels,
                   max_query_tokens=x.max_query_tokens, dropout=0.0 if search else m.dropout,
                   finest_scale=x.finest_scale)


@register_family
class MTEB(SpaceFamily):
    name = space = "mteb"
    config = "synthetic-mteb"
    label = "mTEB (searched placement)"
    section = "model.mteb"

    def supergraph(self, cfg, tasks, space):
        """An off/on MixedOp per decoder scale and one shared fusion MixedOp."""
        decisions = space.decisions(list(tasks))
        scales = [d for d in decisions if d.element is not None]
        fusion = next(d for d in decisions if d.path[-1] == "fusion")
        return mteb_net(cfg, tasks, scales, fusion, search=True)

    def fixed(self, cfg, tasks, architecture):
        """The multi-scale decoder with mTEBs at the architecture's scales (default: the space's, scale 1, add)."""
        ch = self.choices(cfg, architecture)
        return mteb_net(cfg, tasks, ch["scales"], ch["fusion"], search=False)

    def fixed_variants(self, space, tasks):
        return {"off": "Plain decoder (no mTEB)"}
