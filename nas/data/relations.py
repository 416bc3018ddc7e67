"""The planted-relations benchmark: tasks tied to each other by construction, one context type per pair.

Every task is a *layer* of the image: blobs drawn in its own visual signature (``red``, ``green`` and ``blue``
add to one colour channel, ``grain`` modulates the brightness with a fine checker), all of a layer's blobs dim
or all bright. A task's label has a *base* digit, 0 off the layer's blobs, 1 on them when they are dim, 2 when
bright, plus one *relation bit* per (target, source) pair whose planted type is not ``none``; the label is the
joint code ``base + 3 * (bit_1 + 2 * bit_2 + ...)`` (bits in the order of ``data.tasks``). What decides a
relation bit, by type (``b_s``: the source's blob mask), always through the source's label alone:

- ``global``: whether the source's blobs cover more of the whole image than the median image: one bit for the
  whole image (an image-wide property of the source);
- ``local``: whether the pixel lies in the ring of ``radius`` pixels around the source's blobs (the source
  within a few pixels);
- ``tlabel``: on the target's own blobs, whether the source covers more of the target's blobs than the median
  image does (a statistic of the source inside the target's label regions);
- ``slabel``: on the target's own blobs, whether the source's blobs are of its bright class (which label
  class the source's blob regions hold).

``none`` plants no bit: the target's label never depends on that source. A self pair (target = source) may
plant ``none``, ``global`` or ``local``; on it ``tlabel`` is constant and ``slabel`` is no candidate of the
search space. Every sample is a deterministic function of ``(seed, index)`` and the matrix.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from trcnas.nas.data.base import DATASETS, DenseDataset, build_folder
from trcnas.nas.errors import UserError
from trcnas.nas.progress import bar
from trcnas.nas.schema import DataSection
from trcnas.nas.tasks import DatasetInfo, label_layout

FORMAT_VERSION = 2  # 2: a fainter grain checker
LAYERS = ("red", "green", "blue", "grain")  # the benchmark's tasks, one per visual layer
TYPES = ("none", "global", "local", "tlabel", "slabel")
SELF_TYPES = ("none", "global", "local")  # what a self pair can plant (see the module docstring)
DIM, BRIGHT = 0.15, 0.5  # a colour layer's blob amplitude (its base digit: dim or bright)
# the grain layer's checker amplitude, dim or bright: at most a third of the colour layers' dim-bright gap either
# way, so a colour blob under grain still tells its brightness pixel by pixel
GRAIN_DIM, GRAIN_BRIGHT = 0.05, 0.11


def check_relations(relations, tasks: list[str], where: str = "data.relations") -> dict[str, dict[str, str]]:
    """The matrix ``{target: {source: type}}`` checked against the run's tasks: every pair present, every type
    known and allowed; a mistake is one ``UserError`` line naming the pair."""
    if not isinstance(relations, dict):
        raise UserError(f"{where} must be a mapping {{target: {{source: type}}}}, got {relations!r}")
    bad_tasks = [t for t in tasks if t not in LAYERS]
    if bad_tasks:
        raise UserError(f"data.tasks: {bad_tasks[0]!r} is not a task of the relations dataset; use some of "
                        f"{', '.join(LAYERS)}")
    for t, row in relations.items():
        if t not in tasks:
            raise UserError(f"{where}.{t}: {t!r} is not one of data.tasks ({', '.join(tasks)})")
        if not isinstance(row, dict):
            raise UserError(f"{where}.{t} must be a mapping {{source: type}}, got {row!r}")
        for s, typ in row.items():
            if s not in tasks:
                raise UserError(f"{where}.{t}.{s}: {s!r} is not one of data.tasks ({', '.join(tasks)})")
            if typ not in TYPES:
                raise UserError(f"{where}.{t}.{s}: unknown relation type {typ!r}; use one of {', '.join(TYPES)}")
            if s == t and typ not in SELF_TYPES:
                raise UserError(f"{where}.{t}.{s}: a self pair can plant {', '.join(SELF_TYPES)}, not {typ!r} "
                                f"({'constant on the own blobs' if typ == 'tlabel' else 'not a candidate there'})")
    for t in tasks:
        for s in tasks:
            if s not in (relations.get(t) or {}):
                raise UserError(f"{where}.{t}.{s} is missing: give every (target, source) pair a type "
                                f"({', '.join(TYPES)})")
    return {t: {s: relations[t][s] for s in tasks} for t in tasks}


def check_also_right(also_right, where: str = "data.also_right") -> dict[str, list[str]]:
    """The score's classes ``{planted type: [types also counted right]}`` (or None: none): every type known; a
    mistake is one ``UserError`` line naming it."""
    if also_right is None:
        return {}
    for typ, others in also_right.items():
        if typ not in TYPES:
            raise UserError(f"{where}.{typ}: unknown relation type {typ!r}; use one of {', '.join(TYPES)}")
        for o in others:
            if o not in TYPES:
                raise UserError(f"{where}.{typ}: unknown relation type {o!r} in its list; use some of "
                                f"{', '.join(TYPES)}")
    return {typ: list(others) for typ, others in also_right.items()}


def relation_bits(relations: dict[str, dict[str, str]], target: str) -> list[str]:
    """The sources whose pair with ``target`` plants a bit, in label-bit order."""
    return [s for s, typ in relations[target].items() if typ != "none"]


def num_classes(relations: dict[str, dict[str, str]], target: str) -> int:
    return 3 * 2 ** len(relation_bits(relations, target))


@dataclass
class Layers:
    """The latent scene: per layer its blob mask (H x W bool) and whether it is drawn bright."""

    masks: dict[str, np.ndarray]
    bright: dict[str, bool]


class RelationGenerator:
    def __init__(self, tasks: list[str], relations: dict, size=(64, 64), radius: float = 12.0,
                 noise: float = 0.03):
        self.tasks = list(tasks)
        self.relations = check_relations(relations, self.tasks)
        self.h, self.w = size
        self.radius, self.noise = radius, noise
        self._yy, self._xx = np.mgrid[0 : self.h, 0 : self.w].astype(np.float32)
        self.coverage_median, self.overlap_median = self._medians()

    # the latent scene ------------------------------------------------------------------------------------------
    def _blobs(self, rng) -> np.ndarray:
        """A union of 1-3 random ellipses (radii 10-25 % of the image side: at least two pixels of the 1/4
        resolution features the context blocks work on)."""
        side = min(self.h, self.w)
        mask = np.zeros((self.h, self.w), bool)
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(0, self.h), rng.uniform(0, self.w)
            ry, rx = rng.uniform(0.1, 0.25, 2) * side
            th = rng.uniform(0, np.pi)
            dy, dx = self._yy - cy, self._xx - cx
            u, v = dx * np.cos(th) + dy * np.sin(th), -dx * np.sin(th) + dy * np.cos(th)
            mask |= (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
        return mask

    def layers(self, seed: int, index: int) -> Layers:
        rng = np.random.default_rng([seed, index, 7])
        masks, bright = {}, {}
        for name in LAYERS:  # all four are drawn whatever the tasks, so a subset of tasks sees the same scenes
            masks[name] = self._blobs(rng)
            bright[name] = bool(rng.random() < 0.5)
        return Layers(masks, bright)

    def _medians(self) -> tuple[float, float]:
        """The median coverage of one layer and the median share of one layer's blobs covered by another,
        over 400 reference scenes (fixed, whatever the seed): the thresholds that make global and T-label bits
        one half on average."""
        cov, ovl = [], []
        for i in range(400):
            lay = self.layers(-1 % 2**32, i)
            a, b = lay.masks["red"], lay.masks["green"]
            cov.append(a.mean())
            ovl.append((a & b).sum() / max(b.sum(), 1))
        return float(np.median(cov)), float(np.median(ovl))

    # labels from the latent scene ------------------------------------------------------------------------------
    def bit(self, typ: str, lay: Layers, target: str, source: str) -> np.ndarray:
        """The relation bit map (H x W bool) the pair (target, source) plants as ``typ``."""
        b_t, b_s = lay.masks[target], lay.masks[source]
        if typ == "global":
            return np.full(b_t.shape, b_s.mean() > self.coverage_median)
        if typ == "local":
            if not b_s.any():
                return np.zeros_like(b_s)
            dist = ndimage.distance_transform_edt(~b_s)
            return (dist > 0) & (dist <= self.radius)
        if typ == "tlabel":
            share = (b_s & b_t).sum() / max(b_t.sum(), 1)
            return b_t & (share > self.overlap_median)
        if typ == "slabel":
            return b_t & lay.bright[source]
        raise ValueError(f"no bit for relation type {typ!r}")

    def base(self, lay: Layers, task: str) -> np.ndarray:
        """The base digit: 0 off the layer's blobs, 1 on dim blobs, 2 on bright ones."""
        return lay.masks[task].astype(np.uint8) * (2 if lay.bright[task] else 1)

    def labels(self, lay: Layers) -> dict[str, np.ndarray]:
        out = {}
        for t in self.tasks:
            bits = np.zeros((self.h, self.w), np.uint8)
            for k, s in enumerate(relation_bits(self.relations, t)):
                bits |= self.bit(self.relations[t][s], lay, t, s).astype(np.uint8) << k
            out[t] = self.base(lay, t) + 3 * bits
        return out

    def image(self, lay: Layers, seed: int, index: int) -> np.ndarray:
        """H x W x 3 float in [0, 1]: a smooth grey background, each layer's blobs in its signature, noise."""
        rng = np.random.default_rng([seed, index, 11])
        fy, fx, ph = rng.uniform(0.5, 2.0), rng.uniform(0.5, 2.0), rng.uniform(0, 2 * np.pi, 2)
        bg = 0.3 + 0.06 * np.sin(2 * np.pi * fy * self._yy / self.h + ph[0]) \
            * np.cos(2 * np.pi * fx * self._xx / self.w + ph[1])
        img = np.repeat(bg[..., None], 3, axis=2)
        for c, name in enumerate(("red", "green", "blue")):
            img[..., c] += (BRIGHT if lay.bright[name] else DIM) * lay.masks[name]
        checker = np.where((self._yy.astype(int) + self._xx.astype(int)) % 2 == 0, 1.0, -1.0)
        amp = GRAIN_BRIGHT if lay.bright["grain"] else GRAIN_DIM
        img += (amp * checker * lay.masks["grain"])[..., None]
        img += rng.normal(0.0, self.noise, img.shape)
        return np.clip(img, 0, 1).astype(np.float32)

    def render(self, seed: int, index: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        lay = self.layers(seed, index)
        return self.image(lay, seed, index), self.labels(lay)


# the cached dataset --------------------------------------------------------------------------------------------
def cache_key(seed: int, size, n_train: int, n_val: int, tasks, relations, radius: float) -> str:
    blob = json.dumps([FORMAT_VERSION, seed, list(size), n_train, n_val, list(tasks), relations, radius]).encode()
    return f"relations-{size[0]}x{size[1]}-s{seed}-{n_train}-{n_val}-{hashlib.sha1(blob).hexdigest()[:10]}"


def build_cache(root: Path, seed: int, size, n_train: int, n_val: int, tasks, relations, radius: float = 12.0,
                progress: bool = True) -> Path:
    """Both splits (val uses the indices after train's) as .npy arrays, written to a temporary folder and
    renamed, so an interrupted build leaves nothing half-written."""
    def fill(tmp: Path) -> None:
        gen = RelationGenerator(tasks, relations, tuple(size), radius)
        for split, start, n in (("train", 0, n_train), ("val", n_train, n_val)):
            images = np.zeros((n, *size, 3), np.uint8)
            labels = {t: np.zeros((n, *size), np.uint8) for t in tasks}
            for i in bar(range(n), desc=f"rendering relations {split}", enabled=progress, leave=False):
                img, lab = gen.render(seed, start + i)
                images[i] = (img * 255 + 0.5).astype(np.uint8)
                for t in tasks:
                    labels[t][i] = lab[t]
            np.save(tmp / f"{split}_image.npy", images)
            for t in tasks:
                np.save(tmp / f"{split}_{t}.npy", labels[t])
        meta = {"format": FORMAT_VERSION, "seed": seed, "size": list(size), "n_train": n_train, "n_val": n_val,
                "tasks": list(tasks), "relations": gen.relations, "radius": radius,
                "classes": {t: num_classes(gen.relations, t) for t in tasks},
                "coverage_median": gen.coverage_median, "overlap_median": gen.overlap_median}
        (tmp / "info.json").write_text(json.dumps(meta, indent=1))

    return build_folder(Path(root) / cache_key(seed, size, n_train, n_val, tasks, relations, radius), fill)


class RelationsDataset(DenseDataset):
    def __init__(self, cache: Path, split: str, tasks, transform=None, seed: int = 0, limit: int | None = None):
        super().__init__(tasks, transform, seed)
        self.cache = Path(cache)
        self._image = np.load(self.cache / f"{split}_image.npy", mmap_mode="r")
        self._labels = {t: np.load(self.cache / f"{split}_{t}.npy", mmap_mode="r") for t in tasks}
        self.n = len(self._image) if limit is None else min(len(self._image), limit)

    def __len__(self):
        return self.n

    def load(self, index):
        out = {"image": torch.from_numpy(np.array(self._image[index])).permute(2, 0, 1).float() / 255}
        for t in self.tasks:
            out[t] = label_layout(t).to_tensor(np.asarray(self._labels[t][index]))
        return out


def label_spaces(cfg: DataSection) -> DatasetInfo:
    """Each task's joint-code classes and the planted matrix: all the data config says (nothing is rendered)."""
    tasks = list(cfg.tasks)
    relations = check_relations(cfg.relations, tasks)
    return DatasetInfo(name="relations", num_classes=2, task_classes={t: num_classes(relations, t) for t in tasks},
                       relations=relations)


@DATASETS.register("relations", info=label_spaces)
def build_relations(cfg: DataSection, tasks: list[str], split: str, transform=None, seed: int = 0,
                    progress: bool = True):
    relations = check_relations(cfg.relations, list(cfg.tasks))
    cache = build_cache(Path(cfg.cache_dir), cfg.seed, tuple(cfg.image_size), cfg.train_samples,
                        cfg.val_samples, list(cfg.tasks), relations, progress=progress)
    return RelationsDataset(cache, split, tasks, transform, seed, cfg.limit), label_spaces(cfg)
