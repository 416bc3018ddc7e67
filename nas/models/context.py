"""Context Pooling (CP) blocks of ATRC: global, local, T-label and S-label relational context.

Every block maps (F_T, F_S, aux logits) to a B x C_v x H x W message for target T from source S.
Constructor arguments are the same for all: ``channels`` (task feature width C), ``attn_channels``
(query/key/value width, C/2 by default) and ``affine_value`` (False in the search supergraph).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.models.local_attention import local_attention
from nas.registry import Registry

CONTEXTS = Registry("context type")
CONTEXT_CODES = ("none", "global", "local", "tlabel", "slabel")  # reference genotype codes 0..4


def conv_bn_relu(cin: int, cout: int, relu: bool = True, affine: bool = True, dim: int = 2) -> nn.Sequential:
    conv = nn.Conv2d if dim == 2 else nn.Conv1d
    bn = nn.BatchNorm2d if dim == 2 else nn.BatchNorm1d
    layers = [conv(cin, cout, 1, bias=False), bn(cout, affine=affine)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ContextBlock(nn.Module):
    """Base: subclasses define ``forward(f_t, f_s, aux_t, aux_s)``. ``uses_aux`` names the aux maps it needs."""

    uses_aux: tuple[str, ...] = ()

    def __init__(self, channels: int, attn_channels: int | None = None, affine_value: bool = True):
        super().__init__()
        self.channels = channels
        self.attn_channels = attn_channels or max(1, channels // 2)
        self.affine_value = affine_value


@CONTEXTS.register("global")
class GlobalContext(ContextBlock):
    """Linear attention with softplus features: out_i = sum_j (q_i.k_j) v_j / max(sum_j q_i.k_j, 1e-12); O(L)."""

    def __init__(self, channels, attn_channels=None, affine_value=True):
        super().__init__(channels, attn_channels, affine_value)
        d = self.attn_channels

        def qk():
            return nn.Sequential(conv_bn_relu(channels, d), conv_bn_relu(d, d, relu=False), nn.Softplus())

        self.query, self.key = qk(), qk()
        self.value = conv_bn_relu(channels, d, affine=affine_value)

    def forward(self, f_t, f_s, aux_t=None, aux_s=None):
        b, _, h, w = f_t.shape
        q = self.query(f_t).flatten(2)  # B x d x L
        k = self.key(f_s).flatten(2)
        v = self.value(f_s).flatten(2)
        kv = torch.einsum("bdl,bel->bde", k, v)  # B x d x dv
        num = torch.einsum("bdl,bde->bel", q, kv)
        den = torch.einsum("bdl,bd->bl", q, k.sum(-1)).clamp_min(1e-12)
        return (num / den[:, None]).view(b, -1, h, w)


@CONTEXTS.register("local")
class LocalContext(ContextBlock):
    """Softmax attention over a 9x9 neighbourhood (out-of-image neighbours masked out)."""

    def __init__(self, channels, attn_channels=None, affine_value=True, window: int = 9):
        super().__init__(channels, attn_channels, affine_value)
        d = self.attn_channels
        self.window = window
        self.query = nn.Sequential(conv_bn_relu(channels, d), conv_bn_relu(d, d))
        self.key = nn.Sequential(conv_bn_relu(channels, d), conv_bn_relu(d, d))
        self.value = conv_bn_relu(channels, d, affine=affine_value)
        self.attend = LocalAttention(window)

    def forward(self, f_t, f_s, aux_t=None, aux_s=None):
        return self.attend(self.query(f_t), self.key(f_s), self.value(f_s))


class LocalAttention(nn.Module):
    """The windowed attention itself (no parameters). ``analytic_madds`` is the method's own cost, q.k and
    weights.v over the window x window neighbours of every pixel, which is what the paper's MAdds count (the
    reference op is a compiled kernel doing exactly that); our halo-blocked matmuls do about 3.2x as many
    multiply-adds as dense GEMMs, and ``trcnas summary`` reports the method's count, not the implementation's."""

    def __init__(self, window: int = 9):
        super().__init__()
        self.window = window
        self.last_madds = 0

    def forward(self, q, k, v):
        b, d, h, w = q.shape
        self.last_madds = b * h * w * self.window**2 * (d + v.shape[1])
        return local_attention(q, k, v, self.window)


class _LabelContext(ContextBlock):
    """OCR-style: prototypes p = softmax_pixels(A)^T F_S; softmax over the K prototypes with 1/sqrt(d)."""

    label_from = ""  # "target" or "source"

    def __init__(self, channels, attn_channels=None, affine_value=True):
        super().__init__(channels, attn_channels, affine_value)
        d = self.attn_channels
        self.query = nn.Sequential(conv_bn_relu(channels, d), conv_bn_relu(d, d))
        self.key = nn.Sequential(conv_bn_relu(channels, d, dim=1), conv_bn_relu(d, d, dim=1))
        self.value = conv_bn_relu(channels, d, affine=affine_value, dim=1)

    def forward(self, f_t, f_s, aux_t=None, aux_s=None):
        aux = aux_t if self.label_from == "target" else aux_s
        b, _, h, w = f_t.shape
        if aux.shape[-2:] != (h, w):
            aux = F.interpolate(aux, size=(h, w), mode="bilinear", align_corners=False)
        region = torch.softmax(aux.flatten(2).float(), dim=-1)  # B x K x L, spatial softmax
        region = torch.nan_to_num(region, nan=0.0).to(f_s.dtype)  # an all-padding image has no context
        protos = torch.einsum("bkl,bcl->bck", region, f_s.flatten(2))  # B x C x K
        q = self.query(f_t).flatten(2)  # B x d x L
        k = self.key(protos)  # B x d x K
        v = self.value(protos)
        attn = torch.softmax(torch.einsum("bdl,bdk->blk", q, k) / math.sqrt(q.shape[1]), dim=-1)
        return torch.einsum("blk,bek->bel", attn, v).view(b, -1, h, w)


@CONTEXTS.register("tlabel")
class TLabelContext(_LabelContext):
    label_from = "target"
    uses_aux = ("target",)


@CONTEXTS.register("slabel")
class SLabelContext(_LabelContext):
    label_from = "source"
    uses_aux = ("source",)


def build_context(name: str, channels: int, attn_channels: int | None = None, affine_value: bool = True):
    """``none`` builds nothing (the pair contributes no message)."""
    if name == "none":
        return None
    block = CONTEXTS.build(name, channels, attn_channels, affine_value)
    xavier_init(block)
    return block


def xavier_init(module: nn.Module) -> None:
    """The reference initialises the CP blocks' convolutions Xavier-uniform (biases zero); BN keeps 1 / 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
