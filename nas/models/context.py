"""Context Pooling (CP) blocks of ATRC: global, local, T-label and S-label relational context.

Every block maps (F_T, F_S, aux logits) to a B x C_v x H x W message for target T from source S.
Constructor arguments are the same for all: ``channels`` (task feature width C), ``attn_channels``
(query/key/value width, C/2 by default) and ``affine_value`` (False in the search supergraph).

A context type is one registration, ``@register_context(ContextType(...))``, carrying everything the rest of
trcnas needs to know about it: its figure label and colour, its code in the reference's JSON genotypes, and
which aux maps it reads. Spaces, tables, bench and figures read the registry; nothing re-types the names. A user
adds one from their own module (``plugins:`` in a config, ``--plugin``, or a ``trcnas.plugins`` entry point).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from trcnas.nas.models.local_attention import local_attention
from trcnas.nas.registry import Registry

CONTEXTS = Registry("context type")


@dataclass(frozen=True)
class ContextType:
    """A context type's metadata. ``aux``: which aux maps its block reads, ``"target"`` and/or ``"source"``
    (the network then predicts them); ``code``: its number in the reference's JSON genotypes (None: the type
    has no code there and cannot be exported to one)."""

    name: str
    label: str
    colour: str
    code: int | None = None
    aux: tuple[str, ...] = ()

    def __post_init__(self):
        bad = set(self.aux) - {"target", "source"}
        if bad:
            raise ValueError(f"context type {self.name!r}: aux may name 'target' and 'source', not {sorted(bad)}")


def register_context(info: ContextType):
    """Class decorator: registers a :class:`ContextBlock` subclass (or, for ``none``, a builder returning None)
    under ``info.name`` with its metadata."""
    return CONTEXTS.register(info.name, info)


def context_types() -> list[ContextType]:
    """Every registered context type's metadata, in registration order (``none`` first)."""
    return [CONTEXTS.info(n) for n in CONTEXTS]


def context_for_code(code: int) -> str:
    """The context type with reference genotype code ``code`` (KeyError if none has it)."""
    for t in context_types():
        if t.code == code:
            return t.name
    raise KeyError(code)


def conv_bn_relu(cin: int, cout: int, relu: bool = True, affine: bool = True, dim: int = 2) -> nn.Sequential:
    conv = nn.Conv2d if dim == 2 else nn.Conv1d
    bn = nn.BatchNorm2d if dim == 2 else nn.BatchNorm1d
    layers = [conv(cin, cout, 1, bias=False), bn(cout, affine=affine)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ContextBlock(nn.Module):
    """Base: subclasses define ``forward(f_t, f_s, aux_t, aux_s) -> B x attn_channels x H x W`` (aux_t / aux_s
    are the target's / source's aux logits, or None when the type's ``aux`` does not name them)."""

    def __init__(self, channels: int, attn_channels: int | None = None, affine_value: bool = True):
        super().__init__()
        self.channels = channels
        self.attn_channels = attn_channels or max(1, channels // 2)
        self.affine_value = affine_value


@register_context(ContextType("none", "none", "#bdbdbd", code=0))
def no_context(channels, attn_channels=None, affine_value=True):
    """The pair sends no message."""
    return None


@register_context(ContextType("global", "global", "#4C72B0", code=1))
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


@register_context(ContextType("local", "local", "#55A868", code=2))
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


@register_context(ContextType("tlabel", "T-label", "#C44E52", code=3, aux=("target",)))
class TLabelContext(_LabelContext):
    label_from = "target"


@register_context(ContextType("slabel", "S-label", "#8172B2", code=4, aux=("source",)))
class SLabelContext(_LabelContext):
    label_from = "source"


def build_context(name: str, channels: int, attn_channels: int | None = None, affine_value: bool = True):
    """A registered context type's block (None for ``none``: the pair contributes no message), initialised as
    the reference does."""
    block = CONTEXTS.build(name, channels, attn_channels, affine_value)
    if block is not None:
        xavier_init(block)
    return block


def xavier_init(module: nn.Module) -> None:
    """The reference initialises the CP blocks' convolutions Xavier-uniform (biases zero); BN keeps 1 / 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
