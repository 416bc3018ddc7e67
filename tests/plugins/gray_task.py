"""A task defined outside the trcnas package (the README's "Extending" example): predict each pixel's gray
level. One file registers the task (its label layout, loss, aux partition and metric) and a dataset that yields
its labels (the synthetic benchmark plus a ``gray`` label); the config names both."""

import torch

from trcnas.nas import losses, metrics
from trcnas.nas.data.base import DATASETS, DenseDataset
from trcnas.nas.data.synthetic import build_synthetic
from trcnas.nas.tasks import TASKS, LabelLayout, Task


@TASKS.register("gray")
class Gray(Task):
    name, metric, higher_is_better, unit = "gray", "rmse", False, ""
    title, loss_weight = "Gray level", 2.0  # how figures name it; its default loss weight
    out_channels = 1
    label = LabelLayout(1, 0.0)  # 1 x H x W in [0.1, 1.1]; 0 = not to be learned (e.g. padding)
    aux_regions = 4  # the aux head / label contexts see 4 gray bands

    def loss(self, pred, target):
        return losses.masked_l1(pred, target)

    def aux_target(self, target):
        t = target[:, 0]
        bands = ((t - 0.1).clamp(0, 0.999) * self.aux_regions).long()
        return torch.where(t > 0, bands, torch.full_like(bands, 255))

    def meter(self):
        return metrics.DepthMeter()  # RMSE over labelled pixels


class WithGray(DenseDataset):
    def __init__(self, inner, tasks, transform, seed):
        super().__init__(tasks, transform, seed)
        self.inner = inner

    def __len__(self):
        return len(self.inner)

    def load(self, index):
        sample = self.inner.load(index)
        sample["gray"] = 0.1 + sample["image"].mean(0, keepdim=True)
        return sample


@DATASETS.register("synthetic_gray")
def build_synthetic_gray(cfg, tasks, split, transform=None, seed=0, progress=True):
    inner, info = build_synthetic(cfg, [t for t in tasks if t != "gray"], split, None, seed, progress)
    return WithGray(inner, tasks, transform, seed), info
