"""The 3-channel output of CompositeTasking, read as each task: losses masked to the task's palette pixels,
and decoding into the prediction format the task's meter expects.

Every task reads the output in a bounded range, as the paper's reference code does: a sigmoid squashes it into
the unit cube [0, 1]^3 for segmentation, parts, edges, saliency (and depth), and normals are its direction on
the unit sphere:
- segmentation-like tasks (semseg, parts): fixed 3-D class anchors spread over the unit cube; logits
  l_i = 1 / (||sigmoid(o) - a_i|| + eps) with eps = 1e-8; focal loss (gamma 2); decoding = nearest anchor.
- normals: only the direction of the output counts, as in the reference, whose cosine loss and angular metric
  read the pre-sigmoid output (the sigmoid there feeds segmentation, parts and the edge / saliency
  probabilities): loss 1 - cos(o, n), prediction o / ||o||. (``normals="sigmoid"``: 2 sigmoid(o) - 1 first, the
  [0, 1] image encoding of unit normals, a deviation kept as an option.)
- edge, saliency: each channel's sigmoid is the probability; the task's BCE is computed on the
  pre-sigmoid value (the same maths, numerically stable); decoded as the mean probability of the channels.
- depth (not in the paper): each channel's sigmoid times ``depth_scale`` = 1.5 x the upper end of the
  dataset's depth range (its 99.5th percentile), so the data's depths sit inside the sigmoid's useful range;
  the task's masked L1 in metres on each channel; decoded as the channel mean.
"""

from __future__ import annotations

import functools
import math

import torch

from trcnas.nas import losses
from trcnas.nas.errors import UserError
from trcnas.nas.registry import Registry
from trcnas.nas.tasks import Task
from trcnas.nas.tensorops import unit

OUTPUTS = Registry("CompositeTasking output")
NORMALS_READINGS = ("raw", "sigmoid")  # how the normals task reads the 3-channel output


ANCHOR_RULES = ("lattice", "voc")  # how class anchors are placed in the cube


def voc_colours(num_classes: int) -> torch.Tensor:
    """The first ``num_classes`` colours of the PASCAL VOC colour map (bits of the class id interleaved into
    R, G, B from the most significant bit down), in [0, 1]: (0,0,0), (.5,0,0), (0,.5,0), (.5,.5,0), ...
    CompositeTasking's segmentation anchors are these colours (supplement, Table 5: its 21 anchors are the VOC
    map's first 21)."""
    out = torch.zeros(num_classes, 3)
    for i in range(num_classes):
        c = i
        for bit in range(7, -1, -1):
            for ch in range(3):
                out[i, ch] += ((c >> ch) & 1) << bit
            c >>= 3
    return out / 255.0


def class_anchors(num_classes: int, inset: float = 0.0, rule: str = "lattice") -> torch.Tensor:
    """``num_classes`` x 3 class anchors in [inset, 1 - inset]^3. ``lattice``: points of a {0, 1/2, 1}-style
    lattice picked by farthest-point order from the first corner (deterministic, as spread out as the lattice
    allows: the opposite corner, then edge midpoints, the centre...). ``voc``: the PASCAL VOC colour map, the
    paper's segmentation anchors (Table 5), whose first 9 colours stay in [0, 128/255]^3 (the paper's 7
    human-parts anchors, Table 6, are cube corners instead). ``inset`` 0 (the paper) puts anchors where the
    sigmoid saturates."""
    if rule not in ANCHOR_RULES:
        raise ValueError(f"anchor rule must be one of {ANCHOR_RULES}, not {rule!r}")
    if rule == "voc":
        return inset + (1 - 2 * inset) * voc_colours(num_classes)
    n = max(2, math.ceil(num_classes ** (1 / 3)))
    g = torch.linspace(inset, 1 - inset, n)
    pts = torch.cartesian_prod(g, g, g)
    chosen = [0]
    dist = (pts - pts[0]).norm(dim=1)
    for _ in range(num_classes - 1):
        i = int(dist.argmax())
        chosen.append(i)
        dist = torch.minimum(dist, (pts - pts[i]).norm(dim=1))
    return pts[chosen].clone()


class Output:
    def __init__(self, task: Task, **_):
        self.task = task

    def loss(self, out: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    fill: float = float("nan")  # what ``value`` maps hold where a task was not asked for

    def value(self, out: torch.Tensor) -> torch.Tensor:
        """The prediction in the task's own units (B x C x H x W, or B x H x W class ids)."""
        return self.decode(out)


class AnchorOutput(Output):
    def __init__(self, task: Task, anchor_eps: float = 1e-8, focal_gamma: float = 2.0, anchor_inset: float = 0.0,
                 anchors: str = "lattice", **kw):
        super().__init__(task, **kw)
        self.anchors = class_anchors(task.out_channels, anchor_inset, anchors)
        self.eps = anchor_eps
        self.gamma = focal_gamma

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        """1 / (distance of sigmoid(out), inside the unit cube, to each class anchor + eps)."""
        o = torch.sigmoid(out)
        a = self.anchors.to(o.device, o.dtype)
        d = torch.linalg.vector_norm(o[:, None] - a[None, :, :, None, None], dim=2)  # B x C x H x W (grad 0 at 0)
        return 1.0 / (d + self.eps)

    def loss(self, out, target, keep):
        return losses.focal_loss(self.logits(out.float()), self.task.mask_target(target, keep), self.gamma)

    def decode(self, out):
        return self.logits(out.float())

    fill = 255

    def value(self, out):
        return self.decode(out).argmax(1)


class NormalsOutput(Output):
    """``normals`` ``raw`` (the reference): the output's direction is the normal; ``sigmoid``: the direction of
    2 sigmoid(o) - 1."""

    def __init__(self, task: Task, normals: str = "raw", **kw):
        super().__init__(task, **kw)
        if normals not in NORMALS_READINGS:
            raise ValueError(f"normals must be one of {NORMALS_READINGS}, not {normals!r}")
        self.squash = normals == "sigmoid"

    def loss(self, out, target, keep):
        return losses.normals_cosine(self.decode(out.float()), self.task.mask_target(target, keep))

    def decode(self, out):
        return 2 * torch.sigmoid(out) - 1 if self.squash else out

    def value(self, out):
        return unit(self.decode(out.float()))


class ScalarOutput(Output):
    """``probability``: a binary task (edge, saliency): each channel's sigmoid is the probability, the loss is
    the task's BCE on the pre-sigmoid value, decoding gives the logit of the channels' mean probability.
    Otherwise (depth): each channel's sigmoid times ``depth_scale``."""

    def __init__(self, task: Task, probability: bool = False, **kw):
        super().__init__(task, **kw)
        self.probability = probability
        self.scale = 1.0 if probability else 1.5 * float(task.info.depth_range[1])

    def _channels(self, out):
        return out if self.probability else torch.sigmoid(out) * self.scale

    def value(self, out):
        d = self.decode(out)
        return d.sigmoid() if self.probability else d

    def loss(self, out, target, keep):
        b, c = out.shape[:2]
        t = self.task.mask_target(target, keep).repeat_interleave(c, 0)  # rows b0c0, b0c1, ... like out
        return self.task.loss(self._channels(out.float()).reshape(b * c, 1, *out.shape[-2:]), t)

    def decode(self, out):
        if self.probability:
            return torch.logit(torch.sigmoid(out.float()).mean(1, keepdim=True), eps=1e-6)
        return self._channels(out.float()).mean(1, keepdim=True)


# output kinds; each task names its own (Task.composite_output)
OUTPUTS.add("anchor", AnchorOutput)
OUTPUTS.add("normals", NormalsOutput)
OUTPUTS.add("scalar", ScalarOutput)
OUTPUTS.add("probability", functools.partial(ScalarOutput, probability=True))


def build_outputs(tasks: dict[str, Task], **options) -> dict[str, Output]:
    """Each task's output, of the kind the task names (``Task.composite_output``)."""
    missing = [t for t, task in tasks.items() if task.composite_output is None]
    if missing:
        raise UserError(f"task {missing[0]} has no CompositeTasking output (Task.composite_output is unset); "
                        f"give its task class one of the output kinds {', '.join(OUTPUTS.names())}, or leave it "
                        "out of data.tasks for model.type composite")
    return {t: OUTPUTS.build(task.composite_output, task, **options) for t, task in tasks.items()}
