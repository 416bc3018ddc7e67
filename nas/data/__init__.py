"""Datasets: the embedded synthetic benchmark and adapters for NYUD-v2 and PASCAL-Context."""

from __future__ import annotations

import torch

from trcnas.nas.data import real, relations, synthetic  # noqa: F401  (registers the datasets)
from trcnas.nas.data.base import DATASETS, DenseDataset
from trcnas.nas.data.transforms import build_train_transforms
from trcnas.nas.schema import DataSection
from trcnas.nas.tasks import DatasetInfo


def build_dataset(data_cfg: DataSection, split: str, train: bool, seed: int = 0, progress: bool = True):
    """-> (dataset, DatasetInfo). Training splits get the configured augmentations."""
    transform = None
    if train:
        crop = data_cfg.crop
        transform = build_train_transforms(data_cfg.augment, tuple(crop) if crop else None)
    return DATASETS.build(data_cfg.dataset, data_cfg, list(data_cfg.tasks), split, transform, seed, progress)


class DatasetPart(torch.utils.data.Dataset):
    """The samples ``indices`` of a dataset, keyed like it: an index, or ``(index, epoch)`` from
    StepBatchSampler (the part's index i is the dataset's ``indices[i]``, so augmentation stays a function of the
    dataset's own index and the epoch)."""

    def __init__(self, dataset, indices: list[int]):
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item):
        if isinstance(item, tuple):
            return self.dataset[(self.indices[item[0]], item[1])]
        return self.dataset[self.indices[item]]


def split_off(dataset, fraction: float, seed: int) -> tuple[DatasetPart, DatasetPart]:
    """(the rest, a held-out ``fraction`` of ``dataset``), by a permutation seeded by ``seed``."""
    perm = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed * 104_729 + 17)).tolist()
    k = round(len(dataset) * fraction)
    return DatasetPart(dataset, sorted(perm[k:])), DatasetPart(dataset, sorted(perm[:k]))


def label_spaces(data_cfg: DataSection):
    """The DatasetInfo a network's output sizes follow, from the config alone where the dataset can say it
    without reading its files (its registry entry's info: a function of the data config); else the defaults of
    a DatasetInfo named after the dataset."""
    of = DATASETS.info(data_cfg.dataset)
    return of(data_cfg) if of is not None else DatasetInfo(data_cfg.dataset)


class StepBatchSampler(torch.utils.data.Sampler):
    """Batches for global steps ``start .. total-1``: step k is batch k % nb of epoch k // nb, whose order is
    a permutation seeded by (seed, epoch). Yields ``(index, epoch)`` pairs so augmentation is a function of
    the step too: a resumed run sees exactly the batches it would have seen."""

    def __init__(self, n: int, batch_size: int, seed: int, total: int, start: int = 0, rank: int = 0,
                 world: int = 1):
        if n < batch_size:
            raise ValueError(f"dataset has {n} samples, fewer than one batch of {batch_size}")
        self.n, self.bs, self.seed, self.total, self.start = n, batch_size, seed, total, start
        self.per_epoch = n // batch_size
        self.rank, self.world = rank, world  # data parallel: this rank's equal slice of each global batch

    def _perm(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self):
        epoch, perm = -1, []
        for k in range(self.start, self.total):
            e, b = divmod(k, self.per_epoch)
            if e != epoch:
                epoch, perm = e, self._perm(e)
            batch = perm[b * self.bs : (b + 1) * self.bs]
            part = self.bs // self.world
            yield [(i, e) for i in batch[self.rank * part : (self.rank + 1) * part]]

    def __len__(self):
        return max(0, self.total - self.start)


__all__ = ["DATASETS", "DenseDataset", "StepBatchSampler", "build_dataset", "label_spaces"]
