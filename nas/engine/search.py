"""``trcnas search`` as a plain function: supergraph search, architecture export, argmax-subgraph eval."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from trcnas.nas.data import StepBatchSampler, split_off
from trcnas.nas.engine import distributed
from trcnas.nas.engine.evaluate import delta_m_of, evaluate, primary, to_device, validation_loss
from trcnas.nas.engine.loop import (
    batch_loss,
    cost_of,
    finish_run,
    fit,
    make_optimizer,
    optimizer_step,
    prepare,
    write_csv,
    write_json,
)
from trcnas.nas.families import build_supergraph, resolve_space
from trcnas.nas.plugins import load_plugins
from trcnas.nas.schema import ConfigBase, updated
from trcnas.nas.search.controller import ArchitectureSearch
from trcnas.nas.search.mixed import split_parameters
from trcnas.nas.search.oneshot import select_by_evaluation
from trcnas.nas.search.perturbation import select_by_perturbation
from trcnas.nas.search.probes import probe_losses, select_by_probes
from trcnas.spaces.architecture import architecture_from_decisions
from trcnas.spaces.errors import UserError

log = logging.getLogger(__name__)

ARCHITECTURE = "architecture.yaml"
SELECTION = "selection.json"  # perturbation / evaluation / probes selection: each decision's scores per candidate
FREEZE_COLUMNS = ["step", "decision", "choice", "probability", "margin"]


def full_length(cfg: ConfigBase, why: str | None = None) -> ConfigBase:
    """``cfg`` with ``search.stop_when_frozen`` off, for searches whose own val metrics are compared (``why``,
    printed as a note when given): a search that ended when its decisions froze trained its weights for fewer
    steps than one that froze late, so their metrics would not compare."""
    if not cfg.search.stop_when_frozen:
        return cfg
    if why:
        log.info("note: %s, so search.stop_when_frozen is off for them: each search runs all its search.steps", why)
    return updated(cfg, {"search.stop_when_frozen": False})


def _step_batches(dataset, cfg: ConfigBase, seed: int, total: int, start: int):
    """Batches of ``dataset`` for steps ``start .. total-1`` in their seeded order (StepBatchSampler)."""
    sampler = StepBatchSampler(len(dataset), cfg.train.batch_size, seed, total, start)
    return iter(DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.data.num_workers,
                           generator=torch.Generator().manual_seed(seed)))


def _tuner(cfg: ConfigBase, ctx, model, weights: list, start: int, decisions: int) -> Callable[[], None]:
    """``tune()``: ``search.selection_tune_steps`` weight steps on the batches that follow the search's (the
    ``train.optimizer`` at ``train.lr``, cosine-decayed to 0 over the ``decisions`` tunings), the live decisions
    in their training mixture; for perturbation-based selection between two decisions."""
    if distributed.world()[1] > 1:
        raise UserError("search.selection_tune_steps tunes in one process; run this search without data-parallel "
                        "workers (ray.workers: 1), or set search.selection_tune_steps: 0")
    n, tr = cfg.search.selection_tune_steps, cfg.train
    total = n * max(1, decisions)
    opt = make_optimizer(tr, weights)
    batches = _step_batches(ctx.train_set, cfg, cfg.seed, start + total, start)
    clip = tr.grad_clip if cfg.search.grad_clip is None else cfg.search.grad_clip
    done = 0

    def tune() -> None:
        nonlocal done
        model.train()
        for _ in range(n):
            for g in opt.param_groups:
                g["lr"] = tr.lr * 0.5 * (1 + math.cos(math.pi * done / total))
            batch = to_device(next(batches), ctx.device)
            loss, _ = batch_loss(model, batch, ctx.tasks, cfg.loss_weights, tr.bf16)
            optimizer_step(loss, [opt], weights, clip)
            done += 1

    return tune


def _heldout(cfg: ConfigBase, ctx, model, steps: int) -> Callable[[int], torch.Tensor]:
    """``search.alpha_data: heldout``: splits ``search.heldout_fraction`` off the training split (the weights train
    on the rest: ``ctx.train_set`` is replaced) and returns ``loss(step)``, the training objective of the held-out
    batch of a step (its own seeded order, a function of the step, so a resumed search sees the same batches)."""
    if distributed.world()[1] > 1:
        raise UserError("search.alpha_data heldout steps the alphas in one process; run this search without "
                        "data-parallel workers (ray.workers: 1), or set search.alpha_data: train")
    bs = cfg.train.batch_size
    rest, held = split_off(ctx.train_set, cfg.search.heldout_fraction, cfg.seed)
    if min(len(rest), len(held)) < bs:
        raise UserError(f"search.heldout_fraction {cfg.search.heldout_fraction} splits the {len(ctx.train_set)} "
                        f"training samples into {len(rest)} for the weights and {len(held)} held out; each part needs "
                        f"at least one batch (train.batch_size {bs}): change the fraction or add samples")
    ctx.train_set = rest
    batches = None

    def loss(step: int) -> torch.Tensor:
        nonlocal batches
        if batches is None:  # from the first step that asks (the warm-up's end, or the step a resumed search is at)
            batches = _step_batches(held, cfg, cfg.seed + 1, steps, step)
        batch = to_device(next(batches), ctx.device)
        return batch_loss(model, batch, ctx.tasks, cfg.loss_weights, cfg.train.bf16)[0]

    return loss


def search_run(cfg: ConfigBase, out_dir: str | Path, progress: bool = True, resume: bool = True,
               on_checkpoint: Callable | None = None, stop_after: int | None = None,
               on_eval: Callable[[int, dict], None] | None = None,
               report: Callable[[int, dict], None] | None = None) -> dict:
    """Writes config.yaml, checkpoint.pt, train_curve.csv, alpha_history.csv, freeze_events.csv,
    architecture.yaml and metrics.json into ``out_dir``; returns the metrics summary.

    ``on_checkpoint(step, path)`` follows every checkpoint; ``on_eval(step, {"primary", "delta_m"})``, if
    given, receives the argmax subgraph's val metrics at every intermediate checkpoint (for pruning);
    ``report(step, scalars)`` receives the live metrics instead of the in-process sinks (a Ray trial)."""
    load_plugins(cfg.plugins)
    out = Path(out_dir)
    space = resolve_space(cfg)
    ctx = prepare(cfg, out, progress, resume=resume)
    model = build_supergraph(cfg, ctx.tasks, space)
    weights, _ = split_parameters(model)
    controller = ArchitectureSearch(model, cfg.search, seed=cfg.seed)
    main = distributed.is_main()
    steps = cfg.search.steps
    if controller.heldout:
        controller.heldout_loss = _heldout(cfg, ctx, model, steps)

    def checkpoint_hook(step, path):
        history = controller.flush()
        if main:
            write_csv(out / "alpha_history.csv", history)
            write_csv(out / "freeze_events.csv", controller.events, FREEZE_COLUMNS)
        if on_checkpoint:
            on_checkpoint(step, path)
        if on_eval and step < steps:
            m = evaluate(model, ctx.val_loader(), ctx.tasks, ctx.device, bf16=cfg.train.bf16)
            model.train()
            scores = {"primary": primary(m, ctx.tasks), "delta_m": delta_m_of(m, ctx.tasks, cfg.baselines)}
            ctx.live.evaluation(step, scores["primary"], scores["delta_m"])
            on_eval(step, scores)

    result = fit(ctx, model, weights, steps, plugin=controller, progress=progress, resume=resume,
                 on_checkpoint=checkpoint_hook, stop_after=stop_after, grad_clip=cfg.search.grad_clip,
                 report=report)
    if result.step < steps and not result.ended_early:
        return {"step": result.step, "finished": False}
    if result.ended_early and progress and main:
        log.info("%s: every decision frozen at step %d of %d; the search ends here (search.stop_when_frozen)",
                 cfg.name, result.step, steps)
    selection, t0, c0 = None, time.perf_counter(), time.process_time()
    method = cfg.search.selection
    if method in ("perturbation", "evaluation"):
        def score():  # a single path (evaluation) is scored with its own batch-norm statistics
            return validation_loss(model, ctx.val_loader(), ctx.tasks, cfg.loss_weights, ctx.device,
                                   cfg.search.selection_batches, batch_stats=method == "evaluation")

        if method == "perturbation":
            tune = _tuner(cfg, ctx, model, weights, steps,
                          sum(not m.frozen for m in controller.ops) - 1) if cfg.search.selection_tune_steps else None
            selection = select_by_perturbation(controller.ops, score, seed=cfg.seed, tune=tune)
        else:
            selection = select_by_evaluation(controller.ops, score, seed=cfg.seed,
                                             sweeps=cfg.search.selection_sweeps)
    elif method == "probes":
        selection = select_by_probes(controller.ops, probe_losses(model, ctx.val_loader(), ctx.tasks, ctx.device,
                                                                  cfg.search.selection_batches))
    if selection is not None:
        model.train()
        if main:
            write_json(out / SELECTION, {"method": method, "step": result.step, "decisions": selection})
    cost = cost_of(result, ctx.device, time.perf_counter() - t0, time.process_time() - c0)  # loop and selection
    decisions = controller.decisions()
    values = {m.decision.path: m.chosen() for m in controller.ops if m.decision is not None}
    unbuilt = [m.name for m in controller.ops if m.decision is None]
    missing = [d.name for d in space.decisions(list(ctx.tasks)) if d.path not in values]
    if unbuilt or missing:  # a family's supergraph must build one MixedOp.of(decision) per decision
        raise ValueError(f"the {space.group} supergraph does not match space {space.name}: mixed ops not built from "
                         f"a decision {unbuilt[:3]}, decisions without a mixed op {missing[:3]}")
    arch = architecture_from_decisions(space, list(ctx.tasks), values, {
        "seed": cfg.seed, "step": result.step, "selection": cfg.search.selection,
        "probabilities": {k: v["probabilities"] for k, v in decisions.items()},
        "frozen_at_step": {k: v["frozen_at_step"] for k, v in decisions.items()},
        **({"loss_rise_when_removed": {r["decision"]: r["rise"] for r in selection}}
           if selection and method == "perturbation" else {}),
        **({"validation_loss": {r["decision"]: r["loss"] for r in selection}}
           if selection and method in ("evaluation", "probes") else {}),
        "cost": cost,
    })
    arch.validate(space)
    if main:
        arch.save(out / ARCHITECTURE)
    return finish_run(model, ctx, result, f"{space.name}_search", progress,
                      frozen=sum(v["frozen_at_step"] is not None for v in decisions.values()),
                      stopped_when_frozen=result.ended_early,
                      decisions=len(decisions), architecture=arch.to_dict(), cost=cost)
