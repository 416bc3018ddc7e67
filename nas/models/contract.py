"""What every network trcnas trains is, as named types instead of ad-hoc dicts, tuples and ``getattr`` probes.

- ``NetOutput``: ``{"pred": {task: B x C x h x w}, "aux": {task: aux logits}, "inter": {scale: {task: ...}}}``
  (``aux`` and ``inter`` may be empty): what ``forward`` / ``forward_batch`` / ``predict`` return and what the
  losses and meters read.
- ``PermutableUnit``: one feature that permutation importance may permute: its hook key (what
  ``forward(image, hooks={key: fn})`` passes through ``fn``), the target and source task, and its context label.
- ``DenseNetwork``: the base class. ``forward(image, hooks=None)`` is the network; the rest have defaults a
  network overrides when it needs more than the image (CompositeTasking's palette) or has units to permute.
  A network that also implements ``encode(image)`` / ``decode(*encoded, hooks=...)`` (``SplitNetwork``) lets
  importance run its backbone once and reuse the features for every permutation.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import NamedTuple, TypedDict

import torch
import torch.nn as nn

from trcnas.nas.losses import compute_losses


class NetOutput(TypedDict, total=False):
    pred: dict[str, torch.Tensor]
    aux: dict[str, torch.Tensor]
    inter: dict[int, dict[str, torch.Tensor]]


class PermutableUnit(NamedTuple):
    key: Hashable  # the hook key of forward(image, hooks=...)
    target: str
    source: str
    context: str  # what the unit is (a context type, "mTEB scale 2", ...)


Hooks = Mapping[Hashable, Callable[[torch.Tensor], torch.Tensor]]


class DenseNetwork(nn.Module):
    """Base class of every trained network (see the module docstring)."""

    # True when permuting a unit changes only its target's prediction (ATRC: a CP block feeds only its target's
    # fusion), so importance re-evaluates that task alone
    units_affect_only_their_target: bool = False

    def forward(self, image: torch.Tensor, hooks: Hooks | None = None) -> NetOutput:
        raise NotImplementedError

    def forward_batch(self, batch: Mapping[str, torch.Tensor]) -> NetOutput:
        """The training forward on a batch (image, labels, ``valid``)."""
        return self(batch["image"])

    def predict(self, batch: Mapping[str, torch.Tensor]) -> NetOutput:
        """The evaluation forward: ``pred`` in each task's meter format."""
        return self(batch["image"])

    def forward_image(self, image: torch.Tensor) -> NetOutput:
        """One forward on an image alone (what ``trcnas summary`` counts)."""
        return self(image)

    def compute_losses(self, out: NetOutput, batch: Mapping, tasks: Mapping, weights: Mapping[str, float]):
        """-> (total, {name: detached value}); the standard per-task losses by default."""
        return compute_losses(out, batch, tasks, weights)

    def permutable(self) -> list[PermutableUnit]:
        """The units permutation importance permutes (none by default)."""
        return []


class SplitNetwork(DenseNetwork):
    """A network whose forward is ``decode(*encode(image), hooks=hooks)``."""

    def encode(self, image: torch.Tensor) -> tuple:
        raise NotImplementedError

    def decode(self, *encoded, hooks: Hooks | None = None) -> NetOutput:
        raise NotImplementedError
