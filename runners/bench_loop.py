"""The training and search steps of the synthetic default as the real loop runs them (data loading,
forward, losses, backward, optimiser steps, the search's alpha updates): images/s and **cores busy** (CPU
time of this process and its data-loading workers over wall time), with each throughput setting
switchable so one bench run prints the before/after ratio on the same machine."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from trcnas.nas.config import load_config
from trcnas.nas.engine.loop import LoopPlugin, fit, prepare
from trcnas.nas.engine.train import load_run_architecture
from trcnas.nas.families import build_model, build_supergraph, resolve_space
from trcnas.nas.search.controller import ArchitectureSearch
from trcnas.nas.search.mixed import split_parameters

# the settings the bench switches, each a config override: "today" is the first value
SWITCHES = {"data.num_workers": (0, 1)}


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its live children (data-loading workers; Linux /proc),
    plus those of children already reaped."""
    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    me, tick = str(os.getpid()), os.sysconf("SC_CLK_TCK")
    proc = Path("/proc")
    if not proc.is_dir():
        return total
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:  # ppid
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


class Timed(LoopPlugin):
    """Wraps a loop plugin; records wall and CPU time between the start of step ``start`` and of step
    ``end`` (the steps before ``start`` warm up: worker start-up, allocator, first-step costs)."""

    def __init__(self, inner: LoopPlugin, start: int, end: int):
        self.inner, self.start, self.end = inner, start, end
        self.marks: dict[int, tuple[float, float]] = {}

    def optimizers(self):
        return self.inner.optimizers()

    def before_step(self, step, total):
        if step in (self.start, self.end):
            self.marks[step] = (time.perf_counter(), cpu_seconds())
        self.inner.before_step(step, total)

    def extra_loss(self, step, total):
        return self.inner.extra_loss(step, total)

    def after_step(self, step, total):
        return self.inner.after_step(step, total)

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)

    def finished(self):
        return self.inner.finished()

    def result(self, batch: int) -> dict:
        (w0, c0), (w1, c1) = self.marks[self.start], self.marks[self.end]
        steps = self.end - self.start
        return {"steps": steps, "step_s": (w1 - w0) / steps, "images_per_s": steps * batch / (w1 - w0),
                "cores_busy": (c1 - c0) / (w1 - w0)}


def run_loop_step(kind: str, overrides: list[str], warm: int = 3, steps: int = 20, config: str = "synthetic-atrc",
                  cache_dir: str = "results/cache") -> dict:
    """``kind`` ``train`` (the fixed all-S-label ATRC network, the heaviest retrain) or ``search`` (the
    ATRC supergraph with its alpha updates), ``steps`` timed steps after ``warm``."""
    total = warm + steps + 1
    cfg = load_config(config, [f"data.cache_dir={cache_dir}", f"train.checkpoint_every={total + 1}",
                               f"train.log_every={total + 1}", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        ctx = prepare(cfg, Path(tmp) / "run", progress=False)
        if kind == "train":
            arch = load_run_architecture(cfg, "fixed:slabel")
            model = build_model(cfg, ctx.tasks, architecture=arch)
            params, inner = list(model.parameters()), LoopPlugin()
        else:
            model = build_supergraph(cfg, ctx.tasks, resolve_space(cfg))
            params, _ = split_parameters(model)
            inner = ArchitectureSearch(model, cfg.search, seed=cfg.seed)
        timer = Timed(inner, warm, warm + steps)
        fit(ctx, model, params, total + 10, plugin=timer, progress=False, stop_after=total)
    return {"kind": kind, "overrides": list(overrides), **timer.result(cfg.train.batch_size)}


def run_loop_bench(quick: bool = False, say=lambda m: None, cache_dir: str = "results/cache") -> dict:
    """Each step kind with today's settings, then with every switch flipped: rows and the ratio to today."""
    warm, steps = (1, 1) if quick else (3, 20)
    extra = ["data.image_size=[32, 32]", "data.train_samples=8", "data.val_samples=4"] if quick else []
    rows = []
    for kind in ("train", "search"):
        base = None
        for key, values in SWITCHES.items():
            for v in values if base is None else values[1:]:
                say(f"{kind} step: {key}={v} ...")
                r = run_loop_step(kind, [*extra, f"{key}={v}"], warm, steps, cache_dir=cache_dir)
                r["setting"] = f"{key}={v}"
                base = base or r
                r["x_today"] = r["images_per_s"] / base["images_per_s"]
                rows.append(r)
    return {"rows": rows, "warm": warm, "steps": steps}
