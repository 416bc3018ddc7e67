"""The one training loop, shared by training, retraining and architecture search.

A ``LoopPlugin`` adds what a search needs (a second optimiser, schedules, regulariser, freezing, logging);
the loop owns data order, the weight optimiser with poly decay, gradient clipping, bf16 autocast, NaN
detection, the training curve and resumable checkpoints (model, optimisers, plugin, step, RNG states).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import random
import resource
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader

from trcnas.nas.composite.palette import build_palette_rule
from trcnas.nas.config import dump, stored_as_today
from trcnas.nas.curves import LOSS_RISE, loss_rise
from trcnas.nas.data import StepBatchSampler, build_dataset
from trcnas.nas.data.transforms import pad_collate
from trcnas.nas.engine import distributed
from trcnas.nas.engine.checkpoint import load_checkpoint, load_model_state, rng_state, save_checkpoint, set_rng_state
from trcnas.nas.engine.evaluate import delta_m_of, evaluate, primary, to_device
from trcnas.nas.engine.live import Live
from trcnas.nas.errors import DivergedError, UserError
from trcnas.nas.families import foreign_sections
from trcnas.nas.models.backbones import MultiScaleConcat
from trcnas.nas.pool import set_eval_workers
from trcnas.nas.progress import bar as progress_bar
from trcnas.nas.schema import OPTIMIZERS, ConfigBase  # the config schema owns the choices
from trcnas.nas.tasks import Task, build_tasks
from trcnas.spaces.io import atomic_write_text

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise UserError(f"device {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available on this machine (use --device cpu)")
    return dev


@dataclass
class RunContext:
    cfg: ConfigBase
    out_dir: Path
    device: torch.device
    tasks: dict[str, Task]
    info: Any
    train_set: Any
    val_set: Any
    resume: bool = True
    live: Any = None  # the run's live metrics (nas/engine/live.py), from fit until finish_run

    def start(self) -> None:
        """Creates the run directory and writes config.yaml: called by ``fit`` once the data and the model
        are built, so input refused on the way leaves no directory behind (and, with ``resume=False``,
        drops the old run's checkpoint only now)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if not self.resume:
            (self.out_dir / CHECKPOINT).unlink(missing_ok=True)
        atomic_write_text(self.out_dir / "config.yaml", dump(self.cfg))

    def val_loader(self) -> DataLoader:
        # own generator: building the iterator must not draw from the global RNG of a run in progress

        return DataLoader(self.val_set, batch_size=self.cfg.train.eval_batch_size, shuffle=False,
                          num_workers=self.cfg.data.num_workers, generator=torch.Generator(),
                          collate_fn=pad_collate)


# settings that do not change what a run computes: a run may resume under other values of these
RESUME_FREE = ("name", "device", "ray", "hpo", "plugins", "logging", "data.num_workers", "data.cache_dir",
               "data.also_right", "train.eval_workers", "report")  # data.also_right: a search's score; report: figures


def _differences(a, b, prefix="", free=RESUME_FREE) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            key = f"{prefix}{k}"
            if key in free:
                continue
            out += _differences(a.get(k), b.get(k), f"{key}.", free)
        return out
    return [] if a == b else [prefix.rstrip(".")]


def check_resumable(cfg: ConfigBase, out: Path) -> None:
    """A run directory holding a checkpoint may only be resumed with the config it was started with."""
    stored = out / "config.yaml"
    if not (out / CHECKPOINT).is_file() or not stored.is_file():
        return
    try:
        old = yaml.safe_load(stored.read_text())
    except yaml.YAMLError:
        old = None
    if isinstance(old, dict):
        old = stored_as_today(old)

    free = RESUME_FREE + foreign_sections(str(cfg.model.type))  # other families' sections
    diff = _differences(old, yaml.safe_load(dump(cfg)), free=free) if isinstance(old, dict) else \
        ["config.yaml (unreadable)"]
    if diff:
        shown = ", ".join(diff[:4]) + (f" and {len(diff) - 4} more" if len(diff) > 4 else "")
        raise UserError(f"--out {out} holds a run started with another config (differs in {shown}); give a new "
                        "--out, or add --overwrite to start this run over there")


def prepare(cfg: ConfigBase, out_dir: str | Path, progress: bool = True, resume: bool = True) -> RunContext:
    """Checks the run directory (a directory holding another config's run is refused when resuming;
    ``resume=False`` starts over) and builds the data; ``RunContext.start`` creates the directory."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory for the run")
    if resume:
        check_resumable(cfg, out)
    seed_everything(cfg.seed)
    set_eval_workers(cfg.train.eval_workers)
    device = resolve_device(cfg.device)
    train_set, info = build_dataset(cfg.data, "train", train=True, seed=cfg.seed, progress=progress)
    val_set, _ = build_dataset(cfg.data, "val", train=False, seed=cfg.seed, progress=progress)
    tasks = build_tasks(cfg.data.tasks, info)
    return RunContext(cfg, out, device, tasks, info, train_set, val_set, resume)


class LoopPlugin:
    """Hooks for extending the loop. Default: plain training."""

    kind = "train"  # what the console line calls the run

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return []

    def before_step(self, step: int, total: int) -> None:
        pass

    def extra_loss(self, step: int, total: int) -> tuple[torch.Tensor | None, dict]:
        return None, {}

    def after_step(self, step: int, total: int) -> dict:
        return {}

    def live_scalars(self) -> dict[str, float]:
        """What the plugin adds to the live metrics at a logging step (e.g. each candidate's probability)."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def finished(self) -> bool:
        """True once the plugin has nothing left to learn: the loop checkpoints and ends before ``steps``."""
        return False


@dataclass
class LoopResult:
    step: int
    rows: list[dict] = field(default_factory=list)
    wall_s: float = 0.0
    ended_early: bool = False  # the plugin finished before ``steps`` (not an interruption)
    cpu_s: float = 0.0  # CPU seconds of the loop's process (all its threads), summed over resumptions


def weight_groups(model: torch.nn.Module, params: list, encoder_lr_mult: float = 1.0) -> list[dict]:
    """Optimiser groups from module registration: the parameters of every backbone module (encoder) and all
    the others (decoders, heads, context blocks, task-embedding networks); every parameter of ``params`` in
    exactly one group. One group when the encoder's multiplier is 1 (the optimiser state stays as before)."""
    if encoder_lr_mult == 1.0:
        return [{"params": list(params), "lr_mult": 1.0, "name": "all"}]
    enc = {id(p) for m in model.modules() if isinstance(m, MultiScaleConcat) for p in m.parameters()}
    groups = [{"params": [p for p in params if id(p) in enc], "lr_mult": float(encoder_lr_mult), "name": "encoder"},
              {"params": [p for p in params if id(p) not in enc], "lr_mult": 1.0, "name": "decoder"}]
    return [g for g in groups if g["params"]]


class LRSchedule:
    """The weights' learning rate, set by torch's schedulers and stepped after every optimiser step:
    ``poly`` is ``PolynomialLR`` over the run's steps (lr x (1 - step / steps) ^ poly_power; ATRC, xTAM);
    ``plateau`` is ``ReduceLROnPlateau`` on each epoch's mean logged training loss (after more than ``patience``
    epochs without a relative improvement of 1e-4 the lr is multiplied by ``factor``; CompositeTasking). Every
    parameter group keeps its own multiple of ``train.lr`` (a pretrained encoder's). Its state is checkpointed
    with the run."""

    def __init__(self, tr: dict, opt: torch.optim.Optimizer, steps: int, epoch_steps: int):
        self.epoch_steps, self.losses = max(1, epoch_steps), []
        if tr.schedule == "plateau":
            p = tr.plateau
            self.torch = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="min", factor=p.factor, patience=p.patience, threshold=1e-4, threshold_mode="rel",
                cooldown=0, min_lr=0.0, eps=0.0)
        else:
            self.torch = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=steps, power=tr.poly_power)

    @property
    def plateau(self) -> bool:
        return isinstance(self.torch, torch.optim.lr_scheduler.ReduceLROnPlateau)

    def step(self, step: int, loss: float | None) -> None:
        """After the optimiser's step ``step``; ``loss`` is that step's logged loss (None off a logging step)."""
        if not self.plateau:
            self.torch.step()
            return
        if loss is not None:
            self.losses.append(loss)
        if (step + 1) % self.epoch_steps == 0 and self.losses:
            self.torch.step(sum(self.losses) / len(self.losses))
            self.losses = []

    def state_dict(self) -> dict:
        return {"torch": self.torch.state_dict(), "losses": list(self.losses)}

    def load_state_dict(self, state: dict | None, start: int, legacy_plateau: dict | None = None) -> None:
        """Resume at step ``start`` (the optimiser's groups already hold their saved lrs). A checkpoint written
        before the schedulers were torch's has no state: poly continues from the saved lr, plateau from the
        saved ``{scale, best, bad, losses}``."""
        if state is not None:
            self.torch.load_state_dict(state["torch"])
            self.losses = list(state["losses"])
        elif self.plateau and legacy_plateau is not None:
            self.torch.best, self.torch.num_bad_epochs = legacy_plateau["best"], legacy_plateau["bad"]
            self.losses = list(legacy_plateau["losses"])
        elif not self.plateau and start:  # PolynomialLR's closed form at step ``start``
            t = self.torch
            for g, base in zip(t.optimizer.param_groups, t.base_lrs):
                g["lr"] = base * (1 - min(start, t.total_iters) / t.total_iters) ** t.power
            t.last_epoch = start


def palette_masked(batch: dict, rule, tasks: Mapping[str, Task]) -> dict:
    """The batch with each task's labels kept only on the pixels the palette rule gives that task (drawn
    from the global RNG, which the checkpoints carry)."""
    palette = rule(batch)
    out = dict(batch)
    for k, (t, task) in enumerate(tasks.items()):
        out[t] = task.mask_target(batch[t], palette.to(batch[t].device) == k)
    return out


def make_optimizer(tr: dict, params: list) -> torch.optim.Optimizer:
    """The weight optimiser: ``sgd`` (momentum; ATRC, xTAM) or ``adam`` (CompositeTasking) over ``params``
    (tensors or ``weight_groups`` dicts, each starting at its ``lr_mult`` x ``train.lr``); ``LRSchedule``
    moves the lrs."""
    if params and isinstance(params[0], dict):
        params = [{**g, "lr": tr.lr * g["lr_mult"]} for g in params]
    if tr.optimizer == "sgd":
        return torch.optim.SGD(params, lr=tr.lr, momentum=tr.momentum, weight_decay=tr.weight_decay)
    if tr.optimizer == "adam":
        return torch.optim.Adam(params, lr=tr.lr, weight_decay=tr.weight_decay)
    raise UserError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, got {tr.optimizer!r}")


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> None:
    """Atomic CSV of dict rows; columns = union of row keys in first-seen order (or ``columns``)."""
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def batch_loss(model: torch.nn.Module, batch: dict, tasks, weights, bf16: bool = False, forward=None):
    """(the weighted training objective, its parts) of one batch, the outputs in bf16 autocast when asked;
    ``forward``: what computes them instead of ``model.forward_batch`` (its DDP wrapper)."""
    with torch.autocast(device_type=batch["image"].device.type, dtype=torch.bfloat16, enabled=bf16):
        out = (forward or model.forward_batch)(batch)
    return model.compute_losses(out, batch, tasks, weights)


def optimizer_step(loss: torch.Tensor, optims: list, params: list, clip: float | None) -> None:
    """One optimiser step of every optimiser in ``optims`` on ``loss``, the gradient norm of ``params`` clipped
    to ``clip`` first (None or 0: no clipping)."""
    for o in optims:
        o.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(params, clip)
    for o in optims:
        o.step()


def fit(ctx: RunContext, model: torch.nn.Module, weight_params: list, steps: int, plugin: LoopPlugin | None = None,
        progress: bool = True, resume: bool = True, curve_name: str = "train_curve.csv",
        on_checkpoint: Callable[[int, Path], None] | None = None, stop_after: int | None = None,
        grad_clip: float | None = None, report: Callable[[int, dict], None] | None = None) -> LoopResult:
    """Train ``model`` for ``steps`` steps. ``stop_after`` ends early (still checkpointing) for tests that
    simulate an interrupted run; ``grad_clip`` (None: ``train.grad_clip``) clips the weights' gradient norm.
    Inside a process group (Ray Train workers) every rank trains on its slice of each global batch with DDP and
    cross-rank batch norm; rank 0 writes the files. Every logging step goes to the live metrics (``logging``
    section; ``report``: a Ray trial's reporter instead of the in-process sinks)."""
    cfg, tr = ctx.cfg, ctx.cfg.train
    plugin = plugin or LoopPlugin()
    ctx.start()
    rank, world = distributed.world()
    if world > 1:
        if tr.batch_size % world:
            raise UserError(f"train.batch_size {tr.batch_size} must be a multiple of the {world} workers")
        distributed.convert_batchnorm(model, ctx.device)
    model.to(ctx.device)
    ddp = distributed.wrap(model, ctx.device) if world > 1 else None
    weights_mult = tr.pretrained_encoder_lr_mult if cfg.model.backbone.weights else 1.0
    groups = weight_groups(model, weight_params, weights_mult)
    opt = make_optimizer(tr, groups)
    optims = [opt, *plugin.optimizers()]
    schedule = LRSchedule(tr, opt, steps, len(ctx.train_set) // tr.batch_size)
    label_rule = None
    if tr.label_palette:
        names = getattr(next(iter(ctx.tasks.values())).info, "class_names", ())
        label_rule = build_palette_rule(tr.label_palette, list(ctx.tasks), names)
    ckpt_path = ctx.out_dir / CHECKPOINT
    start, rows, elapsed, elapsed_cpu = 0, [], 0.0, 0.0
    if resume and ctx.resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, map_location=ctx.device, keys=("model", "optimizers", "step", "rows"))
        load_model_state(model, state, ckpt_path)
        for o, s in zip(optims, state["optimizers"]):
            o.load_state_dict(s)
        plugin.load_state_dict(state["plugin"])
        set_rng_state(state["rng"])
        start, rows, elapsed = state["step"], list(state["rows"]), state.get("wall_s", 0.0)
        elapsed_cpu = state.get("cpu_s", 0.0)
        if progress and rank == 0 and start:
            logger.info("resuming %s from step %d of %d", ctx.out_dir, start, steps)
        schedule.load_state_dict(state.get("schedule"), start, state.get("plateau"))
    if start < steps and plugin.finished():  # a run its plugin ended early resumes as done
        return LoopResult(start, rows, elapsed, ended_early=True, cpu_s=elapsed_cpu)
    if len(ctx.train_set) < tr.batch_size:
        where = f" under data.root {cfg.data.root}" if cfg.data.root else ""
        raise UserError(f"the train split of data.dataset {cfg.data.dataset}{where} has {len(ctx.train_set)} "
                        f"samples, fewer than one batch (train.batch_size {tr.batch_size}); add samples to the "
                        "split or lower train.batch_size")
    sampler = StepBatchSampler(len(ctx.train_set), tr.batch_size, cfg.seed, steps, start, rank, world)
    # its own generator: creating the iterator must not draw from the global RNG (bit-exact resumption)
    loader = DataLoader(ctx.train_set, batch_sampler=sampler, num_workers=cfg.data.num_workers,
                        pin_memory=ctx.device.type == "cuda", generator=torch.Generator().manual_seed(cfg.seed))
    weights = cfg.loss_weights
    clip = tr.grad_clip if grad_clip is None else grad_clip

    def checkpoint(step):
        if rank != 0:
            if on_checkpoint:
                on_checkpoint(step, ckpt_path)
            return
        state = {"model": model.state_dict(), "optimizers": [o.state_dict() for o in optims],
                 "plugin": plugin.state_dict(), "rng": rng_state(), "step": step, "rows": rows,
                 "wall_s": elapsed + time.perf_counter() - t0, "cpu_s": elapsed_cpu + time.process_time() - c0}
        state["schedule"] = schedule.state_dict()
        save_checkpoint(ckpt_path, state)
        write_csv(ctx.out_dir / curve_name, rows)
        if on_checkpoint:
            on_checkpoint(step, ckpt_path)

    t0, c0 = time.perf_counter(), time.process_time()
    # a live bar on a terminal; elsewhere (a log file, a Ray trial) the live metrics' console line instead
    tty = sys.stderr.isatty()
    ctx.live = Live(cfg, ctx.out_dir, steps, plugin.kind, start, report, enabled=rank == 0,
                    console=progress and not tty)
    model.train()
    bar = progress_bar(total=steps, initial=start, desc=ctx.cfg.name, enabled=progress and rank == 0 and tty)
    step, ended_early = start, False
    for step, batch in enumerate(loader, start=start):
        lr = opt.param_groups[0]["lr"] / groups[0]["lr_mult"]  # train.lr as scheduled (groups hold multiples)
        plugin.before_step(step, steps)
        batch = to_device(batch, ctx.device)
        if label_rule is not None:
            batch = palette_masked(batch, label_rule, ctx.tasks)
        loss, parts = batch_loss(model, batch, ctx.tasks, weights, tr.bf16, forward=ddp)
        extra, extra_log = plugin.extra_loss(step, steps)
        if extra is not None:
            loss = loss + extra
        optimizer_step(loss, optims, weight_params, clip)
        log = plugin.after_step(step, steps)
        value = None
        if step % tr.log_every == 0 or step == steps - 1:
            value = float(distributed.mean_over_ranks(loss.detach()))  # the only host sync, at logging steps
            if not math.isfinite(value):
                raise DivergedError(f"loss became {value} at step {step}")
            row = {"step": step, "loss": value, "lr": lr, **{f"loss_{k}": float(v) for k, v in parts.items()},
                   **{k: float(v) for k, v in {**extra_log, **log}.items()}}
            rows.append(row)
            bar.set_postfix(loss=f"{value:.3f}", refresh=False)  # drawn at the bar's own rate
            ctx.live.log(step, {"loss": value, "lr": lr, **{f"loss/{k}": row[f"loss_{k}"] for k in parts},
                                **{k: v for k, v in row.items() if k not in ("step", "loss", "lr")
                                   and not k.startswith("loss_")}, **plugin.live_scalars()})
        schedule.step(step, value)  # plateau: the epoch's mean of the logged losses (no extra host sync)
        bar.update(1)
        saved = (step + 1) % tr.checkpoint_every == 0 or step == steps - 1
        if saved:
            checkpoint(step + 1)
        ended_early = step < steps - 1 and plugin.finished()
        if ended_early or (stop_after is not None and step + 1 >= stop_after):
            if not saved:
                checkpoint(step + 1)
            break
    bar.close()
    if step + 1 < steps and not ended_early:  # interrupted on purpose (stop_after): no finish_run follows
        ctx.live.close()
    return LoopResult(step + 1, rows, elapsed + time.perf_counter() - t0, ended_early,
                      elapsed_cpu + time.process_time() - c0)


def cost_of(result: LoopResult, device: torch.device, extra_wall_s: float = 0.0, extra_cpu_s: float = 0.0) -> dict:
    """What a run cost: the training loop's wall and process-CPU seconds (summed over resumptions; ``extra_*``
    adds work after the loop, e.g. a perturbation-based selection), the process's peak resident memory, and on
    a GPU its busy time (the loop's wall time) and peak allocated memory."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    cost = {"wall_s": result.wall_s + extra_wall_s, "cpu_s": result.cpu_s + extra_cpu_s,
            "peak_rss_mb": rss / 1024 if sys.platform != "darwin" else rss / 2**20}
    if device.type == "cuda":
        cost["gpu_s"] = result.wall_s + extra_wall_s
        cost["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return cost


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=float))


def finish_run(model, ctx: RunContext, result: LoopResult, model_name: str, progress: bool = True,
               cost: dict | None = None, **extra) -> dict:
    """Evaluates on the val split and writes ``metrics.json``: every metric, primary metrics, their
    directions, Delta_m (with baselines), steps, wall time, the run's cost (``cost``, default :func:`cost_of`
    the loop), plus ``extra``."""
    metrics = evaluate(model, ctx.val_loader(), ctx.tasks, ctx.device, progress=progress,
                       bf16=ctx.cfg.train.bf16)
    summary = {
        "model": model_name,
        "tasks": list(ctx.tasks),
        "metrics": metrics,
        "primary": primary(metrics, ctx.tasks),
        "directions": {t: ("higher" if k.higher_is_better else "lower") for t, k in ctx.tasks.items()},
        "delta_m": delta_m_of(metrics, ctx.tasks, ctx.cfg.baselines),
        "steps": result.step,
        "wall_s": result.wall_s,
        "cost": cost or cost_of(result, ctx.device),
        "loss_rise": loss_rise(r["loss"] for r in result.rows),
        **extra,
    }
    if ctx.live is not None:
        ctx.live.evaluation(result.step, summary["primary"], summary["delta_m"])
        ctx.live.close()
    if distributed.is_main():
        write_json(ctx.out_dir / "metrics.json", summary)
        if summary["loss_rise"] > LOSS_RISE:
            logger.warning("%s: the training loss ended at %.3gx its best (mean of the last 10 %% of logged steps "
                           "against the lowest such window), a late divergence the non-finite check does not stop; "
                           "its metrics are written as they are", ctx.out_dir, summary["loss_rise"])
    return summary
