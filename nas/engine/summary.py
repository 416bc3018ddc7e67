"""Parameters (M) and multiply-adds (G) of a network, in total and per module, via torch's flop counter."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _flops_of(flops: dict, key: str, module: torch.nn.Module) -> float:
    """FLOPs inside ``module``; a module whose own forward was not called (e.g. a backbone used through
    another method) sums its children."""
    if key in flops:
        return sum(flops[key].values())
    return sum(_flops_of(flops, f"{key}.{n}", c) for n, c in module.named_children())


@torch.no_grad()
def model_summary(model: torch.nn.Module, image_size: tuple[int, int], depth: int = 2) -> dict:
    """One forward pass in eval mode on a 1 x 3 x H x W input (``model.forward_image`` when the network needs
    more than an image, e.g. CompositeTasking: one output for a one-task palette). MAdds = FLOPs / 2 as
    counted by ``torch.utils.flop_counter`` (convolutions, matmuls, einsums; elementwise ops not counted)."""
    model.eval()
    x = torch.zeros(1, 3, *image_size, device=next(model.parameters()).device)
    counter = FlopCounterMode(display=False, depth=depth)
    with counter:
        getattr(model, "forward_image", model)(x)
    flops = counter.get_flop_counts()
    total = sum(flops.get("Global", {}).values())
    modules = []
    for name, child in model.named_children():
        containers = (torch.nn.ModuleDict, torch.nn.ModuleList)
        sub = list(child.named_children()) if isinstance(child, containers) else [("", child)]
        for n, m in sub:
            key = f"{name}.{n}" if n else name
            f = _flops_of(flops, f"{type(model).__name__}.{key}", m)
            modules.append({"module": key, "params_M": count_params(m) / 1e6, "madds_G": f / 2 / 1e9})
    return {"params_M": count_params(model) / 1e6, "madds_G": total / 2 / 1e9, "input": list(image_size),
            "modules": modules}
