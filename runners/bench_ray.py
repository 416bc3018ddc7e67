"""``trcnas bench --ray-overhead``: the cost of running searches as Ray Tune trials instead of in-process.

The same N short searches (seeds 0..N-1) run one after another in this process (``search_run``) and then as
N Ray Tune trials on a local Ray instance, one trial at a time with this machine's CPUs, each reporting
its checkpoints to Tune; the ratio of the wall times (Ray start included) is the overhead.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import torch

from trcnas.nas.config import load_config
from trcnas.nas.engine.search import search_run
from trcnas.nas.schema import updated
from trcnas.runners.tune_search import run_tune_search

log = logging.getLogger(__name__)


def ray_overhead(n: int = 4, steps: int = 100, config: str = "synthetic-atrc", cache_dir: str = "results/cache",
                 progress: bool = True) -> dict:
    cpus = os.cpu_count() or 1
    overrides = [f"search.steps={steps}", "train.checkpoint_every=50", f"data.cache_dir={cache_dir}",
                 "ray.max_concurrent_trials=1", f"ray.resources={{cpu: {cpus}}}"]
    cfg = load_config(config, overrides)
    say = log.info if progress else (lambda m: None)
    with tempfile.TemporaryDirectory() as tmp:
        search_run(cfg, Path(tmp) / "warm", progress=False, stop_after=1)  # the data cache exists for both
        torch.set_num_threads(cpus)
        t0 = time.perf_counter()
        for seed in range(n):
            say(f"in-process search {seed + 1}/{n} ({steps} steps) ...")
            search_run(updated(cfg, {"seed": seed}), Path(tmp) / f"local{seed}", progress=False)
        local = time.perf_counter() - t0
        say(f"{n} searches as Ray Tune trials ...")
        t0 = time.perf_counter()
        run_tune_search(updated(cfg, {"ray.storage_path": str(Path(tmp) / "ray")}), "overhead",
                        num_samples=n, verbose=0)
        ray_s = time.perf_counter() - t0
    return {"searches": n, "steps": steps, "cpus": cpus, "in_process_s": local, "ray_trials_s": ray_s,
            "ratio": ray_s / local}
