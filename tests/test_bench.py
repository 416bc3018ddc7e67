import json
import os

import pytest
import torch

from trcnas.runners.bench import growth_exponent, run_search_step
from trcnas.runners.cli import main
from trcnas.runners.memory import PeakMemory


def test_peak_memory_measures_tensors_not_rss():
    x = torch.randn(256, 256)
    with PeakMemory("cpu") as m:
        a = x @ x  # 256 KiB
        b = a + 1  # another 256 KiB, both alive
        del a, b
        c = torch.empty(64, 64)  # 16 KiB after the others were freed
    assert m.peak_bytes == 2 * 256 * 256 * 4
    assert c.numel() == 64 * 64


def test_growth_exponent():
    assert growth_exponent([2, 4, 8], [3.0, 12.0, 48.0]) == pytest.approx(2.0)


def test_frozen_modes_do_less_work():
    soft_all = run_search_step("soft-all", 1.0, n_tasks=2, channels=8, res=16, batch=1, reps=1, flops=True)
    frozen = run_search_step("soft", 1.0, n_tasks=2, channels=8, res=16, batch=1, reps=1, flops=True)
    hard = run_search_step("hard", 0.0, n_tasks=2, channels=8, res=16, batch=1, reps=1, flops=True)
    assert frozen["flops_per_step"] < soft_all["flops_per_step"] / 2
    # hard mode computes one sampled candidate per pair (which one depends on the Gumbel draw: 4 pairs that
    # all draw the costliest context still do well under the soft supergraph's work)
    assert hard["flops_per_step"] < soft_all["flops_per_step"] * 2 / 3
    assert frozen["peak_memory_MiB"] < soft_all["peak_memory_MiB"]


def test_bench_cli_json_has_every_figure_with_units(tmp_path, capsys, caplog):
    caplog.set_level("INFO", logger="trcnas")
    assert main(["bench", "--quick", "--json", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr().out, caplog.text
    res = json.loads(out)  # stdout is the JSON alone; the phases are announced in the log as they start
    for phase in ("search step: soft-all", "local op", "scaling: 2 tasks", "train step: data.num_workers=1",
                  "data", "edge evaluation"):
        assert phase in err, err
    loop = {(r["kind"], r["setting"]): r for r in res["loop"]["rows"]}
    assert set(loop) == {(k, f"data.num_workers={n}") for k in ("train", "search") for n in (0, 1)}
    for r in loop.values():
        assert r["images_per_s"] > 0 and 0 < r["cores_busy"] <= (os.cpu_count() or 1) + 0.5
    assert loop[("train", "data.num_workers=0")]["x_today"] == 1.0
    assert res["machine"]["device"] == "cpu" and res["machine"]["cpu_count"] >= 1
    labels = [r["label"] for r in res["search_step"]["rows"]]
    assert labels[0].startswith("soft-all") and len(labels) == 5
    for r in res["search_step"]["rows"]:
        assert r["images_per_s"] > 0 and r["peak_memory_MiB"] > 0
    halo, unfold = res["local_op"]
    assert halo["max_abs_diff"] < 1e-5 and halo["peak_memory_MiB"] < unfold["peak_memory_MiB"]
    assert {"tasks", "resolution"} <= set(res["scaling"]) and res["data"]["images_per_s"] > 0
    assert res["units"]["images_per_s"] == "images/s"
    edge = res["edge_eval"]
    assert {(r["prediction"], r["thinning"]) for r in edge} == {
        (p, t) for p in ("blurred label", "label over a smooth floor") for t in ("border", "scikit-image")}
    for r in edge:  # both thinnings give the same BSDS counts
        assert r["size"] == "64x64" and r["thresholds"] == 99 and r["s_per_image"] > 0 and r["same_counts"]
    one, more = res["edge_workers"]  # the edge meter in this process, then on 2 worker processes
    assert (one["eval_workers"], more["eval_workers"]) == (1, 2) and one["x_one_process"] == 1.0
    assert more["same_counts"] and more["s_per_image"] > 0 and more["images"] == 4
    assert "edge evaluation on worker processes" in err
    for f in ("bench.json", "bench.csv", "bench.png"):
        assert (tmp_path / f).stat().st_size > 0
