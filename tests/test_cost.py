"""Every training, search and retrain records what it cost in metrics.json (wall and CPU seconds of its loop,
summed over resumptions, and the process's peak memory); an exported architecture records its search's cost.
Off a terminal there is no progress bar, and the console lines keep to their rate (one per 30 s, plus the first
and the last)."""

from __future__ import annotations

import json

import yaml

from trcnas.nas.config import load_config
from trcnas.nas.engine.checkpoint import load_checkpoint
from trcnas.nas.engine.train import train_run
from trcnas.runners.cli import FAST_DEV, main


def test_train_search_and_retrain_record_their_cost(tmp_path, fast_args):
    assert main(["search", "--local", "--out", str(tmp_path / "s"), *fast_args]) == 0
    m = json.loads((tmp_path / "s" / "metrics.json").read_text())
    cost = m["cost"]
    # the loop, plus what the search did after it (a perturbation-based selection; here nothing)
    assert m["wall_s"] <= cost["wall_s"] < m["wall_s"] + 1 and cost["cpu_s"] > 0 and cost["peak_rss_mb"] > 50
    arch = yaml.safe_load((tmp_path / "s" / "architecture.yaml").read_text())
    assert arch["search"]["cost"] == cost  # the architecture says what its search cost
    assert main(["retrain", "--architecture", str(tmp_path / "s" / "architecture.yaml"), "--out",
                 str(tmp_path / "r"), *fast_args]) == 0
    r = json.loads((tmp_path / "r" / "metrics.json").read_text())["cost"]
    assert set(r) == {"wall_s", "cpu_s", "peak_rss_mb"} and r["cpu_s"] > 0


def test_cost_sums_over_a_resumption(tmp_path, cache_dir):
    cfg = load_config("synthetic-mt", [*FAST_DEV, "train.steps=4", "train.checkpoint_every=2",
                                       f"data.cache_dir={cache_dir}"])
    out = tmp_path / "t"
    assert train_run(cfg, out, progress=False, stop_after=2) == {"step": 2, "finished": False}
    first = load_checkpoint(out / "checkpoint.pt")
    assert first["cpu_s"] > 0
    m = train_run(cfg, out, progress=False)
    assert m["cost"]["cpu_s"] > first["cpu_s"] and m["cost"]["wall_s"] > first["wall_s"]


def test_progress_off_a_terminal_writes_few_lines(tmp_path, capsys, caplog, cache_dir):
    # 30 steps logged every step, off a terminal: no progress bar, and the console lines keep to their interval
    # (one per logging.console_interval_s = 30 s, plus the first and the last step)
    caplog.set_level("INFO", logger="trcnas")
    assert main(["train", "--out", str(tmp_path / "p"), "--set", f"data.cache_dir={cache_dir}", *[
        x for item in FAST_DEV for x in ("--set", item)], "--set", "train.steps=30", "--set", "train.log_every=1"]) == 0
    assert not [ln for ln in capsys.readouterr().err.splitlines() if "/30 [" in ln]  # no tqdm bar in a log file
    steps = [r.getMessage() for r in caplog.records if " step " in r.getMessage() and "/30," in r.getMessage()]
    assert 2 <= len(steps) <= 3, steps
    assert steps[0].startswith("train synthetic-mt step 1/30, loss ") and "step 30/30" in steps[-1]
