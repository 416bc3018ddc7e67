"""The embedded synthetic benchmark: rendered scenes cached on disk as .npy arrays per split and field."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from trcnas.nas.data import partitions
from trcnas.nas.data.base import DATASETS, DenseDataset, build_folder
from trcnas.nas.data.scenes import CLASSES, PARTS, SceneGenerator
from trcnas.nas.progress import bar
from trcnas.nas.schema import DataSection
from trcnas.nas.tasks import DatasetInfo, label_layout

FORMAT_VERSION = 2  # 2: thin 8-connected edge labels
# field -> (dtype on disk, channels-last shape suffix)
_FIELDS = {
    "image": (np.uint8, (3,)),
    "semseg": (np.uint8, ()),
    "depth": (np.float16, ()),
    "normals": (np.float16, (3,)),
    "edge": (np.uint8, ()),
    "saliency": (np.uint8, ()),
    "parts": (np.uint8, ()),
}


def cache_key(seed: int, size: tuple[int, int], n_train: int, n_val: int) -> str:
    blob = json.dumps([FORMAT_VERSION, seed, list(size), n_train, n_val]).encode()
    return f"synthetic-{size[0]}x{size[1]}-s{seed}-{n_train}-{n_val}-{hashlib.sha1(blob).hexdigest()[:8]}"


def build_cache(root: Path, seed: int, size: tuple[int, int], n_train: int, n_val: int,
                progress: bool = True) -> Path:
    """Render both splits (deterministic per (seed, index); val uses indices after train's) and store them
    with the label partitions computed from the training split. Written to a temporary folder and renamed,
    so an interrupted build leaves no half cache behind."""
    def fill(tmp: Path) -> None:
        gen = SceneGenerator(*size)
        for split, start, n in (("train", 0, n_train), ("val", n_train, n_val)):
            arrays = {
                k: np.lib.format.open_memmap(tmp / f"{split}_{k}.npy", mode="w+", dtype=dt, shape=(n, *size, *sh))
                for k, (dt, sh) in _FIELDS.items()
            }
            for i in bar(range(n), desc=f"rendering synthetic {split}", enabled=progress, leave=False):
                s = gen.render(seed, start + i)
                for k in _FIELDS:
                    arrays[k][i] = getattr(s, k)
            for a in arrays.values():
                a.flush()
        depth = np.load(tmp / "train_depth.npy", mmap_mode="r")
        normals = np.load(tmp / "train_normals.npy", mmap_mode="r")
        d0, d1 = partitions.depth_range(np.asarray(depth, dtype=np.float32))
        cent = partitions.normal_centroids(np.asarray(normals[: min(len(normals), 400)], dtype=np.float32), seed=seed)
        np.save(tmp / "normal_centroids.npy", cent)
        meta = {"format": FORMAT_VERSION, "seed": seed, "size": list(size), "n_train": n_train, "n_val": n_val,
                "depth_range": [d0, d1], "classes": list(CLASSES), "parts": list(PARTS)}
        (tmp / "info.json").write_text(json.dumps(meta, indent=1))

    return build_folder(Path(root) / cache_key(seed, size, n_train, n_val), fill)


def load_info(cache: Path) -> DatasetInfo:
    meta = json.loads((cache / "info.json").read_text())
    return DatasetInfo(
        name="synthetic",
        num_classes=len(meta["classes"]),
        num_parts=len(meta["parts"]),
        depth_range=tuple(meta["depth_range"]),
        normal_centroids=np.load(cache / "normal_centroids.npy"),
        edge_pos_weight=0.95,
        edge_max_dist=0.011,
        class_names=list(meta["classes"]),
    )


class SyntheticDataset(DenseDataset):
    def __init__(self, cache: Path, split: str, tasks, transform=None, seed: int = 0, limit: int | None = None):
        super().__init__(tasks, transform, seed)
        self.cache, self.split = Path(cache), split
        self._arrays = {k: np.load(self.cache / f"{split}_{k}.npy", mmap_mode="r") for k in _FIELDS}
        n = len(self._arrays["image"])
        self.n = n if limit is None else min(n, limit)

    def __len__(self):
        return self.n

    def load(self, index):
        a = self._arrays
        out = {"image": torch.from_numpy(np.array(a["image"][index])).permute(2, 0, 1).float() / 255}
        for k in self.tasks:
            out[k] = label_layout(k).to_tensor(np.asarray(a[k][index]))
        return out


def synthetic_label_spaces(cfg: DataSection) -> DatasetInfo:
    """The label spaces' sizes (all a network's shape needs), without rendering the data."""
    return DatasetInfo(name="synthetic", num_classes=len(CLASSES), num_parts=len(PARTS))


@DATASETS.register("synthetic", info=synthetic_label_spaces)
def build_synthetic(cfg: DataSection, tasks: list[str], split: str, transform=None, seed: int = 0,
                    progress: bool = True):
    size = tuple(cfg.image_size)
    cache = build_cache(Path(cfg.cache_dir), cfg.seed, size, cfg.train_samples, cfg.val_samples,
                        progress=progress)
    return SyntheticDataset(cache, split, tasks, transform, seed, cfg.limit), load_info(cache)
