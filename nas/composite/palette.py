"""Task Palettes (CompositeTasking Sec. 4): which task each pixel asks for, as a ``B x H x W`` long tensor
of task indices in the run's task order. Rules draw from the global torch RNG, whose state the loop
checkpoints, so a resumed run draws the same palettes.

Rules (``model.composite.palette.rule``): ``single`` (one task per image: Task Switching, or rule S),
``mosaic`` (R1r: four rectangles split at a point uniform in the middle half of each side), ``semantic``
(R2/R3: a class -> task mapping on the segmentation label), ``random`` (Rrnd: a task per pixel) and
``file`` (a user-drawn palette image: pixel value = task index; task editing).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from trcnas.nas.errors import UserError
from trcnas.nas.registry import Registry
from trcnas.spaces.io import atomic_write_bytes

PALETTE_RULES = Registry("palette rule")


class PaletteRule:
    options: tuple[str, ...] = ()  # the keys of model.composite.palette the rule reads besides ``rule``

    def __init__(self, tasks: Sequence[str], **_):
        self.tasks = list(tasks)

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def _shape(batch):
        img = batch["image"]
        return img.shape[0], img.shape[-2], img.shape[-1], img.device


@PALETTE_RULES.register("single")
class SingleTask(PaletteRule):
    """Every pixel of an image asks for the same task: ``task`` if given, else a random one per image."""

    options = ("task",)

    def __init__(self, tasks, task: str | None = None, **kw):
        super().__init__(tasks, **kw)
        if task is not None and task not in self.tasks:
            raise UserError(f"palette: task {task!r} is not one of the run's tasks {self.tasks}")
        self.task = task

    def __call__(self, batch):
        b, h, w, dev = self._shape(batch)
        if self.task is not None:
            return torch.full((b, h, w), self.tasks.index(self.task), dtype=torch.long, device=dev)
        k = torch.randint(len(self.tasks), (b,))
        return k.view(b, 1, 1).expand(b, h, w).contiguous().to(dev)


@PALETTE_RULES.register("mosaic")
class RandomMosaic(PaletteRule):
    """R1r: a vertical and a horizontal line through c = (cx, cy), c uniform in the middle half of the
    image; the four rectangles get four *distinct* tasks (a random permutation, as the reference draws
    them). With fewer than four tasks every task appears once and the remaining rectangles get random ones."""

    def __call__(self, batch):
        b, h, w, dev = self._shape(batch)
        cy = torch.randint(h // 4, max(h // 4 + 1, (3 * h) // 4 + 1), (b,))
        cx = torch.randint(w // 4, max(w // 4 + 1, (3 * w) // 4 + 1), (b,))
        k = len(self.tasks)
        quad = torch.argsort(torch.rand(b, k), dim=1)[:, :4]  # a random permutation per image
        if k < 4:
            extra = torch.randint(k, (b, 4 - k))
            quad = torch.cat([quad, extra], 1)
            quad = torch.gather(quad, 1, torch.argsort(torch.rand(b, 4), dim=1))
        below = (torch.arange(h).view(1, h, 1) >= cy.view(b, 1, 1)).long()
        right = (torch.arange(w).view(1, 1, w) >= cx.view(b, 1, 1)).long()
        index = 2 * below + right  # 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right
        return torch.gather(quad, 1, index.view(b, -1)).view(b, h, w).to(dev)


@PALETTE_RULES.register("semantic")
class SemanticRule(PaletteRule):
    """R2/R3: ``classes: {class name or id: task}``; pixels of other classes (and unlabelled ones) get
    ``default``. Reads the ``semseg`` label of the batch."""
    options = ("classes", "default")

    def __init__(self, tasks, classes: Mapping | None = None, default: str | None = None, class_names=(), **kw):
        super().__init__(tasks, **kw)
        if not classes:
            raise UserError("palette rule semantic needs model.composite.palette.classes: {class: task}")
        default = default or self.tasks[0]
        if default not in self.tasks:
            raise UserError(f"palette.default: {default!r} is not one of the run's tasks {self.tasks}")
        self.default = self.tasks.index(default)
        names = list(class_names)
        self.lut = torch.full((256,), self.default, dtype=torch.long)
        for c, t in classes.items():
            if t not in self.tasks:
                raise UserError(f"palette.classes.{c}: {t!r} is not one of the run's tasks {self.tasks}")
            if isinstance(c, int) or str(c).isdigit():
                cid = int(c)
            elif c in names:
                cid = names.index(c)
            else:
                raise UserError(f"palette.classes: unknown class {c!r} (known: {', '.join(names) or 'ids only'})")
            if not 0 <= cid < 255:
                raise UserError(f"palette.classes: class id {cid} out of range 0..254")
            self.lut[cid] = self.tasks.index(t)

    def __call__(self, batch):
        if "semseg" not in batch:
            raise UserError("palette rule semantic needs the semseg label in the batch (add semseg to data.tasks)")
        label = batch["semseg"].long().clamp(0, 255)
        return self.lut.to(label.device)[label]


@PALETTE_RULES.register("random")
class RandomPixels(PaletteRule):
    """Rrnd: an independent random task for every pixel."""

    def __call__(self, batch):
        b, h, w, dev = self._shape(batch)
        return torch.randint(len(self.tasks), (b, h, w)).to(dev)


@PALETTE_RULES.register("file")
class PaletteFile(PaletteRule):
    """A palette image drawn by the user (PNG, one channel): pixel value k asks for the k-th task of the
    run; resized (nearest) to each batch's size."""
    options = ("path",)

    def __init__(self, tasks, path: str | None = None, **kw):
        super().__init__(tasks, **kw)
        self.palette = load_palette_image(path, len(self.tasks))

    def __call__(self, batch):
        b, h, w, dev = self._shape(batch)
        p = self.palette[None, None].float()
        p = torch.nn.functional.interpolate(p, size=(h, w), mode="nearest")[0, 0].long()
        return p.expand(b, h, w).contiguous().to(dev)


def load_palette_image(path: str | Path | None, num_tasks: int) -> torch.Tensor:
    if not path:
        raise UserError("palette rule file needs model.composite.palette.path (a PNG of task indices)")
    p = Path(path)
    if not p.is_file():
        raise UserError(f"palette file {p} not found")
    try:
        img = Image.open(p)
        arr = np.asarray(img if img.mode in ("L", "P", "I") else img.convert("L"))
    except OSError as e:
        raise UserError(f"palette file {p} is not a readable image: {e}") from None
    if arr.ndim != 2:
        raise UserError(f"palette file {p}: expected a one-channel image of task indices")
    if arr.max() >= num_tasks:
        raise UserError(f"palette file {p}: value {int(arr.max())} but the run has {num_tasks} tasks "
                        f"(values must be task indices 0..{num_tasks - 1})")
    return torch.from_numpy(arr.astype(np.int64))


def save_palette_image(palette: torch.Tensor, path: str | Path) -> Path:
    """Writes one palette (H x W task indices) as the PNG ``load_palette_image`` reads."""
    buf = io.BytesIO()
    Image.fromarray(palette.cpu().numpy().astype(np.uint8), mode="L").save(buf, format="PNG")
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def build_palette_rule(spec: Mapping, tasks: Sequence[str], class_names: Sequence[str] = ()) -> PaletteRule:
    spec = dict(spec)
    rule = spec.pop("rule", "mosaic")
    extra = set(spec) - set(PALETTE_RULES.get(rule).options)
    if extra:
        raise UserError(f"model.composite.palette: rule {rule} takes no {', '.join(sorted(extra))} "
                        f"(its options: {', '.join(PALETTE_RULES.get(rule).options) or 'none'})")
    return PALETTE_RULES.build(rule, tasks, class_names=class_names, **spec)
