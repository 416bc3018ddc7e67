"""A space family defined outside the trcnas package (the README's "Extending" example): one module plus one
YAML (headk.yaml). It searches the kernel size of each task's prediction head of the multi-task network."""

from pathlib import Path

import torch.nn as nn

from trcnas.nas.families import SpaceFamily, register_family
from trcnas.nas.search.mixed import MixedOp


class SearchedHead(nn.Module):
    def __init__(self, mixed: MixedOp):
        super().__init__()
        self.mixed = mixed

    def forward(self, x):
        return self.mixed(lambda op: op(x))


def _head(channels, out, k):
    return nn.Conv2d(channels, out, int(k), padding=int(k) // 2)


@register_family
class HeadKernel(SpaceFamily):
    name = "headk"
    space = str(Path(__file__).with_name("headk.yaml"))
    config = "synthetic-mt"
    label = "Head kernels (searched)"

    def _net(self, cfg, tasks):
        from trcnas.nas.families import model_type

        return model_type("multitask").fixed(cfg, tasks, None)

    def supergraph(self, cfg, tasks, space):
        net = self._net(cfg, tasks)
        for d in space.decisions(list(tasks)):  # one decision per task: path (headk, task)
            t = d.path[-1]
            ops = [_head(net.channels, tasks[t].out_channels, k) for k in d.candidates]
            net.heads[t] = SearchedHead(MixedOp.of(d, ops))
        return net

    def fixed(self, cfg, tasks, architecture):
        net = self._net(cfg, tasks)
        for t, k in self.choices(cfg, architecture).items():
            net.heads[t] = _head(net.channels, tasks[t].out_channels, k)
        return net
