"""Parameters (M) and multiply-adds (G) of a network, in total and per module, via torch's flop counter."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def model_summary(model: torch.nn.Module, image_size: tuple[int, int], depth: int = 2) -> dict:
    """One forward pass in eval mode on a 1 x 3 x H x W input. MAdds = FLOPs / 2 as counted by
    ``torch.utils.flop_counter`` (convolutions, matmuls, einsums; elementwise ops are not counted)."""
    model.eval()
    x = torch.zeros(1, 3, *image_size, device=next(model.parameters()).device)
    counter = FlopCounterMode(display=False, depth=depth)
    with counter:
        model(x)
    flops = counter.get_flop_counts()
    total = sum(flops.get("Global", {}).values())
    modules = []
    for name, child in model.named_children():
        sub = [(n, m) for n, m in child.named_children()] if isinstance(child, torch.nn.ModuleDict) else [("", child)]
        for n, m in sub:
            key = f"{name}.{n}" if n else name
            f = sum(flops.get(f"{type(model).__name__}.{key}", {}).values())
            modules.append({"module": key, "params_M": count_params(m) / 1e6, "madds_G": f / 2 / 1e9})
    return {"params_M": count_params(model) / 1e6, "madds_G": total / 2 / 1e9, "input": list(image_size),
            "modules": modules}
