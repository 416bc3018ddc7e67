"""A context type defined outside the trcnas package (the README's "Extending" example): the source's features
through a dilated 3x3 convolution. Loaded with ``--plugin tests/plugins/dilated_context.py`` or a config's
``plugins:``; searched with a space that lists it (``tests/plugins/atrc_dilated.yaml``)."""

import torch.nn as nn

from trcnas.nas.models.context import ContextBlock, ContextType, register_context


@register_context(ContextType("dilated", "dilated", "#DD8452"))
class DilatedContext(ContextBlock):
    def __init__(self, channels, attn_channels=None, affine_value=True):
        super().__init__(channels, attn_channels, affine_value)
        d = self.attn_channels
        self.conv = nn.Sequential(nn.Conv2d(channels, d, 3, padding=2, dilation=2, bias=False),
                                  nn.BatchNorm2d(d, affine=affine_value), nn.ReLU(inplace=True))

    def forward(self, f_t, f_s, aux_t=None, aux_s=None):
        return self.conv(f_s)
