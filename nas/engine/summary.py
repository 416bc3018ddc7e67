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


def _analytic_hooks(model: torch.nn.Module, counter: FlopCounterMode) -> tuple[dict, list]:
    """Modules with ``last_madds`` (an op whose implementation does more multiply-adds than the method, e.g.
    the halo-blocked local attention) count the method's MAdds: hooks record, per such module, the method's
    FLOPs minus those the counter saw inside it."""
    deltas: dict = {}
    handles = []

    def seen() -> float:
        return sum(counter.get_flop_counts().get("Global", {}).values())

    def pre(mod, _inp):
        mod._flops_before = seen()

    def post(mod, _inp, _out):
        deltas[mod] = deltas.get(mod, 0) + 2 * mod.last_madds - (seen() - mod._flops_before)

    for m in model.modules():
        if hasattr(m, "last_madds"):
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    return deltas, handles


@torch.no_grad()
def model_summary(model: torch.nn.Module, image_size: tuple[int, int], depth: int = 2) -> dict:
    """One forward pass in eval mode on a 1 x 3 x H x W input (``model.forward_image`` when the network needs
    more than an image, e.g. CompositeTasking: one output for a one-task palette). MAdds = FLOPs / 2 as
    counted by ``torch.utils.flop_counter`` (convolutions, matmuls, einsums; elementwise ops not counted), with
    the local attention counted as the method's window x window products (see ``LocalAttention``)."""
    model.eval()
    x = torch.zeros(1, 3, *image_size, device=next(model.parameters()).device)
    counter = FlopCounterMode(display=False, depth=depth)
    deltas, handles = _analytic_hooks(model, counter)
    try:
        with counter:
            model.forward_image(x)
    finally:
        for h in handles:
            h.remove()
    flops = counter.get_flop_counts()
    total = sum(flops.get("Global", {}).values()) + sum(deltas.values())
    modules = []
    for name, child in model.named_children():
        containers = (torch.nn.ModuleDict, torch.nn.ModuleList)
        sub = list(child.named_children()) if isinstance(child, containers) else [("", child)]
        for n, m in sub:
            key = f"{name}.{n}" if n else name
            f = _flops_of(flops, f"{type(model).__name__}.{key}", m) + sum(deltas.get(a, 0) for a in m.modules())
            modules.append({"module": key, "params_M": count_params(m) / 1e6, "madds_G": f / 2 / 1e9})
    return {"params_M": count_params(model) / 1e6, "madds_G": total / 2 / 1e9, "input": list(image_size),
            "modules": modules}
