"""Scalar schedules over the search steps (temperature tau, entropy-regulariser weight)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from trcnas.nas.schema import SHAPES


@dataclass(frozen=True)
class Schedule:
    start: float
    end: float
    shape: str = "linear"  # linear | cosine | exp (geometric, needs start and end of the same sign, non-zero)

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"schedule shape must be one of {', '.join(SHAPES)}, got {self.shape!r}")
        if self.shape == "exp" and (self.start * self.end <= 0):
            raise ValueError("an exp schedule needs a non-zero start and end of the same sign")

    def __call__(self, step: int, total: int) -> float:
        f = min(max(step / max(total - 1, 1), 0.0), 1.0)
        if self.shape == "linear":
            return (1 - f) * self.start + f * self.end
        if self.shape == "cosine":
            return self.end + (self.start - self.end) * 0.5 * (1 + math.cos(math.pi * f))
        return self.start * (self.end / self.start) ** f

    @classmethod
    def from_cfg(cls, d) -> Schedule:
        """From a config's schedule section (``search.tau``, ``search.entropy``)."""
        return cls(float(d.start), float(d.end), str(d.shape))
