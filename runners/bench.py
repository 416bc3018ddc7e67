"""``trcnas bench``: search-step throughput and peak memory per mode, the local context op against a naive
unfold version, scaling with tasks and resolution, data generation speed; CUDA variants on a GPU.

All timings are medians of repeated runs after warm-up, in one process. Results go to ``results/bench/``
(bench.json with units and machine, bench.csv, bench.png) and a table on stdout.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from trcnas.nas import pool
from trcnas.nas.boundary import THINNING, bsds_thresholds, image_counts
from trcnas.nas.data.scenes import SceneGenerator
from trcnas.nas.metrics import EdgeMeter
from trcnas.nas.models.atrc import ATRCModule
from trcnas.nas.models.context import CONTEXTS
from trcnas.nas.models.local_attention import local_attention, local_attention_unfold
from trcnas.nas.search.mixed import entropy_loss, mixed_ops, set_mode, set_tau, split_parameters
from trcnas.runners.bench_loop import run_loop_bench
from trcnas.runners.memory import PeakMemory
from trcnas.spaces import load_space
from trcnas.spaces.io import atomic_write_text

log = logging.getLogger(__name__)

TASKS6 = ["semseg", "depth", "normals", "edge", "saliency", "parts"]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn, device, warmup: int, reps: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


class SupergraphBench(nn.Module):
    """The ATRC search supergraph on given task features: CP blocks, fusion and prediction convs."""

    def __init__(self, tasks: list[str], channels: int):
        super().__init__()

        pairs = {t: {} for t in tasks}
        for d in load_space("atrc").decisions(tasks):
            pairs[d.path[1]][d.path[2]] = d
        self.atrc = ATRCModule(tasks, channels, pairs, search=True)
        self.heads = nn.ModuleDict({t: nn.Conv2d(channels, 8, 1) for t in tasks})

    def forward(self, feats, aux):
        out = self.atrc(feats, aux)
        return sum(self.heads[t](o).square().mean() for t, o in out.items())


def _make_case(n_tasks, channels, res, batch, device, channels_last=False):
    tasks = TASKS6[:n_tasks]
    g = torch.Generator().manual_seed(0)
    model = SupergraphBench(tasks, channels).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    feats = {t: torch.randn(batch, channels, res, res, generator=g).to(device, memory_format=fmt).requires_grad_()
             for t in tasks}
    aux = {t: torch.randn(batch, 40, res, res, generator=g).to(device, memory_format=fmt) for t in tasks}
    return model, feats, aux


def run_search_step(mode: str, frozen_fraction: float, n_tasks: int = 4, channels: int = 64, res: int = 64,
                    batch: int = 4, device="cpu", warmup: int = 1, reps: int = 3, bf16: bool = False,
                    channels_last: bool = False, flops: bool = False) -> dict:
    device = torch.device(device)
    torch.manual_seed(0)
    model, feats, aux = _make_case(n_tasks, channels, res, batch, device, channels_last)
    set_mode(model, mode)
    set_tau(model, 1.0)
    ops = mixed_ops(model)
    n_frozen = int(round(frozen_fraction * len(ops)))

    cycle = CONTEXTS.names()[1:] + CONTEXTS.names()[:1]  # every context type in turn, none last
    for i, m in enumerate(ops[:n_frozen]):
        want = cycle[i % len(cycle)]
        m.freeze(m.candidates.index(want) if want in m.candidates else 0)
    weights, alphas = split_parameters(model)
    opt_w = torch.optim.SGD(weights, lr=1e-3, momentum=0.9, weight_decay=5e-4)
    opt_a = torch.optim.Adam(alphas, lr=5e-4)

    def step():
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(feats, aux)
        h = entropy_loss(model)
        if h is not None:
            loss = loss + 0.01 * h
        opt_w.zero_grad(set_to_none=True)
        opt_a.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(weights, 10.0)
        opt_w.step()
        opt_a.step()

    t = _median_time(step, device, warmup, reps)
    with PeakMemory(device) as mem:
        step()
    out = {"mode": mode, "frozen": n_frozen, "decisions": len(ops), "tasks": n_tasks, "channels": channels,
           "resolution": res, "batch": batch, "step_s": t, "images_per_s": batch / t,
           "peak_memory_MiB": mem.peak_bytes / 2**20, "bf16": bf16, "channels_last": channels_last}
    if flops:
        counter = FlopCounterMode(display=False)
        with counter:
            step()
        out["flops_per_step"] = counter.get_total_flops()
    return out


def run_local_op(channels: int = 64, res: int = 128, batch: int = 1, device="cpu", warmup: int = 1,
                 reps: int = 3) -> list[dict]:
    device = torch.device(device)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, channels, res, res, generator=g).to(device).requires_grad_() for _ in range(3))
    rows, outs = [], {}
    for name, fn in (("halo (ours)", local_attention), ("unfold (naive)", local_attention_unfold)):
        def fwd_bwd(fn=fn):
            y = fn(q, k, v, 9)
            y.square().sum().backward()
            return y

        t = _median_time(fwd_bwd, device, warmup, reps)
        q.grad = k.grad = v.grad = None
        with PeakMemory(device) as mem:
            outs[name] = fwd_bwd().detach()
        rows.append({"implementation": name, "channels": channels, "resolution": res, "batch": batch, "window": 9,
                     "fwd_bwd_s": t, "peak_memory_MiB": mem.peak_bytes / 2**20})
    diff = float((outs["halo (ours)"] - outs["unfold (naive)"]).abs().max())
    for r in rows:
        r["max_abs_diff"] = diff
    return rows


def growth_exponent(xs, ys) -> float:
    """Slope of log(y) against log(x): time ~ x^exponent."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def run_data(n: int = 40, size: int = 128) -> dict:
    gen = SceneGenerator(size, size)
    gen.render(0, 0)
    t = time.perf_counter()
    for i in range(n):
        gen.render(0, i)
    dt = time.perf_counter() - t
    return {"images_per_s": n / dt, "size": size, "images": n, "cores_used": 1}


def _edge_predictions(h: int, w: int, n: int, rng: np.random.Generator):
    """n synthetic edge labels of h x w and two predictions of each: the blurred label, and the blurred label
    over a smooth low floor (what a trained network gives: after NMS its low thresholds leave thick blobs
    that thinning takes dozens of iterations to erode). -> (labels, blurred, floored), lists of arrays."""
    from scipy import ndimage

    gen = SceneGenerator(h, w)
    labels, blurred, floored = [], [], []
    for i in range(n):
        gt = gen.render(0, i).edge > 0
        blur = ndimage.gaussian_filter(gt.astype(float), 1.5)
        blur = np.clip(blur / max(blur.max(), 1e-9), 0, 1)
        floor = 0.02 + 0.03 * ndimage.gaussian_filter(rng.random((h, w)), 8) / 0.5
        labels.append(gt)
        blurred.append(blur)
        floored.append(np.maximum(blur, floor))
    return labels, blurred, floored


def run_edge_eval(sizes=((128, 128), (425, 560)), n: int = 3) -> list[dict]:
    """Edge evaluation (BSDS protocol, 99 thresholds, one core) on synthetic label maps: NMS, thinning and
    one-to-one matching per threshold, as per-checkpoint validation runs it, on both predictions of
    ``_edge_predictions``; each with the border thinning (today) and scikit-image's whole-image ``thin``
    (before), same counts."""
    rows = []
    th = bsds_thresholds(99)
    rng = np.random.default_rng(0)
    for h, w in sizes:
        labels, blurred, floored = _edge_predictions(h, w, n, rng)
        cases = {"blurred label": list(zip(blurred, labels)), "label over a smooth floor": list(zip(floored, labels))}
        for prediction, items in cases.items():
            seconds, counts = {}, {}
            for thinning in THINNING:
                t = time.perf_counter()
                counts[thinning] = [image_counts(prob, gt, 0.011, th, thinning=thinning) for prob, gt in items]
                seconds[thinning] = time.perf_counter() - t
            same = all(np.array_equal(a, b) for a, b in zip(*counts.values()))
            for thinning, dt in seconds.items():
                rows.append({"size": f"{h}x{w}", "prediction": prediction, "thinning": thinning, "images": n,
                             "thresholds": len(th), "s_per_image": dt / n, "images_per_s": n / dt,
                             "x_before": seconds["scikit-image"] / dt, "same_counts": same, "cores_used": 1})
    return rows


def run_edge_workers(size=(128, 128), n: int = 24, workers=(1, 2)) -> list[dict]:
    """The edge meter of an evaluation (``EdgeMeter.update`` on batches of 8, then ``compute``) on the
    floored predictions of ``_edge_predictions``, its per-image counts computed in this process and on
    ``train.eval_workers`` worker processes (forked by the meter, inside the clock): s/image, the ratio to one
    process, and whether the counts are the same."""
    h, w = size
    labels, _, floored = _edge_predictions(h, w, n, np.random.default_rng(0))
    pred = torch.from_numpy(np.stack(floored)[:, None])
    gts = torch.from_numpy(np.stack(labels)[:, None].astype(np.float32))
    rows, base = [], {}
    try:
        for k in workers:
            pool.set_eval_workers(k)
            meter = EdgeMeter(from_logits=False)
            t = time.perf_counter()
            for i in range(0, n, 8):
                meter.update(pred[i:i + 8], gts[i:i + 8])
            meter.compute()
            dt = time.perf_counter() - t
            counts = np.stack(meter.per_image)
            base = base or {"dt": dt, "counts": counts}
            rows.append({"size": f"{h}x{w}", "images": n, "eval_workers": k, "s_per_image": dt / n,
                         "x_one_process": base["dt"] / dt, "same_counts": bool(np.array_equal(counts, base["counts"]))})
    finally:
        pool.set_eval_workers(None)
    return rows


PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "4090": 165.0}


def machine(device) -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


FULL = {"step": {"n_tasks": 4, "channels": 64, "res": 64, "batch": 4}, "local": {"channels": 64, "res": 128},
        "tasks": (2, 3, 4, 5, 6), "resolutions": (32, 64, 96, 128), "scaling": {"channels": 32, "batch": 2},
        "data": 40, "reps": 3, "edge": ((128, 128), (425, 560))}
QUICK = {"step": {"n_tasks": 4, "channels": 16, "res": 16, "batch": 1}, "local": {"channels": 16, "res": 32},
         "tasks": (2, 3), "resolutions": (16, 32), "scaling": {"channels": 8, "batch": 1}, "data": 4, "reps": 1,
         "edge": ((64, 64),)}


def run_bench(device: str = "cpu", out: str | Path = "results/bench", quick: bool = False, progress: bool = True):
    dev = torch.device(device)
    sz = QUICK if quick else FULL
    reps, warm = sz["reps"], 1
    t_start = time.perf_counter()

    def say(msg: str) -> None:  # phase lines on stderr (stdout may be the --json result)
        if progress:
            log.info("[%6.0fs] %s", time.perf_counter() - t_start, msg)

    res: dict = {"machine": machine(dev), "quick": quick, "units": {
        "images_per_s": "images/s", "step_s": "s", "peak_memory_MiB": "MiB", "fwd_bwd_s": "s",
        "max_abs_diff": "absolute", "exponent": "dimensionless (time ~ x^exponent)"}}
    size = sz["step"]
    res["search_step"] = {"size": size, "rows": []}
    for mode, frac, label in (("soft-all", 0.0, "soft-all (reference: every candidate)"),
                              ("soft", 0.0, "soft, none frozen"), ("soft", 0.5, "soft, half frozen"),
                              ("soft", 1.0, "soft, all frozen"), ("hard", 0.0, "hard (straight-through)")):
        say(f"search step: {label} ...")
        r = run_search_step(mode, frac, size["n_tasks"], size["channels"], size["res"], size["batch"], dev, warm, reps)
        r["label"] = label
        res["search_step"]["rows"].append(r)
    base = res["search_step"]["rows"][0]["images_per_s"]
    for r in res["search_step"]["rows"]:
        r["speedup_vs_soft_all"] = r["images_per_s"] / base
    say("local op ...")
    res["local_op"] = run_local_op(sz["local"]["channels"], sz["local"]["res"], 1, dev, warm, reps)
    say("scaling ...")
    c, b = sz["scaling"]["channels"], sz["scaling"]["batch"]
    task_rows, res_rows = [], []
    for n in sz["tasks"]:
        say(f"scaling: {n} tasks ...")
        task_rows.append(run_search_step("soft", 0.0, n, c, 32 if not quick else 16, b, dev, warm, reps))
    for r in sz["resolutions"]:
        say(f"scaling: {r}x{r} ...")
        res_rows.append(run_search_step("soft", 0.0, 4, c, r, b, dev, warm, reps))
    res["scaling"] = {
        "tasks": {"rows": task_rows, "exponent": growth_exponent([r["tasks"] for r in task_rows],
                                                                 [r["step_s"] for r in task_rows])},
        "resolution": {"rows": res_rows, "exponent": growth_exponent([r["resolution"] for r in res_rows],
                                                                     [r["step_s"] for r in res_rows])},
    }

    res["loop"] = run_loop_bench(quick, say)
    say("data ...")
    res["data"] = run_data(sz["data"])
    say("edge evaluation ...")
    res["edge_eval"] = run_edge_eval(sz["edge"], 1 if quick else 3)
    say("edge evaluation on worker processes ...")
    res["edge_workers"] = run_edge_workers(sz["edge"][0], 4 if quick else 24)
    if dev.type == "cuda":
        res["cuda"] = _cuda_variants(dev, size, warm, reps)
    return write_bench(res, Path(out))


def _cuda_variants(dev, size, warm, reps) -> dict:
    rows = []
    for bf16, cl in ((False, False), (True, False), (False, True), (True, True)):
        r = run_search_step("soft", 0.0, size["n_tasks"], size["channels"], size["res"], size["batch"], dev, warm,
                            reps, bf16=bf16, channels_last=cl, flops=True)
        rows.append(r)
    name = torch.cuda.get_device_name(dev)
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    for r in rows:
        r["achieved_TFLOPs"] = r["flops_per_step"] / r["step_s"] / 1e12
        r["fraction_of_peak_bf16"] = None if peak is None else r["achieved_TFLOPs"] / peak
    return {"rows": rows, "peak_bf16_TFLOPs": peak, "gpu": name}


def write_bench(res: dict, out: Path) -> dict:
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "bench.json", json.dumps(res, indent=2))
    frames = [pd.DataFrame(res["search_step"]["rows"]).assign(section="search_step"),
              pd.DataFrame(res["local_op"]).assign(section="local_op"),
              pd.DataFrame(res["scaling"]["tasks"]["rows"]).assign(section="scaling_tasks"),
              pd.DataFrame(res["scaling"]["resolution"]["rows"]).assign(section="scaling_resolution"),
              pd.DataFrame(res["edge_eval"]).assign(section="edge_eval")]
    if "edge_workers" in res:
        frames.append(pd.DataFrame(res["edge_workers"]).assign(section="edge_workers"))
    if "cuda" in res:
        frames.append(pd.DataFrame(res["cuda"]["rows"]).assign(section="cuda"))
    atomic_write_text(out / "bench.csv", pd.concat(frames, ignore_index=True).to_csv(index=False))
    _plot(res, out / "bench.png")
    res["files"] = {k: str(out / f"bench.{k}") for k in ("json", "csv", "png")}
    return res


def _plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    rows = res["search_step"]["rows"]
    axes[0].barh([r["label"] for r in rows], [r["images_per_s"] for r in rows], color="#4C72B0")
    axes[0].set_xlabel("search-step throughput (images/s)")
    axes[0].invert_yaxis()
    for key, ax, xl in (("tasks", axes[1], "number of tasks"), ("resolution", axes[2], "feature resolution (px)")):
        s = res["scaling"][key]
        xs = [r["tasks" if key == "tasks" else "resolution"] for r in s["rows"]]
        ax.loglog(xs, [r["step_s"] for r in s["rows"]], "o-")
        ax.set_xlabel(xl)
        ax.set_ylabel("step time (s)")
        ax.set_title(f"growth exponent {s['exponent']:.2f}")
    fig.suptitle(f"trcnas bench on {res['machine']['device']} ({res['machine']['processor']})")
    fig.tight_layout()
    buf = path.with_suffix(".tmp.png")
    fig.savefig(buf, dpi=110)
    plt.close(fig)
    os.replace(buf, path)


def format_table(res: dict) -> str:
    size = res["search_step"]["size"]
    lines = [f"search step ({size['n_tasks']} tasks, C={size['channels']}, batch {size['batch']}, "
             f"{size['res']}x{size['res']} features):"]
    lines.append(f"  {'mode':40s} {'img/s':>8s} {'x soft-all':>10s} {'peak MiB':>9s}")
    for r in res["search_step"]["rows"]:
        lines.append(f"  {r['label']:40s} {r['images_per_s']:8.2f} {r['speedup_vs_soft_all']:10.2f} "
                     f"{r['peak_memory_MiB']:9.1f}")
    lo = res["local_op"][0]
    lines.append(f"local op (fwd+bwd, C={lo['channels']}, {lo['resolution']}x{lo['resolution']}, 9x9 window):")
    for r in res["local_op"]:
        lines.append(f"  {r['implementation']:16s} {r['fwd_bwd_s'] * 1000:9.1f} ms {r['peak_memory_MiB']:9.1f} MiB"
                     f"   max|diff| {r['max_abs_diff']:.2e}")
    s = res["scaling"]
    lines.append(f"scaling: time ~ tasks^{s['tasks']['exponent']:.2f}, ~ resolution^{s['resolution']['exponent']:.2f}")
    if "loop" in res:
        lp = res["loop"]
        lines.append(f"training and search steps of synthetic-atrc as the loop runs them ({lp['steps']} steps after "
                     f"{lp['warm']} warm-up; cores busy = CPU time / wall time, workers included):")
        lines.append(f"  {'step':7s} {'setting':24s} {'img/s':>8s} {'x today':>8s} {'cores busy':>10s}")
        for r in lp["rows"]:
            lines.append(f"  {r['kind']:7s} {r['setting']:24s} {r['images_per_s']:8.2f} {r['x_today']:8.2f} "
                         f"{r['cores_busy']:10.2f}")
    lines.append(f"data: {res['data']['images_per_s']:.1f} synthetic images/s on one core at 128x128")
    lines.append("edge evaluation (BSDS, 99 thresholds, one core): thinning border (today) vs scikit-image (before)")
    for r in res["edge_eval"]:
        lines.append(f"  {r['size']:8s} {r['prediction']:26s} {r['thinning']:13s} {r['s_per_image']:7.3f} s/image "
                     f"x{r['x_before']:.2f}" + ("" if r["same_counts"] else "  COUNTS DIFFER"))
    if "edge_workers" in res:
        r0 = res["edge_workers"][0]
        lines.append(f"edge meter of an evaluation ({r0['images']} images {r0['size']}, batches of 8): "
                     "per-image counts in this process vs on train.eval_workers processes")
        for r in res["edge_workers"]:
            lines.append(f"  eval_workers={r['eval_workers']:<3d} {r['s_per_image']:7.3f} s/image "
                         f"x{r['x_one_process']:.2f}" + ("" if r["same_counts"] else "  COUNTS DIFFER"))
    if "cuda" in res:
        for r in res["cuda"]["rows"]:
            frac = r["fraction_of_peak_bf16"]
            lines.append(f"  cuda bf16={r['bf16']!s:5s} channels_last={r['channels_last']!s:5s} "
                         f"{r['images_per_s']:8.1f} img/s {r['achieved_TFLOPs']:.2f} TFLOP/s"
                         + (f" ({frac:.1%} of peak)" if frac is not None else ""))
    return "\n".join(lines)
