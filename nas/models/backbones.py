"""Backbones: multi-scale features upsampled to 1/4 input resolution and concatenated (as ATRC does with
HRNet). timm models are built without downloading; pretrained weights come only from a local file."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from trcnas.nas.errors import UserError
from trcnas.nas.registry import Registry
from trcnas.nas.schema import ConfigBase

BACKBONES = Registry("backbone")


class MultiScaleConcat(nn.Module):
    """Wraps a feature extractor returning a list of maps; output = concat of all maps resized to the first."""

    def __init__(self, body: nn.Module, channels: list[int], keep: list[int]):
        super().__init__()
        self.body = body
        self.keep = keep
        self.out_channels = sum(channels[i] for i in keep)
        self.pyramid_channels = [channels[i] for i in keep]  # finest first

    def pyramid(self, x) -> list[torch.Tensor]:
        """The kept feature maps, finest (stride 4) first, for decoders that work scale by scale."""
        feats = self.body(x)
        return [feats[i] for i in self.keep]

    def forward(self, x):
        feats = self.pyramid(x)
        size = feats[0].shape[-2:]
        ups = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
        return torch.cat(ups, 1)


class _Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                                  nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return F.relu(x + self.body(x))


def _down(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class TinyNet(nn.Module):
    """A small residual CNN with branches at strides 4, 8, 16 (the fast CPU default), and 32 when given a
    fourth width (for four-scale decoders)."""

    def __init__(self, widths=(32, 64, 96)):
        super().__init__()
        if len(widths) not in (3, 4):
            raise UserError(f"backbone.options.widths: give 3 or 4 widths, got {list(widths)}")
        w1, w2, w3 = widths[:3]
        self.stem = nn.Sequential(_down(3, w1 // 2), _down(w1 // 2, w1), _Block(w1))
        self.s8 = nn.Sequential(_down(w1, w2), _Block(w2))
        self.s16 = nn.Sequential(_down(w2, w3), _Block(w3), _Block(w3))
        self.s32 = nn.Sequential(_down(w3, widths[3]), _Block(widths[3])) if len(widths) == 4 else None
        self.channels = list(widths)

    def forward(self, x):
        a = self.stem(x)
        b = self.s8(a)
        c = self.s16(b)
        return [a, b, c] if self.s32 is None else [a, b, c, self.s32(c)]


@BACKBONES.register("tiny")
def tiny(weights: str | None = None, widths=(32, 64, 96)):
    net = TinyNet(tuple(widths))
    if weights:
        _load_local(net, weights)
    return MultiScaleConcat(net, net.channels, list(range(len(widths))))


class PatchNet(nn.Module):
    """Two stride-2 3x3 Conv-BN-ReLU layers and a 1x1 one: features at 1/4 resolution that each see only a 7 x 7
    pixel patch. For benchmarks in which whatever lies further away must reach a task through the context blocks
    (the planted-relations benchmark), not through a deep backbone's receptive field."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(_down(3, width // 2), _down(width // 2, width),
                                  nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.channels = [width]

    def forward(self, x):
        return [self.body(x)]


@BACKBONES.register("patch")
def patch(weights: str | None = None, width: int = 32):
    net = PatchNet(int(width))
    if weights:
        _load_local(net, weights)
    return MultiScaleConcat(net, net.channels, [0])


def _read_weights(p: Path):
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a file that is not a checkpoint
        raise UserError(f"backbone.weights: {p} is not a readable PyTorch checkpoint ({e.__class__.__name__}); "
                        "give a state_dict saved with torch.save") from None


def _load_local(module: nn.Module, path: str) -> None:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"backbone.weights: file {p} not found (weights are only read from a local path)")
    state = _read_weights(p)
    state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not any(k in module.state_dict() for k in state):
        raise UserError(f"backbone.weights: no tensor of {p} matches the backbone (wrong file or architecture?)")
    try:
        module.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise UserError(f"backbone.weights: {p} does not fit the backbone: {str(e).splitlines()[1].strip()}") from None


# what the size-agnostic forward reads of timm's HighResolutionModule (tests/test_paper_setups.py checks the outputs
# equal timm's own where timm works)
FUSION_ATTRIBUTES = ("num_branches", "branches", "fuse_layers", "fuse_act")


def _hrnet_fusion_to_size(body: nn.Module) -> nn.Module:
    """Make timm's HRNet work at any input size, as the official HRNet (and ATRC's reference, via mmseg) does:
    in every exchange unit a coarser branch is upsampled *bilinearly* and then resized to the finer branch's
    exact size before the sum. timm upsamples by fixed nearest-neighbour factors, which needs sizes divisible
    by 32 (425x560 fails). For divisible sizes the resize is a no-op; parameters are unchanged, so the same
    ImageNet checkpoints load."""
    from timm.models.hrnet import HighResolutionModule

    sized = _sized_module_class()
    for m in body.modules():
        if isinstance(m, nn.Upsample):
            m.mode, m.align_corners = "bilinear", False
        if type(m) is HighResolutionModule:
            missing = [a for a in FUSION_ATTRIBUTES if not hasattr(m, a)]
            if missing:  # a timm release that reshaped the module: fail loudly, never fuse wrongly
                raise RuntimeError(f"timm's HighResolutionModule has no {', '.join(missing)}: the any-size HRNet "
                                   "fusion was written for timm 1.0.x (setup.cfg pins that range)")
            m.__class__ = sized
    return body


@functools.cache
def _sized_module_class():
    from timm.models.hrnet import HighResolutionModule

    class SizedHighResolutionModule(HighResolutionModule):
        def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
            if self.num_branches == 1:
                return [self.branches[0](x[0])]
            x = [branch(xi) for branch, xi in zip(self.branches, x)]
            fused = []
            for i, fuse_outer in enumerate(self.fuse_layers):
                y = None
                for j, f in enumerate(fuse_outer):
                    z = f(x[j])
                    if z.shape[-2:] != x[i].shape[-2:]:
                        z = F.interpolate(z, size=x[i].shape[-2:], mode="bilinear", align_corners=False)
                    y = z if y is None else y + z
                fused.append(self.fuse_act(y))
            return fused

    return SizedHighResolutionModule


def _timm_features(model_name: str, weights: str | None, **kw) -> nn.Module:
    """timm's ``features_only`` extractor of ``model_name``; pretrained weights only from the local file."""
    import timm

    if weights and not Path(weights).is_file():
        raise UserError(f"backbone.weights: file {weights} not found (weights are only read from a local path)")
    if weights:
        _read_weights(Path(weights))  # a clear line for a broken file, before timm reads it
    try:
        return timm.create_model(model_name, features_only=True, pretrained=bool(weights),
                                 pretrained_cfg_overlay={"file": str(weights)} if weights else None, **kw)
    except (RuntimeError, ValueError, TypeError, AssertionError) as e:
        raise UserError(f"model.backbone: timm cannot build {model_name!r} as a feature extractor "
                        f"({e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}); pick a model "
                        "that supports features_only, or check model.backbone.options") from None


def _timm(model_name: str, keep: list[int], any_size: bool = False, **kw):
    def build(weights: str | None = None, **extra):
        body = _timm_features(model_name, weights, **kw, **extra)
        if any_size:
            body = _hrnet_fusion_to_size(body)
        return MultiScaleConcat(body, body.feature_info.channels(), keep)

    return build


def _any_timm(model_name: str):
    """``timm:<name>``: any timm model as a backbone, its feature levels of stride 4 and coarser concatenated
    at the finest of them (all levels if none is that coarse)."""
    import timm

    if not model_name or not timm.is_model(model_name):
        close = timm.list_models(f"*{model_name}*")[:6] if model_name else []
        raise UserError(f"model.backbone.name: timm:{model_name} is not a model of timm {timm.__version__}; "
                        + (f"similar names: {', '.join(close)}" if close else "timm.list_models() lists them"))

    def build(weights: str | None = None, **options):
        body = _timm_features(model_name, weights, **options)
        reductions = body.feature_info.reduction()
        keep = [i for i, r in enumerate(reductions) if r >= 4] or list(range(len(reductions)))
        return MultiScaleConcat(body, body.feature_info.channels(), keep)

    return build


for _n in ("resnet18", "resnet34", "resnet50", "resnet101"):
    BACKBONES.add(_n, _timm(_n, [0, 1, 2, 3], out_indices=(1, 2, 3, 4)))
# raw HRNet branches (18+36+72+144 = 270 and 48+96+192+384 = 720 channels), skipping the stride-2 stem
BACKBONES.add("hrnet18", _timm("hrnet_w18_small_v2", [1, 2, 3, 4], any_size=True, feature_location=""))
BACKBONES.add("hrnet48", _timm("hrnet_w48", [1, 2, 3, 4], any_size=True, feature_location=""))
BACKBONES.add_prefix("timm:", _any_timm)


def backbone_of(cfg: ConfigBase):
    """A new backbone as ``model.backbone`` declares it."""
    b = cfg.model.backbone
    return BACKBONES.build(b.name, b.weights, **b.options)
