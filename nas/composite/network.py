"""The CompositeTasking network: shared (unconditioned) encoder; decoder and skip connections made of task
composition blocks driven by the palette embedding; one 3-channel output whose meaning at each pixel is the
task the palette asks for there.

For the training loop it provides ``forward_batch`` (draws the training palette from its rule),
``compute_losses`` (each task's loss on its palette pixels) and ``predict`` (every task through a
single-task palette, decoded into the format of the task's meter; the encoder runs once).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from trcnas.nas.composite.blocks import BLOCK_SLOPE, TaskCompositionBlock, embedding_map, palette_pyramid
from trcnas.nas.composite.outputs import build_outputs
from trcnas.nas.composite.palette import PaletteRule
from trcnas.nas.models.contract import DenseNetwork
from trcnas.nas.tasks import Task
from trcnas.nas.tensorops import upsample_to

CONDITIONING = ("pixel", "image")  # image: Task Switching Networks (one task per image)


DECODERS = ("full", "quarter")


class CompositeNet(DenseNetwork):
    """``decoder``: ``full`` (the reference's): after the finest backbone level (1/4) the decoder goes on at 1/2
    and at full resolution, where it is joined by an image skip (two composition blocks on the input image);
    the 3-channel output is at input resolution. ``quarter``: the decoder stops at 1/4 and the 3-channel output
    is upsampled (cheaper: no full-resolution convolutions). ``block_slope``: the LeakyReLU slope of every task
    composition block; ``palette_antialias``: antialiased halving of the palette pyramid (not the reference's);
    ``top_kernel``: the kernel of the block on the coarsest backbone level (the reference: 1, its skip block
    there); ``align_corners``: of the decoder's bilinear upsampling (the reference: True); ``film_hidden``: the
    gamma/beta networks' hidden width (None: each block's output width); ``output_options`` go to each task's
    output reader (nas/composite/outputs.py)."""

    def __init__(self, backbone: nn.Module, tasks: Mapping[str, Task], embedding: nn.Module, channels: int,
                 rule: PaletteRule, conditioning: str = "pixel", decoder: str = "full",
                 block_slope: float = BLOCK_SLOPE, palette_antialias: bool = False, top_kernel: int = 3,
                 align_corners: bool = False, film_hidden: int | None = None, **output_options):
        super().__init__()
        if conditioning not in CONDITIONING:
            raise ValueError(f"conditioning must be one of {CONDITIONING}, got {conditioning!r}")
        self.task_names = list(tasks)
        self.backbone = backbone
        self.embedding = embedding
        cs = list(backbone.pyramid_channels)  # finest first
        e = embedding.out_channels
        block = functools.partial(TaskCompositionBlock, slope=block_slope, hidden=film_hidden)
        self.palette_antialias = palette_antialias
        self.align_corners = align_corners
        self.top = block(cs[-1], channels, e, kernel_size=top_kernel)
        self.skips = nn.ModuleList(block(c, channels, e, kernel_size=1) for c in reversed(cs[:-1]))
        self.fuse = nn.ModuleList(block(2 * channels, channels, e) for _ in cs[:-1])
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        self.decoder = decoder
        if decoder == "full":
            half = max(1, channels // 2)
            self.image_skip = nn.ModuleList([block(3, half, e), block(half, half, e)])
            self.up_half = block(channels, channels, e)  # at 1/2 (no backbone level there)
            self.up_full = block(channels + half, half, e)  # at 1/1, with the image skip
            self.head = nn.Conv2d(half, 3, 1)
        else:
            self.head = nn.Conv2d(channels, 3, 1)
        self.outputs = build_outputs(dict(tasks), **output_options)
        self.rule = rule
        self.conditioning = conditioning

    def _onehot(self, palette: torch.Tensor) -> torch.Tensor:
        if self.conditioning == "image":  # one task per image: its embedding broadcasts over the image
            palette = palette[:, :1, :1]
        return F.one_hot(palette, len(self.task_names)).permute(0, 3, 1, 2).float()

    def _up(self, x: torch.Tensor, size) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)

    def decode(self, feats: list[torch.Tensor], palette: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        emb = self.embedding()
        h, w = image.shape[-2:]
        sizes = [tuple(f.shape[-2:]) for f in feats]
        if self.decoder == "full":
            sizes += [((h + 1) // 2, (w + 1) // 2), (h, w)]
        pyramid = palette_pyramid(self._onehot(palette), sizes, self.palette_antialias)
        x = self.top(feats[-1], embedding_map(pyramid[tuple(feats[-1].shape[-2:])], emb))
        for skip, fuse, f in zip(self.skips, self.fuse, reversed(feats[:-1])):
            e = embedding_map(pyramid[tuple(f.shape[-2:])], emb)
            x = self._up(x, f.shape[-2:])
            x = fuse(torch.cat([x, skip(f, e)], 1), e)
        if self.decoder == "full":
            e_half, e_full = (embedding_map(pyramid[s], emb) for s in sizes[-2:])
            x = self._up(self.up_half(self._up(x, sizes[-2]), e_half), (h, w))
            s = image
            for block in self.image_skip:
                s = block(s, e_full)
            x = self.up_full(torch.cat([x, s], 1), e_full)
        return self.head(x)

    def forward(self, image: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
        """The 3-channel output before the sigmoid for ``palette`` (B x H x W task indices): B x 3 x H x W with
        the full decoder, B x 3 x H/4 x W/4 with the quarter one; each task reads it in its own bounded way
        (``nas.composite.outputs``: through a sigmoid, or, for normals, as a direction)."""
        return self.decode(self.backbone.pyramid(image), palette, image)

    def forward_image(self, image: torch.Tensor) -> torch.Tensor:
        """The output for a palette asking every pixel for the first task (for counting MAdds)."""
        b, _, h, w = image.shape
        return self(image, torch.zeros((b, h, w), dtype=torch.long, device=image.device))

    def forward_batch(self, batch: Mapping[str, torch.Tensor]) -> dict:
        palette = self.rule(batch)
        return {"out": self(batch["image"], palette), "palette": palette}

    def compute_losses(self, out: dict, batch: Mapping, tasks: Mapping[str, Task], weights: Mapping[str, float]):
        o = upsample_to(out["out"].float(), batch["image"].shape[-2:])
        total, parts = 0.0, {}
        for k, t in enumerate(self.task_names):
            loss = self.outputs[t].loss(o, batch[t], out["palette"] == k)
            parts[t] = loss.detach()
            total = total + float(weights.get(t, 1.0)) * loss
        return total, parts

    def predict_palette(self, image: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
        """The 3-channel output at input resolution."""
        return upsample_to(self(image, palette).float(), image.shape[-2:])

    def predict(self, batch: Mapping[str, torch.Tensor]) -> dict:
        image = batch["image"]
        feats = self.backbone.pyramid(image)
        b, _, h, w = image.shape
        pred = {}
        for k, t in enumerate(self.task_names):
            palette = torch.full((b, h, w), k, dtype=torch.long, device=image.device)
            pred[t] = self.outputs[t].decode(upsample_to(self.decode(feats, palette, image).float(), (h, w)))
        return {"pred": pred, "aux": {}}
