"""Adapters for NYUD-v2 and PASCAL-Context in their standard multi-task on-disk layouts (nothing downloaded)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from scipy import io as sio

from trcnas.nas.data import partitions
from trcnas.nas.data.base import DATASETS, DenseDataset
from trcnas.nas.errors import UserError
from trcnas.nas.schema import DataSection
from trcnas.nas.tasks import DatasetInfo, label_layout
from trcnas.spaces.io import atomic_write_text

NYUD_LAYOUT = ("images/*.jpg|png, segmentation/*.png, depth/*.npy, normals/*.npy|png, edge/*.npy|png, "
               "gt_sets/{train,val}.txt")
PASCAL_LAYOUT = ("JPEGImages/*.jpg, semseg/pascal-context/*.png, human_parts/*.mat, normals_distill/*.png, "
                 "sal_distill/*.png, pascal-context/trainval/*.mat, ImageSets/Context/{train,val}.txt")


def _find(folder: Path, stem: str, exts: tuple[str, ...], layout: str) -> Path:
    for e in exts:
        p = folder / f"{stem}{e}"
        if p.exists():
            return p
    raise UserError(f"missing file {folder / stem}{{{','.join(exts)}}}; expected layout: {layout}")


def _read_image(path: Path, mode: str | None = None) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode) if mode else im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise UserError(f"cannot read image {path}: {e.__class__.__name__}; is the file corrupt?") from None


def _read_array(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise UserError(f"cannot read array {path}: {e}") from None
    return _read_image(path)


def _read_split(root: Path, rel: str, layout: str) -> list[str]:
    path = root / rel
    if not root.is_dir():
        raise UserError(f"dataset root {root} does not exist; expected layout: {layout}")
    if not path.is_file():
        raise UserError(f"split file {path} not found; expected layout: {layout}")
    ids = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if not ids:
        raise UserError(f"split file {path} lists no samples")
    return ids


def _check_shape(path: Path, label: np.ndarray, hw: tuple[int, int], channels: int | None = None):
    ok = label.shape[:2] == hw and (channels is None or (label.ndim == 3 and label.shape[2] == channels))
    if not ok:
        want = f"{hw[0]}x{hw[1]}" + (f"x{channels}" if channels else "")
        raise UserError(f"label {path} has shape {'x'.join(map(str, label.shape))}, expected {want} (image size)")


def _normals_from(arr: np.ndarray) -> np.ndarray:
    n = arr.astype(np.float32)
    if arr.dtype == np.uint8:
        n = n / 255.0 * 2 - 1
        n[(arr == 0).all(-1)] = 0
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    return np.where(norm > 0.5, n / np.maximum(norm, 1e-6), 0).astype(np.float32)


def _to_sample(image: np.ndarray, labels: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    out = {"image": torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255}
    for k, v in labels.items():
        out[k] = label_layout(k).to_tensor(v)
    return out


class RealDataset(DenseDataset):
    """A dataset copy on disk: ``raw(index)`` reads one sample's files as stored (what ``trcnas data check``
    inspects), ``load(index)`` converts them to training labels."""

    name = ""
    tasks_known: tuple[str, ...] = ()

    def __len__(self):
        return len(self.ids)

    def raw(self, index: int) -> tuple[Path, np.ndarray, dict[str, tuple[Path, np.ndarray]]]:
        """(image path, image H x W x 3 uint8, {task: (label path, the stored array)}); the shape checks run."""
        raise NotImplementedError

    def convert(self, task: str, arr: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        raise NotImplementedError

    def load(self, index):
        _, image, raw = self.raw(index)
        return _to_sample(image, {t: self.convert(t, arr, image.shape[:2]) for t, (_, arr) in raw.items()})

    def _unknown(self, t: str):
        return UserError(f"task {t!r} has no labels in {self.name} ({', '.join(self.tasks_known)})")


class NYUD(RealDataset):
    """NYUD-v2: 40 classes stored 1..40 with 0 = unlabelled (-> 255); depth in metres, 0 = invalid."""

    name, tasks_known = "NYUD-v2", ("semseg", "depth", "normals", "edge")
    # task -> (folder, file extensions, channels of the stored label)
    files = {"semseg": ("segmentation", (".png",), None), "depth": ("depth", (".npy", ".png"), None),
             "normals": ("normals", (".npy", ".png"), 3), "edge": ("edge", (".npy", ".png"), None)}

    def __init__(self, root, split, tasks, transform=None, seed=0, limit=None):
        super().__init__(tasks, transform, seed)
        self.root = Path(root)
        self.ids = _read_split(self.root, f"gt_sets/{split}.txt", NYUD_LAYOUT)[:limit]

    def raw(self, index):
        i, r = self.ids[index], self.root
        img_path = _find(r / "images", i, (".jpg", ".png"), NYUD_LAYOUT)
        image = _read_image(img_path, "RGB")
        out = {}
        for t in self.tasks:
            if t not in self.files:
                raise self._unknown(t)
            folder, exts, channels = self.files[t]
            p = _find(r / folder, i, exts, NYUD_LAYOUT)
            a = _read_array(p)
            _check_shape(p, a, image.shape[:2], channels)
            out[t] = (p, a)
        return img_path, image, out

    def convert(self, task, arr, hw):
        if task == "semseg":
            s = arr.astype(np.int64)
            return np.where(s == 0, 255, s - 1)
        if task == "depth":
            d = arr.astype(np.float32)
            return np.where(np.isfinite(d) & (d > 0), d, 0)
        if task == "normals":
            return _normals_from(arr)
        return (arr > 0).astype(np.float32)  # edge


class PascalContext(RealDataset):
    """PASCAL-Context multi-task: 59 classes (0 = background kept as class 0 when ``num_classes`` is 60),
    human parts from .mat (key ``parts``; a missing file = no person, all background), distilled normals
    and saliency, edges from the boundaries of the context label maps."""

    name, tasks_known = "PASCAL-Context", ("semseg", "parts", "saliency", "normals", "edge")

    def __init__(self, root, split, tasks, transform=None, seed=0, limit=None):
        super().__init__(tasks, transform, seed)
        self.root = Path(root)
        self.ids = _read_split(self.root, f"ImageSets/Context/{split}.txt", PASCAL_LAYOUT)[:limit]

    def _mat(self, path: Path, keys: tuple[str, ...]) -> np.ndarray:
        try:
            m = sio.loadmat(path)
        except Exception as e:  # scipy raises several types for broken files
            raise UserError(f"cannot read MATLAB file {path}: {e}") from None
        for k in keys:
            if k in m:
                return np.asarray(m[k])
        raise UserError(f"{path} has none of the keys {keys}")

    def raw(self, index):
        i, r = self.ids[index], self.root
        img_path = _find(r / "JPEGImages", i, (".jpg",), PASCAL_LAYOUT)
        image = _read_image(img_path, "RGB")
        hw = image.shape[:2]
        out = {}
        for t in self.tasks:
            if t == "semseg":
                p = _find(r / "semseg" / "pascal-context", i, (".png",), PASCAL_LAYOUT)
                a = _read_image(p)
            elif t == "parts":
                p = r / "human_parts" / f"{i}.mat"
                a = self._mat(p, ("parts", "PartMap")) if p.exists() else np.zeros(hw, np.int64)
            elif t == "normals":
                p = _find(r / "normals_distill", i, (".png",), PASCAL_LAYOUT)
                a = _read_image(p, "RGB")
            elif t == "saliency":
                p = _find(r / "sal_distill", i, (".png",), PASCAL_LAYOUT)
                a = _read_image(p, "L")
            elif t == "edge":
                p = _find(r / "pascal-context" / "trainval", i, (".mat",), PASCAL_LAYOUT)
                a = self._mat(p, ("LabelMap",))
            else:
                raise self._unknown(t)
            _check_shape(p, a, hw, 3 if t == "normals" else None)
            out[t] = (p, a)
        return img_path, image, out

    def convert(self, task, arr, hw):
        if task in ("semseg", "parts"):
            return arr.astype(np.int64)
        if task == "normals":
            return _normals_from(arr)
        if task == "saliency":
            return (arr > 127).astype(np.float32)
        e = np.zeros(hw, np.float32)  # edge: the boundaries of the context label map
        e[:, :-1] += arr[:, :-1] != arr[:, 1:]
        e[:-1, :] += arr[:-1, :] != arr[1:, :]
        return (e > 0).astype(np.float32)


CENTROID_IMAGES = 200  # training images the normal centroids are computed from


def centroid_cache_path(name: str, ds: DenseDataset, cache_dir: str | Path) -> Path:
    """The cache file of a dataset copy's normal centroids, keyed by the resolved root and the training
    images used: another ``data.root`` (or another split list) never reads stale centroids."""
    ids = list(ds.ids[:CENTROID_IMAGES])
    blob = json.dumps([str(Path(ds.root).resolve()), ids, partitions.__name__]).encode()
    return Path(cache_dir) / f"{name}-normal-centroids-{hashlib.sha1(blob).hexdigest()[:12]}.json"


def _read_centroids(path: Path) -> np.ndarray | None:
    """The cached centroids, or None when the file is absent or unreadable (then they are recomputed)."""
    try:
        c = np.array(json.loads(path.read_text()), dtype=np.float32)
    except (OSError, ValueError):
        return None
    return c if c.ndim == 2 and c.shape[1] == 3 and np.isfinite(c).all() else None


def _real_info(name: str, ds: DenseDataset, cfg: DataSection, **fixed) -> DatasetInfo:
    """Depth range and normal centroids from (up to 200 images of) the training split, cached as JSON
    (written atomically; an unreadable cache file is recomputed and replaced)."""
    info = DatasetInfo(name=name, **fixed)
    if "normals" in ds.tasks:
        cache = centroid_cache_path(name, ds, cfg.cache_dir)
        info.normal_centroids = _read_centroids(cache)
        if info.normal_centroids is None:
            sub = [ds.load(j)["normals"].permute(1, 2, 0).numpy() for j in range(min(len(ds), CENTROID_IMAGES))]
            info.normal_centroids = partitions.normal_centroids(np.concatenate([s.reshape(-1, 3) for s in sub]))
            atomic_write_text(cache, json.dumps(info.normal_centroids.tolist()))
    return info


def _build(cls, name, fixed):
    def builder(cfg: DataSection, tasks, split, transform=None, seed=0, progress=True):
        if not cfg.root:
            raise UserError(f"data.root is not set: point it at your {name} copy (layout: {cls.__doc__.split(':')[0]})")
        ds = cls(cfg.root, split, tasks, transform, seed, cfg.limit)
        train = ds if split == "train" else cls(cfg.root, "train", tasks, None, seed, cfg.limit)
        return ds, _real_info(name, train, cfg, **fixed)

    builder.adapter, builder.fixed_info = cls, DatasetInfo(name=name, **fixed)  # what `trcnas data check` reads
    return builder


DATASETS.add("nyud", _build(NYUD, "nyud", {"num_classes": 40, "edge_pos_weight": 0.8, "edge_max_dist": 0.011,
                                          "depth_range": (0.7, 10.0)}))
DATASETS.add("pascal", _build(PascalContext, "pascal", {"num_classes": 60, "num_parts": 7,
                                                       "edge_pos_weight": 0.95, "edge_max_dist": 0.0075}))
