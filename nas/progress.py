"""Progress bars that suit where they are shown: a live bar on a terminal; off a terminal (a log file, a CI
job, a Ray worker) at most one line every ``LOG_INTERVAL_S`` seconds, each on its own line, so logs stay
readable."""

from __future__ import annotations

import sys

from tqdm import tqdm

LOG_INTERVAL_S = 30.0


class _Lines:
    """A stream tqdm writes to off a terminal: each refresh becomes one line."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, s: str) -> None:
        s = s.strip("\r\n")
        if s.strip():
            self.stream.write(s + "\n")

    def flush(self) -> None:
        self.stream.flush()


def bar(iterable=None, *, enabled: bool = True, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)``, off when ``enabled`` is false; line-per-update and rate-limited when
    stderr is not a terminal."""
    stream = sys.stderr
    if enabled and not stream.isatty():
        kwargs = {"mininterval": LOG_INTERVAL_S, "maxinterval": LOG_INTERVAL_S * 4, "ascii": True,
                  "file": _Lines(stream), "dynamic_ncols": False, "ncols": 100, **kwargs}
    return tqdm(iterable, disable=not enabled, **kwargs)
