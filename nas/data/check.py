"""``trcnas data check``: read every sample of a dataset copy once, before hours are spent on it, and say per task
what was found (counts, value ranges, units, class histogram, label-edge thickness, image sizes) and every
problem that makes the copy unusable (missing or unreadable files, wrong shapes, depth in millimetres, 16-bit
normals, thick edges, class indices out of range)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from trcnas.nas.data import real, relations, synthetic  # noqa: F401  (register the datasets)
from trcnas.nas.data.base import DATASETS
from trcnas.nas.errors import UserError
from trcnas.nas.progress import bar
from trcnas.nas.schema import DataSection

MAX_DEPTH_M = 20.0  # indoor depth beyond this is not metres (NYUD-v2 reaches about 10 m)
THICK_EDGE_SHARE = 0.25  # edge pixels that survive a 3x3 erosion: thin (1-2 px) edges leave almost none


@dataclass
class TaskStats:
    """What one task's labels held over the samples read."""

    read: int = 0
    dtypes: Counter = field(default_factory=Counter)
    lo: float = float("inf")
    hi: float = float("-inf")
    invalid: int = 0  # pixels stored as "no label" (depth 0, class unlabelled)
    pixels: int = 0
    classes: Counter = field(default_factory=Counter)
    edge_pixels: int = 0
    edge_core: int = 0  # edge pixels left after a 3x3 erosion
    bad_norm: int = 0  # stored normals whose length is not 1
    sixteen_bit: int = 0  # 16-bit per channel colour PNGs (PIL keeps only their high byte)

    def add(self, arr: np.ndarray) -> None:
        self.read += 1
        self.dtypes[str(arr.dtype)] += 1
        finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
        if finite.size:
            self.lo, self.hi = min(self.lo, float(finite.min())), max(self.hi, float(finite.max()))
        self.pixels += arr.shape[0] * arr.shape[1]


@dataclass
class Report:
    dataset: str
    root: str
    splits: dict[str, int]
    tasks: dict[str, TaskStats]
    sizes: Counter
    problems: list[str]

    @property
    def usable(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        out = [f"data check: {self.dataset} at {self.root}; "
               + ", ".join(f"{s} split {n} samples" for s, n in self.splits.items())]
        hs = [h for h, _ in self.sizes]
        ws = [w for _, w in self.sizes]
        if hs:
            out.append(f"  {'images':9s} {sum(self.sizes.values())} read, {len(self.sizes)} sizes, "
                       f"{min(hs)}x{min(ws)} .. {max(hs)}x{max(ws)} (H x W)")
        for t, st in self.tasks.items():
            out.append(f"  {t:9s} {describe(t, st)}")
        if self.problems:
            out.append(f"problems ({len(self.problems)}):")
            out += [f"  {p}" for p in self.problems]
            out.append(f"verdict: NOT usable ({len(self.problems)} problem{'s' * (len(self.problems) > 1)}); fix "
                       "them and run `trcnas data check` again")
        else:
            out.append("verdict: usable (no problem found)")
        return out


def describe(task: str, st: TaskStats) -> str:
    if not st.read:
        return "0 read"
    kind = "/".join(sorted(st.dtypes))
    text = f"{st.read} read, {kind} {st.lo:.4g} .. {st.hi:.4g}"
    if task == "depth":
        text += f" ({'metres' if st.hi <= MAX_DEPTH_M else 'not metres: millimetres?'})"
        text += f", {100 * st.invalid / max(st.pixels, 1):.1f} % invalid (0)"
    if st.sixteen_bit:
        text += f", {st.sixteen_bit} 16-bit PNG files"
    if st.classes or task in ("semseg", "parts"):
        text += f", {100 * st.invalid / max(st.pixels, 1):.1f} % unlabelled"
    if st.classes:
        top = ", ".join(f"{c}: {100 * n / max(st.pixels, 1):.1f} %" for c, n in st.classes.most_common(5))
        text += f"; {len(st.classes)} classes present, largest {top}"
    if task == "edge":
        text += (f"; {100 * st.edge_pixels / max(st.pixels, 1):.2f} % edge pixels, "
                 f"{100 * st.edge_core / max(st.edge_pixels, 1):.0f} % of them thicker than 2 px")
    if task == "normals":
        text += " (8-bit codes for -1..1)" if st.dtypes.keys() <= {"uint8"} else " (vectors)"
        text += f"; {100 * st.bad_norm / max(st.pixels, 1):.1f} % not of unit length"
    return text


# per task: (stats, stored array, converted label) -> None (adds to the stats); problems follow from the stats
def _classes(st: TaskStats, raw: np.ndarray, label: np.ndarray) -> None:
    st.add(raw)
    values, counts = np.unique(label, return_counts=True)
    for v, n in zip(values.tolist(), counts.tolist()):
        if v == 255:
            st.invalid += n
        else:
            st.classes[int(v)] += n


def _depth(st: TaskStats, raw: np.ndarray, label: np.ndarray) -> None:
    st.add(raw)
    st.invalid += int((label <= 0).sum())


def _normals(st: TaskStats, raw: np.ndarray, label: np.ndarray) -> None:
    st.add(raw)
    if raw.dtype.kind == "f":
        norm = np.linalg.norm(raw.astype(np.float64), axis=-1)
        st.bad_norm += int(((norm > 0) & (np.abs(norm - 1) > 0.05)).sum())


def _edge(st: TaskStats, raw: np.ndarray, label: np.ndarray) -> None:
    st.add(raw)
    e = label > 0
    st.edge_pixels += int(e.sum())
    st.edge_core += int(ndimage.binary_erosion(e, np.ones((3, 3), bool)).sum())


INSPECT: dict[str, Callable] = {"semseg": _classes, "parts": _classes, "depth": _depth, "normals": _normals,
                                "edge": _edge, "saliency": lambda st, raw, label: st.add(raw)}


def _task_problems(task: str, st: TaskStats, info) -> list[str]:
    out = []
    if not st.read:
        return out
    if task == "depth" and st.hi > MAX_DEPTH_M:
        out.append(f"depth: values up to {st.hi:.4g} look like millimetres; depth must be in metres (divide the "
                   "files by 1000)")
    if task == "normals" and ("uint16" in st.dtypes or st.hi > 255 or st.sixteen_bit):
        out.append(f"normals: stored as 16-bit values ({st.sixteen_bit} 16-bit PNG files, of which trcnas would read "
                   "only the high byte, or integers above 255); store 8-bit PNGs (0..255 for -1..1) or float .npy "
                   "unit vectors")
    elif task == "normals" and st.bad_norm > 0.01 * st.pixels:
        out.append(f"normals: {100 * st.bad_norm / st.pixels:.1f} % of the stored vectors are not of unit length; "
                   "store unit normals (or 8-bit PNGs)")
    if task == "edge" and st.edge_core > THICK_EDGE_SHARE * max(st.edge_pixels, 1):
        out.append(f"edge: {100 * st.edge_core / st.edge_pixels:.0f} % of the edge pixels are thicker than 2 px; the "
                   "boundary metric and loss expect thin (1-2 px) edge maps")
    n = {"semseg": info.num_classes, "parts": info.num_parts}.get(task)
    if n and st.classes:
        beyond = sorted(c for c in st.classes if c != 255 and (c < 0 or c >= n))
        if beyond:
            out.append(f"{task}: class indices {beyond[:5]} outside 0..{n - 1} (after the dataset's own mapping); "
                       "check the label encoding")
    return out


def check_dataset(data_cfg: DataSection, splits: tuple[str, ...] = ("train", "val"), progress: bool = True) -> Report:
    """Read every sample of ``splits`` once (no cache, no augmentation) and report."""
    builder = DATASETS.get(data_cfg.dataset)
    adapter = getattr(builder, "adapter", None)
    if adapter is None:
        raise UserError(f"data check reads dataset copies on disk ({', '.join(_on_disk())}); "
                        f"data.dataset {data_cfg.dataset!r} is generated, nothing to check")
    if not data_cfg.root:
        raise UserError(f"data.root is not set: point it at your {data_cfg.dataset} copy")
    tasks = list(data_cfg.tasks)
    stats = {t: TaskStats() for t in tasks}
    sizes: Counter = Counter()
    failures: dict[str, list[str]] = {}  # problem kind -> messages (first one shown)
    counts = {}
    for split in splits:
        ds = adapter(data_cfg.root, split, tasks)
        counts[split] = len(ds)
        for i in bar(range(len(ds)), desc=f"checking {split}", enabled=progress, leave=False):
            try:
                _, image, raw = ds.raw(i)
            except UserError as e:
                kind = re.sub(r"\S*/\S*", "<path>", str(e))  # the same problem in other files: one line
                failures.setdefault(kind, []).append(f"{split} sample {ds.ids[i]!r}: {e}")
                continue
            sizes[image.shape[:2]] += 1
            for t, (path, arr) in raw.items():
                stats[t].sixteen_bit += _sixteen_bit_colour_png(path)
                INSPECT.get(t, lambda st, a, b: st.add(a))(stats[t], arr, ds.convert(t, arr, image.shape[:2]))
    info = builder.fixed_info
    problems = [f"{v[0]}" + (f" (and {len(v) - 1} more like it)" if len(v) > 1 else "") for v in failures.values()]
    for t in tasks:
        problems += _task_problems(t, stats[t], info)
    return Report(data_cfg.dataset, str(data_cfg.root), counts, stats, sizes, problems)


def _sixteen_bit_colour_png(path: Path) -> bool:
    """A PNG of 16 bits per colour channel, which PIL opens as 8-bit RGB (its high byte) without a word."""
    if Path(path).suffix.lower() != ".png":
        return False
    with Image.open(path) as im:
        return any(str(getattr(t, "args", t[3] if len(t) > 3 else "")).endswith(";16B") for t in im.tile)


def _on_disk() -> list[str]:
    return [n for n in DATASETS.names() if getattr(DATASETS.get(n), "adapter", None) is not None]
