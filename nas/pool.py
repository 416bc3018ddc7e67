"""Worker processes for per-image CPU work that holds Python's GIL (the BSDS boundary counts: NumPy on small
arrays, SciPy's max flow), so threads would not run it in parallel.

``set_eval_workers(n)`` is process-wide, like ``torch.set_num_threads``: the loop sets it from
``train.eval_workers`` when a run is prepared. ``None`` (the default) follows torch's thread count, so a
1-CPU Ray trial computes in its own process and a 2-core in-process run uses both cores. A ``WorkerPool``
starts its processes on first use and ends them at ``close()`` (an ``EdgeMeter`` closes its pool when it
computes its metrics), so no worker outlives the evaluation that needed it: a forked worker keeps the
parent's memory of the moment of the fork alive. Results come back in input order; the work itself is
unchanged, so the numbers are the same with any worker count.

Workers are *forked*, as PyTorch's DataLoader forks its workers: ``spawn`` and ``forkserver`` run the user's
``__main__`` script again in every worker, which a script without an ``if __name__ == "__main__":`` guard
turns into recursion. A forked child inherits the parent's threads' locks but not the threads; it runs only
NumPy and SciPy code on the arrays it is sent (no torch op, no OpenMP region, no Ray call), so no lock it
needs is held by a thread that is gone. Off Linux (macOS system libraries do not survive a fork) the work
runs in the calling process.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import torch

_workers: int | None = None


def set_eval_workers(n: int | None) -> None:
    """Processes for evaluation work (``None``: torch's thread count; 1: this process)."""
    global _workers
    if n is not None and n < 1:
        raise ValueError(f"eval workers must be at least 1, got {n}")
    _workers = n


def eval_workers() -> int:
    """The worker count in effect: the one set, else torch's thread count; 1 off Linux (see the docstring)."""
    if sys.platform != "linux":
        return 1
    if _workers is not None:
        return _workers

    return max(1, torch.get_num_threads())


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: end this worker when the process that forked it is gone (killed mid-evaluation, e.g.
    a Ray trial stopped with SIGKILL), as the DataLoader's workers do; otherwise it would wait forever on a
    queue whose write end it holds itself."""
    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="trcnas-parent-watch").start()


class WorkerPool:
    """``map(fn, items)`` = ``[fn(x) for x in items]`` on ``eval_workers()`` forked processes (``fn`` a
    module-level function), started on first use; in this process when that is one worker or there is at
    most one item, and, with a warning, when the processes cannot start or die. ``close()`` ends them."""

    def __init__(self):
        self._executor: ProcessPoolExecutor | None = None
        self._n = 0
        self.forked = 0  # how many times processes were started (tests)

    def map(self, fn: Callable, items: Sequence) -> list:
        n = eval_workers()
        if n <= 1 or len(items) <= 1:
            return [fn(x) for x in items]
        try:
            if self._executor is None or self._n != n:
                self.close()

                self._executor = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork"),
                                                     initializer=_exit_with_parent, initargs=(os.getpid(),))
                self._n, self.forked = n, self.forked + 1
            with warnings.catch_warnings():  # Python >= 3.12 warns on fork in a threaded process: see above
                warnings.filterwarnings("ignore", message=r".*use of fork\(\) may lead to deadlocks",
                                        category=DeprecationWarning)
                return list(self._executor.map(fn, items, chunksize=max(1, len(items) // (2 * n))))
        except (BrokenProcessPool, OSError) as e:
            self.close()
            warnings.warn(f"evaluation worker processes failed ({e}); computing in this process", stacklevel=2)
            return [fn(x) for x in items]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass
