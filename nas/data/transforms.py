"""Joint augmentations of an image and its dense labels (a dict of tensors).

Layout of a sample: ``image`` 3 x H x W float in [0, 1], ``valid`` 1 x H x W bool where padded, and each task's
label as its ``LabelLayout`` says (``trcnas.nas.tasks``: channels, dtype, pad / ignore value, flip rule).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from trcnas.nas.tasks import label_layout

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def _pad(key: str) -> float:
    """Where a crop (or a batch of unequal images) pads beyond the image: each label's ignore value (from its
    task's ``LabelLayout``); ``valid`` (1 x H x W bool, added by RandomCrop and pad_collate) is False there."""
    return label_layout(key).pad


def _resize(key: str, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if key == "image":
        return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
    squeeze = x.dim() == 2
    y = x[None, None] if squeeze else x[None]
    y = F.interpolate(y.float(), size=size, mode="nearest")[0]
    return (y[0] if squeeze else y).to(x.dtype)


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, sample, rng: torch.Generator):
        for t in self.transforms:
            sample = t(sample, rng)
        return sample


class RandomScale:
    def __init__(self, low: float = 0.75, high: float = 1.25):
        self.low, self.high = low, high

    def __call__(self, sample, rng):
        s = self.low + (self.high - self.low) * float(torch.rand((), generator=rng))
        h, w = sample["image"].shape[-2:]
        size = (max(1, round(h * s)), max(1, round(w * s)))
        return {k: _resize(k, v, size) for k, v in sample.items()}


class RandomCrop:
    def __init__(self, size: tuple[int, int]):
        self.size = tuple(size)

    def __call__(self, sample, rng):
        th, tw = self.size
        h, w = sample["image"].shape[-2:]
        ph, pw = max(th - h, 0), max(tw - w, 0)
        y0 = int(torch.randint(0, h + ph - th + 1, (), generator=rng))
        x0 = int(torch.randint(0, w + pw - tw + 1, (), generator=rng))
        out = {}
        sample = {**sample, "valid": sample.get("valid", torch.ones(1, h, w, dtype=torch.bool))}
        for k, v in sample.items():
            if ph or pw:
                v = F.pad(v, (0, pw, 0, ph), value=_pad(k))
            out[k] = v[..., y0 : y0 + th, x0 : x0 + tw]
        return out


def pad_collate(batch: list[dict]) -> dict:
    """Collate samples of unequal sizes (full-image evaluation of PASCAL, or NYUD at any size): each is padded
    at the bottom and right to the batch's largest height and width with each entry's pad value (labels ignored), and a
    ``valid`` mask is added. Samples of equal size are stacked as they are (no mask)."""
    sizes = {tuple(s["image"].shape[-2:]) for s in batch}
    if len(sizes) == 1:
        return default_collate(batch)
    hh, ww = max(h for h, _ in sizes), max(w for _, w in sizes)
    padded = []
    for s in batch:
        h, w = s["image"].shape[-2:]
        s = {**s, "valid": s.get("valid", torch.ones(1, h, w, dtype=torch.bool))}
        padded.append({k: v if v.dim() < 2 else F.pad(v, (0, ww - w, 0, hh - h), value=_pad(k))
                       for k, v in s.items()})
    return default_collate(padded)


class RandomHorizontalFlip:
    """Flips everything, each entry by its layout's flip rule (the normals' x component changes sign)."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, sample, rng):
        if float(torch.rand((), generator=rng)) >= self.p:
            return sample
        return {k: label_layout(k).flipped(v) for k, v in sample.items()}


class Photometric:
    """Brightness, contrast and saturation jitter of the image only."""

    def __init__(self, strength: float = 0.2):
        self.s = strength

    def __call__(self, sample, rng):
        img = sample["image"]
        b, c, s = (1 + self.s * (2 * torch.rand(3, generator=rng) - 1)).tolist()
        img = img * b
        mean = img.mean()
        img = (img - mean) * c + mean
        gray = img.mean(0, keepdim=True)
        img = (img - gray) * s + gray
        return {**sample, "image": img.clamp(0, 1)}


def normalize(image: torch.Tensor) -> torch.Tensor:
    return (image - MEAN) / STD


def build_train_transforms(aug, crop: tuple[int, int] | None) -> Compose:
    """The training transforms of a config's ``data.augment`` section and ``data.crop``."""
    ts = []
    if aug.scale:
        ts.append(RandomScale(*aug.scale))
    if crop:
        ts.append(RandomCrop(crop))
    if aug.flip:
        ts.append(RandomHorizontalFlip())
    if aug.photometric:
        ts.append(Photometric())
    return Compose(ts)
