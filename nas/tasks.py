"""The task registry: each dense task with its output size, loss, aux label partition and metric meter."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from trcnas.nas import losses, metrics
from trcnas.nas.registry import Registry
from trcnas.nas.tensorops import channel_norm

TASKS = Registry("task")


@dataclass
class DatasetInfo:
    """What tasks need to know about a dataset's label spaces."""

    name: str
    num_classes: int = 40
    num_parts: int = 7
    depth_range: tuple[float, float] = (0.7, 10.0)  # for log-spaced depth bins (metres)
    normal_centroids: np.ndarray | None = None  # K x 3 unit vectors (k-means on training normals)
    edge_pos_weight: float = 0.95
    edge_max_dist: float = 0.011
    class_names: list[str] = field(default_factory=list)
    # the planted-relations benchmark (nas/data/relations.py): each task's number of joint-code classes and the
    # planted matrix {target: {source: type}}
    task_classes: dict[str, int] = field(default_factory=dict)
    relations: dict[str, dict[str, str]] | None = None


@dataclass(frozen=True)
class LabelLayout:
    """How a task's label is stored in a sample: ``channels`` None for an H x W map of class indices (``long``),
    else a C x H x W ``float32`` tensor; ``pad``: the value where a label is not to be learned (also what a crop or
    a batch of unequal images pads with); ``flip``: how a horizontal flip changes the values (``"negate_x"``:
    channel 0 changes sign, as a surface normal's x component does)."""

    channels: int | None
    pad: float
    flip: str | None = None

    @property
    def dtype(self) -> torch.dtype:
        return torch.long if self.channels is None else torch.float32

    def to_tensor(self, arr: np.ndarray) -> torch.Tensor:
        """An H x W (class map, or one channel) or H x W x C numpy label as this layout's tensor."""
        if self.channels is None:
            return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.int64))
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        return t[None] if t.dim() == 2 else t.permute(2, 0, 1).contiguous()

    def flipped(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` mirrored left-right, values changed as the flip rule says."""
        x = x.flip(-1)
        if self.flip == "negate_x":
            x = x.clone()
            x[0] = -x[0]
        elif self.flip is not None:
            raise ValueError(f"unknown flip rule {self.flip!r}")
        return x


# the non-task entries of a sample: the image (3 x H x W in [0, 1]) and the valid mask (False on padding)
SAMPLE_LAYOUTS = {"image": LabelLayout(3, 0.0), "valid": LabelLayout(1, False)}


def label_layout(key: str) -> LabelLayout:
    """The layout of a sample entry: ``image``, ``valid`` or a registered task's label."""
    return SAMPLE_LAYOUTS[key] if key in SAMPLE_LAYOUTS else TASKS.get(key).label


class Task:
    """A dense task. Besides its loss, aux partition and meter it carries its own metadata: ``title`` (how
    tables and figures name it; empty: its name), ``loss_weight`` (its published loss weight, the config's
    default ``loss_weights`` entry; None: no published weight, it weighs 1.0 unless the config says otherwise)
    and ``composite_output`` (the CompositeTasking output kind that decodes it, an ``OUTPUTS`` name; None: the
    task has no CompositeTasking output)."""

    name: str = ""
    metric: str = ""  # the primary metric key in the meter's output
    higher_is_better: bool = True
    unit: str = ""
    title: str = ""
    loss_weight: float | None = None
    composite_output: str | None = None

    def __init__(self, info: DatasetInfo):
        self.info = info

    out_channels: int = 1
    aux_regions: int = 2
    label: LabelLayout = LabelLayout(1, 255)  # one channel, 255 where not to be learned

    @property
    def ignore_value(self) -> float:
        """What a label holds where it is not to be learned."""
        return self.label.pad

    def mask_target(self, target: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``target`` with the pixels outside ``keep`` (B x H x W bool) set to ``ignore_value``."""
        k = keep if target.dim() == 3 else keep[:, None]
        return torch.where(k, target, torch.full_like(target, self.ignore_value))

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def aux_target(self, target: torch.Tensor) -> torch.Tensor:
        """Label region per pixel (B x H x W long, 255 where unlabelled) for the aux head's CE loss."""
        raise NotImplementedError

    def meter(self) -> metrics.Meter:
        raise NotImplementedError

    def aux_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return losses.cross_entropy(logits, self.aux_target(target))


class _Segmentation(Task):
    label = LabelLayout(None, 255)  # class indices, 255 unlabelled
    higher_is_better = True
    metric = "mIoU"
    unit = "%"

    @property
    def out_channels(self):
        return self.num_labels

    @property
    def aux_regions(self):
        return self.num_labels

    def loss(self, pred, target):
        return losses.cross_entropy(pred, target)

    def aux_target(self, target):
        return target.long()

    def meter(self):
        return metrics.ConfusionMeter(self.num_labels)


@TASKS.register("semseg")
class SemSeg(_Segmentation):
    name, title, loss_weight, composite_output = "semseg", "SemSeg", 1.0, "anchor"

    @property
    def num_labels(self):
        return self.info.num_classes


@TASKS.register("parts")
class HumanParts(_Segmentation):
    name, title, loss_weight, composite_output = "parts", "PartSeg", 2.0, "anchor"

    @property
    def num_labels(self):
        return self.info.num_parts


@TASKS.register("depth")
class Depth(Task):
    name, metric, higher_is_better, unit = "depth", "rmse", False, "m"
    title, loss_weight, composite_output = "Depth", 1.0, "scalar"
    out_channels = 1
    label = LabelLayout(1, 0.0)  # metres, 0 = invalid depth
    aux_regions = 40

    def loss(self, pred, target):
        return losses.masked_l1(pred, target)

    def aux_target(self, target):
        """Log-spaced bins: floor(K * log(d / d0) / log(d1 / d0)) clamped to [0, K-1]; invalid depth -> 255."""
        d0, d1 = self.info.depth_range
        d = target[:, 0]
        valid = d > 0
        b = torch.floor(self.aux_regions * torch.log(d.clamp_min(1e-6) / d0) / np.log(d1 / d0))
        b = b.clamp(0, self.aux_regions - 1).long()
        return torch.where(valid, b, torch.full_like(b, 255))

    def meter(self):
        return metrics.DepthMeter()


@TASKS.register("normals")
class Normals(Task):
    name, metric, higher_is_better, unit = "normals", "mean", False, "deg"
    title, loss_weight, composite_output = "Normals", 10.0, "normals"
    out_channels = 3
    label = LabelLayout(3, 0.0, flip="negate_x")  # unit vectors, zero vector = invalid; a flip negates x

    @property
    def aux_regions(self):
        c = self.info.normal_centroids
        return 40 if c is None else len(c)

    def loss(self, pred, target):
        return losses.normals_l1(pred, target)

    def aux_target(self, target):
        """Index of the nearest k-means centroid on the unit sphere; invalid normals -> 255."""
        if self.info.normal_centroids is None:
            raise ValueError("normals aux labels need dataset normal centroids (DatasetInfo.normal_centroids)")
        c = torch.as_tensor(self.info.normal_centroids, dtype=target.dtype, device=target.device)
        idx = torch.einsum("bchw,kc->bkhw", target, c).argmax(1)
        valid = channel_norm(target) > 0.5
        return torch.where(valid, idx, torch.full_like(idx, 255))

    def meter(self):
        return metrics.NormalsMeter()


class _Binary(Task):
    out_channels = 1
    aux_regions = 2
    higher_is_better = True
    unit = "%"

    def aux_target(self, target):
        t = target[:, 0]
        return torch.where(t == 255, torch.full_like(t, 255), (t > 0.5).to(t.dtype)).long()


@TASKS.register("edge")
class Edge(_Binary):
    name, metric = "edge", "odsF"
    title, loss_weight, composite_output = "Boundary", 50.0, "probability"

    def loss(self, pred, target):
        return losses.balanced_bce(pred, target, self.info.edge_pos_weight)

    def meter(self):
        return metrics.EdgeMeter(max_dist=self.info.edge_max_dist)


@TASKS.register("saliency")
class Saliency(_Binary):
    name, metric = "saliency", "maxF"
    title, loss_weight, composite_output = "Saliency", 5.0, "probability"

    def loss(self, pred, target):
        return losses.balanced_bce(pred, target)

    def meter(self):
        return metrics.SaliencyMeter()


class PlantedLayer(Task):
    """A task of the planted-relations benchmark (nas/data/relations.py). Its label is a joint code: the base
    digit (0 background, 1 a dim blob of the layer, 2 a bright one) plus 3 x the planted relation bits
    (``base + 3 * (bit_1 + 2 * bit_2 + ...)``). The network predicts each digit's logits in turn (3 for the base,
    2 per bit) and learns each with its own cross-entropy (their mean); the aux head predicts the base digit's
    three regions. Scored by the mean over the digits of each digit's own mIoU, so every planted pair weighs the
    same in the target's metric."""

    label = LabelLayout(None, 255)  # joint codes, 255 unlabelled
    metric = "digit_mIoU"
    higher_is_better = True
    unit = "%"
    aux_regions = 3

    def digits(self) -> list[tuple[str, int]]:
        """The base digit, then one bit per planted relation (none without a planted matrix)."""
        rel = (self.info.relations or {}).get(self.name, {})
        return [("base", 3), *((s, 2) for s, typ in rel.items() if typ != "none")]

    @property
    def out_channels(self):
        return sum(r for _, r in self.digits())

    def _split(self, target: torch.Tensor) -> list[torch.Tensor]:
        """Each digit of the joint code (255 stays 255: not learned)."""
        ignore = target == 255
        out, place = [], 1
        for _, r in self.digits():
            out.append(torch.where(ignore, torch.full_like(target, 255), (target // place) % r))
            place *= r
        return out

    def loss(self, pred, target):
        parts, start = [], 0
        for (_, r), digit in zip(self.digits(), self._split(target)):
            parts.append(losses.cross_entropy(pred[:, start : start + r], digit))
            start += r
        return torch.stack(parts).mean()

    def aux_target(self, target):
        return self._split(target.long())[0]

    def meter(self):
        return metrics.DigitMeter(self.digits())


for _layer in ("red", "green", "blue", "grain"):
    TASKS.add(_layer, type(f"Planted{_layer.title()}", (PlantedLayer,), {"name": _layer}))


def published_loss_weights() -> dict[str, float]:
    """Every registered task's published loss weight (the config's default ``loss_weights``)."""
    return {n: float(TASKS.get(n).loss_weight) for n in TASKS.names() if TASKS.get(n).loss_weight is not None}


def task_title(name: str) -> str:
    """How tables and figures name a task: its ``title``, or the name itself (also for a name no task has)."""
    return (TASKS.get(name).title or name) if name in TASKS else name


def build_tasks(names: list[str], info: DatasetInfo) -> dict[str, Task]:
    return {n: TASKS.build(n, info) for n in names}
