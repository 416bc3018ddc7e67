"""The 3-channel output of CompositeTasking, read as each task: losses masked to the task's palette pixels,
and decoding into the prediction format the task's meter expects.

- segmentation-like tasks (semseg, parts): fixed 3-D class anchors spread over the unit cube; logits
  l_i = 1 / (||o - a_i|| + eps); focal loss (gamma 2); decoding = nearest anchor.
- normals: the three channels are the vector; loss 1 - cos.
- scalar tasks (depth, edge, saliency): every channel predicts the value (the task's own loss on each),
  decoded as the channel mean.
"""

from __future__ import annotations

import functools
import math

import torch

from nas import losses
from nas.registry import Registry
from nas.tasks import Task

OUTPUTS = Registry("CompositeTasking output")


def class_anchors(num_classes: int) -> torch.Tensor:
    """``num_classes`` x 3 points of a lattice in [0, 1]^3, picked by farthest-point order from the origin
    (deterministic, as spread out as the lattice allows)."""
    n = max(2, math.ceil(num_classes ** (1 / 3)))
    g = torch.linspace(0, 1, n)
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
    def __init__(self, task: Task, anchor_eps: float = 0.05, focal_gamma: float = 2.0, **kw):
        super().__init__(task, **kw)
        self.anchors = class_anchors(task.out_channels)
        self.eps = anchor_eps
        self.gamma = focal_gamma

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        a = self.anchors.to(out.device, out.dtype)
        d = (out[:, None] - a[None, :, :, None, None]).pow(2).sum(2).add(1e-12).sqrt()  # B x C x H x W
        return 1.0 / (d + self.eps)

    def loss(self, out, target, keep):
        return losses.focal_loss(self.logits(out.float()), self.task.mask_target(target, keep), self.gamma)

    def decode(self, out):
        return self.logits(out.float())

    fill = 255

    def value(self, out):
        return self.decode(out).argmax(1)


class NormalsOutput(Output):
    def loss(self, out, target, keep):
        return losses.normals_cosine(out.float(), self.task.mask_target(target, keep))

    def decode(self, out):
        return out

    def value(self, out):
        return torch.nn.functional.normalize(out.float(), dim=1)


class ScalarOutput(Output):
    """``probability``: the value is a probability (binary tasks: the decoded channel is a logit)."""

    def __init__(self, task: Task, probability: bool = False, **kw):
        super().__init__(task, **kw)
        self.probability = probability

    def value(self, out):
        d = self.decode(out)
        return d.sigmoid() if self.probability else d

    def loss(self, out, target, keep):
        b, c = out.shape[:2]
        t = self.task.mask_target(target, keep).repeat_interleave(c, 0)  # rows b0c0, b0c1, ... like out
        return self.task.loss(out.float().reshape(b * c, 1, *out.shape[-2:]), t)

    def decode(self, out):
        return out.mean(1, keepdim=True)


OUTPUTS.add("semseg", AnchorOutput)
OUTPUTS.add("parts", AnchorOutput)
OUTPUTS.add("normals", NormalsOutput)
OUTPUTS.add("depth", ScalarOutput)
for _t in ("edge", "saliency"):
    OUTPUTS.add(_t, functools.partial(ScalarOutput, probability=True))


def build_outputs(tasks: dict[str, Task], **options) -> dict[str, Output]:
    return {t: OUTPUTS.build(t, task, **options) for t, task in tasks.items()}
