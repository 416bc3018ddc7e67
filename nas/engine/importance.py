"""Permutation importance of the CP blocks of a trained ATRC network (the ATRC paper's Fig. 6), and of the
directional features of a trained mTEB network.

For a block (target, source), its message for sample i is replaced by the message the block produced for
sample pi(i), pi a random permutation of the *whole* held-out split (not only within a batch); the network is
evaluated again and the drop in Delta_m (and in each task metric) is recorded, for R permutations.

Delta_m is taken against the single-task ``baselines`` of the config when every task has one; otherwise
against the unpermuted network itself (then the original Delta_m is 0 and the drop is -Delta_m(permuted)).
Either way the importance is Delta_m(original) - Delta_m(permuted), in percentage points.
"""

from __future__ import annotations

from pathlib import Path

import torch

from trcnas.nas.config import load_config
from trcnas.nas.data import build_dataset
from trcnas.nas.engine.checkpoint import load_checkpoint, load_model_state
from trcnas.nas.engine.evaluate import primary, to_device
from trcnas.nas.engine.loop import CHECKPOINT, RunContext, resolve_device, write_csv, write_json
from trcnas.nas.engine.train import load_run_architecture
from trcnas.nas.errors import UserError
from trcnas.nas.families import build_model
from trcnas.nas.metrics import delta_m
from trcnas.nas.models.contract import SplitNetwork
from trcnas.nas.pool import set_eval_workers
from trcnas.nas.progress import bar
from trcnas.nas.tasks import build_tasks
from trcnas.nas.tensorops import upsample_to


class NothingToPermute(UserError):
    """The trained network has no context block or directional feature (e.g. CompositeTasking)."""


def load_trained(run_dir: Path, device: str | None = None):
    """(cfg, model, tasks, val dataset) of a train/retrain run directory."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file() or not (run_dir / CHECKPOINT).is_file():
        raise UserError(f"{run_dir} is not a finished run directory (needs config.yaml and {CHECKPOINT})")
    cfg = load_config(str(run_dir / "config.yaml"), [f"device={device}"] if device else [])
    set_eval_workers(cfg.train.eval_workers)
    arch = load_run_architecture(cfg, None)
    val, info = build_dataset(cfg.data, "val", train=False, progress=False)
    tasks = build_tasks(cfg.data.tasks, info)
    model = build_model(cfg, tasks, architecture=arch)
    remedy = "give the run directory of a finished `trcnas train` or `retrain`"
    state = load_checkpoint(run_dir / CHECKPOINT, remedy=remedy)
    load_model_state(model, state, run_dir / CHECKPOINT, remedy)
    return cfg, model.to(resolve_device(cfg.device)), tasks, val


def permutation_importance(run_dir: str | Path, repeats: int = 5, seed: int = 0, device: str | None = None,
                           progress: bool = True, out: str | Path | None = None) -> list[dict]:
    """Importance of every CP block (ATRC) or directional feature (mTEB) of the trained run in ``run_dir``;
    with ``out``, writes importance.csv (mean and std per block), importance_repeats.csv and importance.json."""
    cfg, model, tasks, val = load_trained(Path(run_dir), device)
    if not model.permutable():
        raise NothingToPermute(f"{run_dir}: the network has no context block or directional feature to permute "
                        "(retrain an ATRC or mTEB architecture)")
    dev = resolve_device(cfg.device)
    ctx = RunContext(cfg, Path(run_dir), dev, tasks, None, None, val)
    rows, meta = importance_of(model, ctx.val_loader, tasks, cfg.baselines, repeats, seed, dev, progress)
    if out is not None:
        out = Path(out)
        write_csv(out / "importance_repeats.csv", rows)
        write_csv(out / "importance.csv", summarize(rows, list(tasks)))
        write_json(out / "importance.json", {"run": str(run_dir), "repeats": repeats, "seed": seed, **meta})
    return rows


def importance_of(model, make_loader, tasks, baselines, repeats: int, seed: int, device, progress: bool = False):
    """Core of the permutation test for any ``DenseNetwork`` with ``permutable()`` units whose
    ``forward(image, hooks=...)`` passes each unit's feature through ``hooks[unit.key]``; ``make_loader()``
    yields batches with ``index``. A ``SplitNetwork`` runs its backbone once: every permuted evaluation reuses
    the cached features and only reruns the rest."""
    units = model.permutable()
    pairs = [u.key for u in units]
    context = {u.key: u.context for u in units}
    names = {u.key: (u.target, u.source) for u in units}
    store: dict[tuple, torch.Tensor] = {}
    n = len(make_loader().dataset)
    model.eval()
    split = isinstance(model, SplitNetwork)
    cached = []  # (labels, encoded features) per batch

    def record_hooks(idx):
        def make(pair):
            def hook(m):
                buf = store.get(pair)
                if buf is None:
                    buf = store[pair] = torch.zeros((n, *m.shape[1:]), dtype=m.dtype)
                buf[idx] = m.detach().cpu()
                return m

            return hook

        return {p: make(p) for p in pairs}

    # a unit that only feeds its own target (ATRC's CP blocks) leaves the other tasks' predictions unchanged:
    # their metrics are the unpermuted ones, so only the target is re-evaluated (edge evaluation is costly)
    target_only = model.units_affect_only_their_target

    def run(hooks_for, only: str | None = None) -> dict[str, float]:
        meters = {t: task.meter() for t, task in tasks.items() if only is None or t == only}
        with torch.no_grad():
            batches = cached if cached else ((to_device(b, device), None) for b in make_loader())
            for batch, enc in batches:
                idx = batch["index"].cpu()
                if split:
                    if enc is None:
                        enc = model.encode(batch["image"])
                        cached.append((batch, enc))
                    out = model.decode(*enc, hooks=hooks_for(idx))
                else:
                    out = model(batch["image"], hooks=hooks_for(idx))
                size = batch["image"].shape[-2:]
                for t in meters:
                    meters[t].update(upsample_to(out["pred"][t].float(), size), batch[t])
        got = primary({t: m.compute() for t, m in meters.items()}, {t: tasks[t] for t in meters})
        return {**base, **got} if only is not None else got

    base = run(record_hooks)  # full evaluation; target-only runs below fill the other tasks from it
    if not split:
        cached.clear()
    higher = {t: k.higher_is_better for t, k in tasks.items()}
    use_st = bool(baselines) and all(t in baselines for t in tasks)
    ref = {t: (baselines[t] if use_st else base[t]) for t in tasks}
    dm0 = delta_m(base, ref, higher)
    rows = []
    jobs = [(p, r) for p in pairs for r in range(repeats)]
    for key, r in bar(jobs, desc="permutation importance", enabled=progress):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + r))
        msgs = store[key]

        def permuted(idx, pair=key, perm=perm, msgs=msgs):
            return {pair: lambda msg: msgs[perm[idx]].to(msg.device, msg.dtype)}

        t, s = names[key]
        permuted_metrics = run(permuted, only=t if target_only else None)
        dm = delta_m(permuted_metrics, ref, higher)
        row = {"target": t, "source": s, "context": context[key], "repeat": r,
               "delta_m": dm, "drop_delta_m": dm0 - dm}
        for k in tasks:
            sign = 1.0 if higher[k] else -1.0
            row[f"drop_{k}"] = sign * (base[k] - permuted_metrics[k])
        rows.append(row)
    meta = {"samples": n, "delta_m_original": dm0, "metrics": base,
            "baseline": "single-task" if use_st else "unpermuted network"}
    return rows, meta


def summarize(rows: list[dict], tasks: list[str]) -> list[dict]:
    """Mean and std over repeats per (target, source)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    cols = ["drop_delta_m"] + [f"drop_{t}" for t in tasks]
    g = df.groupby(["target", "source", "context"], sort=False)[cols]
    mean, std = g.mean(), g.std(ddof=0)
    out = []
    for key in mean.index:
        row = dict(zip(["target", "source", "context"], key))
        for c in cols:
            row[f"{c}_mean"] = float(mean.loc[key, c])
            row[f"{c}_std"] = float(std.loc[key, c])
        out.append(row)
    return out
