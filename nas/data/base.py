"""Base class of the multi-task datasets and the dataset registry."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from trcnas.nas.data.transforms import Compose, normalize
from trcnas.nas.registry import Registry
from trcnas.spaces.io import give_umask_mode

DATASETS = Registry("dataset")


def build_folder(target: Path, fill: Callable[[Path], None]) -> Path:
    """A cache folder made by ``fill(tmp)`` in a temporary folder beside ``target`` and renamed to it once
    complete (its ``info.json`` marks a finished one, which is kept as it is): an interrupted build leaves
    nothing half-written, and of two processes building the same folder the first one's stays."""
    target = Path(target)
    if (target / "info.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    give_umask_mode(tmp)
    try:
        fill(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished the same folder first
            if not (target / "info.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


class DenseDataset(Dataset):
    """Yields ``{"image": normalised 3xHxW, <task>: label, "index": i}`` for the requested tasks.

    Subclasses implement ``__len__`` and ``load(index)`` returning un-normalised tensors (see transforms.py)."""

    def __init__(self, tasks: list[str], transform: Compose | None = None, seed: int = 0):
        self.tasks = list(tasks)
        self.transform = transform
        self.seed = seed

    def load(self, index: int) -> dict[str, torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def __getitem__(self, item) -> dict[str, torch.Tensor]:
        """``item`` is an index (epoch 0) or ``(index, epoch)`` from StepBatchSampler (augmentation reads both)."""
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        sample = self.load(index)
        sample = {k: v for k, v in sample.items() if k == "image" or k in self.tasks}
        if self.transform is not None:
            rng = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch * 100_003 + index) % 2**63)
            sample = self.transform(sample, rng)
        sample["image"] = normalize(sample["image"])
        sample["index"] = torch.tensor(index)
        return sample
