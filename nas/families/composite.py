"""CompositeTasking: the task representation block's depth and width (spaces/composite.yaml)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from trcnas.nas.composite.embedding import EMBEDDING_INITS, SearchTaskEmbedding, TaskEmbedding
from trcnas.nas.composite.network import CompositeNet
from trcnas.nas.composite.outputs import ANCHOR_RULES, NORMALS_READINGS
from trcnas.nas.composite.palette import build_palette_rule
from trcnas.nas.errors import UserError
from trcnas.nas.families import SpaceFamily, register_family
from trcnas.nas.models.backbones import backbone_of
from trcnas.nas.schema import ConfigBase, Section, register_section


class CompositeSection(Section):
    """``model.composite``: CompositeTasking (nas/composite)."""

    code_length: int = Field(20, gt=0)  # ones per task in its task code
    conditioning: Literal["pixel", "image"] = "pixel"  # pixel: CompositeTasking; image: Task Switching
    # full: the reference's decoder (on to full resolution, with an image skip); quarter: stops at 1/4 and
    # upsamples the 3-channel output (cheaper)
    decoder: Literal["full", "quarter"] = "full"
    # training palettes: rule single | mosaic | semantic (classes: {class: task}, default) | random |
    # file (path: PNG of task indices)
    palette: dict[str, Any] = {"rule": "mosaic"}
    anchor_eps: float = Field(1.0e-8, gt=0)  # seg logits 1 / (distance of the sigmoid output to an anchor + eps)
    focal_gamma: float = Field(2.0, ge=0)
    # class anchors in [inset, 1 - inset]^3; 0 = the paper (anchors on the cube's corners and faces, where the
    # sigmoid saturates); 0.1 measured worse (docs/results.md)
    anchor_inset: float = Field(0.0, ge=0, lt=0.5)
    # where the class anchors sit: lattice (spread over the cube by farthest-point order on a 3-point-per-axis
    # lattice: corners, edge midpoints, centre) or voc (the PASCAL VOC colour map, the paper's 21 segmentation
    # anchors; its first 9 colours lie in [0, 128/255]^3); voc measured worse on the synthetic benchmark
    # (docs/results.md)
    anchors: Literal[ANCHOR_RULES] = "lattice"
    # raw (the reference): the normal is the direction of the pre-sigmoid output; sigmoid: of 2 sigmoid(o) - 1
    # (a deviation kept as an option)
    normals: Literal[NORMALS_READINGS] = "raw"
    # LeakyReLU slope in the task composition blocks: 0.01, the reference's (nn.LeakyReLU())
    block_slope: float = Field(0.01, ge=0, lt=1)
    # the palette pyramid's 2x halving: plain bilinear, the reference's (each level holds each task's share of
    # its cell); true: antialiased (a wider triangle filter, a deviation kept as an option)
    palette_antialias: bool = False
    # smaller details where trcnas differs from the reference, measured together (`trcnas compare
    # composite-mosaic`'s composite_ref row, embedding_init below included; the reference's four measured worse,
    # docs/results.md, so trcnas's stay the defaults): the kernel of the block on
    # the coarsest backbone level (reference: 1, a skip block), the decoder's bilinear upsampling (reference:
    # align_corners true) and the gamma/beta networks' hidden width (null: each block's output width;
    # reference: 128 or 256 by level, for its 64-512-channel blocks)
    top_kernel: Literal[1, 3] = 3
    align_corners: bool = False
    film_hidden: int | None = Field(None, gt=0)
    # how the task representation block's FC layers start (nas/composite/embedding.py): kaiming (zero bias,
    # scale kept through the layers) or torch (PyTorch's nn.Linear default, the reference's); see above
    embedding_init: Literal[EMBEDDING_INITS] = "kaiming"


register_section("model.composite", CompositeSection)


def composite_net(cfg: ConfigBase, tasks, embedding):
    m, c = cfg.model, cfg.model.composite
    if c.conditioning == "image" and c.palette.get("rule", "mosaic") != "single":
        raise UserError("model.composite.conditioning image (Task Switching) needs one task per image: "
                        f"set model.composite.palette.rule to single, not {c.palette.get('rule', 'mosaic')!r}")
    backbone = backbone_of(cfg)
    rule = build_palette_rule(c.palette, list(tasks), getattr(next(iter(tasks.values())).info, "class_names", ()))
    return CompositeNet(backbone, tasks, embedding, m.channels or 64, rule, c.conditioning,
                        decoder=c.decoder, anchor_eps=c.anchor_eps, focal_gamma=c.focal_gamma,
                        anchor_inset=c.anchor_inset, anchors=c.anchors, normals=c.normals,
                        block_slope=c.block_slope, palette_antialias=c.palette_antialias,
                        top_kernel=c.top_kernel, align_corners=c.align_corners, film_hidden=c.film_hidden)


@register_family
class CompositeTasking(SpaceFamily):
    name = space = "composite"
    config = "synthetic-composite"
    label = "CompositeTasking (searched embedding)"
    section = "model.composite"

    def supergraph(self, cfg, tasks, space):
        """Gumbel mixtures over the embedding network's depth exits and width masks."""
        d = {x.path[-1]: x for x in space.decisions(list(tasks))}
        c = cfg.model.composite
        emb = SearchTaskEmbedding(len(tasks), d["embedding_depth"], d["embedding_width"], c.code_length,
                                  c.embedding_init)
        return composite_net(cfg, tasks, emb)

    def fixed(self, cfg, tasks, architecture):
        """A fixed task representation block (the architecture's, else the space's defaults: depth 6, width
        128)."""
        ch = self.choices(cfg, architecture)
        c = cfg.model.composite
        emb = TaskEmbedding(len(tasks), int(ch["embedding_depth"]), int(ch["embedding_width"]), c.code_length,
                            c.embedding_init)
        return composite_net(cfg, tasks, emb)
