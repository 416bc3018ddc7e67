"""Peak tensor memory of a code region, on any device.

CUDA: ``torch.cuda.max_memory_allocated`` (reset before the region). CPU has no allocator statistics, so a
``TorchDispatchMode`` records the storage of every tensor produced inside the region (forward and
backward ops alike) and a weak-reference finaliser subtracts it when the storage is freed: the peak of the
live sum is the tensors' own peak memory, free of RSS noise. Tensors that existed before the region are
not counted.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only


class _CPUPeak(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def _track(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        key, n = st.data_ptr(), st.nbytes()
        if n == 0 or key in self._seen:
            return
        self._seen.add(key)
        self.live += n
        self.peak = max(self.peak, self.live)

        def release(k=key, n=n):
            self.live -= n
            self._seen.discard(k)

        weakref.finalize(st, release)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tree_map_only(torch.Tensor, self._track, out)
        return out


class PeakMemory:
    """``with PeakMemory(device) as m: ...`` then ``m.peak_bytes``."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.peak_bytes = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._mode = _CPUPeak()
            self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._mode.__exit__(*exc)
            self.peak_bytes = self._mode.peak
        return False
