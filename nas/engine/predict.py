"""Task editing with a trained CompositeTasking network: one image, a user-drawn palette (PNG of task
indices), and the prediction of each task on the pixels the palette gives it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from trcnas.nas.composite.network import CompositeNet
from trcnas.nas.composite.palette import PaletteFile
from trcnas.nas.engine.importance import load_trained
from trcnas.nas.errors import UserError
from trcnas.spaces.io import atomic_write_bytes


@torch.no_grad()
def predict_with_palette(run_dir: str | Path, palette: str | Path, index: int = 0, device: str | None = None,
                         out: str | Path | None = None) -> dict:
    """-> {"palette", "output" (3 x H x W), task: map}; each task's map holds its decoded prediction where
    the palette asks for it (class ids, metres, unit normals, probabilities) and 255 / NaN elsewhere.
    With ``out`` (a .npz path) also writes the arrays and ``<out>.png``, the sigmoid of the raw output as RGB
    (the segmentation regions show their class anchors' colours)."""
    cfg, model, tasks, val = load_trained(Path(run_dir), device)
    if not isinstance(model, CompositeNet):
        raise UserError(f"{run_dir}: task editing needs a CompositeTasking run (model.type composite)")
    if not 0 <= index < len(val):
        raise UserError(f"--index {index}: the val split has {len(val)} images (0..{len(val) - 1})")
    dev = next(model.parameters()).device
    model.eval()
    image = val[index]["image"][None].to(dev)
    pal = PaletteFile(list(tasks), path=str(palette))({"image": image})
    o = model.predict_palette(image, pal)
    result = {"palette": pal[0].cpu().numpy(), "output": o[0].cpu().numpy(), "index": index}
    for k, (t, head) in enumerate(model.outputs.items()):
        v = head.value(o)[0].cpu()
        ids = not v.is_floating_point()  # class ids
        v = v[0] if v.dim() == 3 and len(v) == 1 else v  # one channel: an H x W map
        where = (pal[0] == k).cpu()
        m = torch.where(where if v.dim() == 2 else where[None], v.float(), torch.tensor(float(head.fill)))
        result[t] = m.numpy().astype(np.uint8 if ids else np.float32)
    if out is not None:
        out = Path(out)
        buf = io.BytesIO()
        np.savez_compressed(buf, **{k: np.asarray(v) for k, v in result.items()})
        atomic_write_bytes(out, buf.getvalue())

        inside = torch.sigmoid(o[0].double()).cpu().numpy()  # the unit cube, where the anchors live
        rgb = np.rint(inside.transpose(1, 2, 0) * 255).astype(np.uint8)
        png = io.BytesIO()
        Image.fromarray(rgb).save(png, format="PNG")
        atomic_write_bytes(out.with_suffix(".png"), png.getvalue())
    return result
