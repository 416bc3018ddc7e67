"""Searches as Ray Tune trials: one trial = one ``search_run`` (a seed, or a point of the param space).

Each trial reports its checkpoint (weights, optimisers, alpha, freeze state, schedule position, RNG states)
through ``tune.report(..., checkpoint=tune.Checkpoint)`` every ``train.checkpoint_every`` steps, so a
crashed trial is retried from it (``FailureConfig``) and ``--resume`` continues an interrupted experiment
with ``Tuner.restore``. A trial whose loss diverges ends as errored with the reason; the others go on.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from trcnas.nas.config import apply_overrides, validate, with_defaults
from trcnas.nas.engine.live import log
from trcnas.nas.engine.loop import CHECKPOINT
from trcnas.nas.engine.search import full_length, search_run
from trcnas.nas.errors import DivergedError, UserError
from trcnas.nas.schema import ConfigBase, as_dict, updated
from trcnas.runners.experiment import write_summary
from trcnas.runners.params import grid_size, parse_params

ARTIFACTS = ("architecture.yaml", "metrics.json", "alpha_history.csv", "freeze_events.csv", "train_curve.csv",
             "config.yaml")
DIVERGED = "diverged.json"


def absolute_paths(cfg: ConfigBase) -> ConfigBase:
    """Trials run in their own working directories: make every configured path absolute on the driver."""
    paths = {"data.cache_dir": cfg.data.cache_dir, "data.root": cfg.data.root,
             "model.architecture": cfg.model.architecture, "model.backbone.weights": cfg.model.backbone.weights}
    return updated(cfg, {k: str(Path(v).resolve()) for k, v in paths.items() if v})


def param_space(cfg: ConfigBase, num_samples: int) -> dict:
    """The Tune param space of ``ray.param_space`` (the one format of ``runners/params.py``); every grid /
    choice value and both ends of every range are checked against the config first (a trial never starts with
    a value the config refuses)."""
    from ray import tune


    space = {k: p.to_tune() for k, p in parse_params(cfg, "ray.param_space").items()}
    seeds = list(range(cfg.seed, cfg.seed + num_samples))
    return {"seed": tune.grid_search(seeds) if len(seeds) > 1 else seeds[0], "overrides": space}


def _copy_into(src: Path, dst: Path, names) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for n in names:
        if (src / n).is_file():
            shutil.copy2(src / n, dst / n)


def search_trial(config: dict) -> None:
    """The Ray Tune function trainable."""
    import ray
    from ray import tune

    raw = apply_overrides(with_defaults(config["cfg"]), config.get("overrides") or {})
    raw["seed"] = int(config["seed"])
    cfg = validate(raw, "ray.param_space")  # the values this trial drew, checked like every other config
    cpus = int(max(1, (config.get("cpus") or 1)))
    torch.set_num_threads(cpus)
    run_dir = Path(tune.get_context().get_trial_dir()) / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    marker = run_dir / DIVERGED
    if marker.exists():  # a retry of a diverged trial would diverge again: fail at once, same reason
        raise DivergedError(json.loads(marker.read_text())["error"])
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            _copy_into(Path(d), run_dir, (CHECKPOINT, *ARTIFACTS))
    node = ray.get_runtime_context().get_node_id()

    def report(step, path, final=None):
        with tempfile.TemporaryDirectory() as tmp:
            _copy_into(run_dir, Path(tmp), (CHECKPOINT, *ARTIFACTS))
            metrics = {"step": step, "done": final is not None, "node_id": node, **(final or {})}
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))

    try:
        if cfg.ray.workers > 1:
            summary = ddp_search(cfg, run_dir, cpus, config.get("gpus") or 0)
        else:
            summary = search_run(cfg, run_dir, progress=False, resume=True, on_checkpoint=report,
                                 report=lambda step, scalars: tune.report({"step": step, **scalars}))
    except DivergedError as e:
        marker.write_text(json.dumps({"error": str(e)}))
        raise
    final = {f"val/{t}": v for t, v in summary["primary"].items()}
    final.update({"delta_m": summary["delta_m"], "frozen": summary["frozen"], "search_wall_s": summary["wall_s"]})
    report(summary["steps"], None, final)


def _ddp_worker(config: dict) -> None:
    """One Ray Train worker of a data-parallel search (the process group is set up by TorchTrainer)."""
    import ray

    torch.set_num_threads(max(1, int(config["cpus"])))
    cfg = validate(config["cfg"], "a Ray Train worker's config")  # it crossed to this process as plain data
    rank = ray.train.get_context().get_world_rank()
    where = {"rank": rank, "node_id": ray.get_runtime_context().get_node_id()}
    (Path(config["run_dir"]) / f"worker{rank}.json").write_text(json.dumps(where))
    if config["gpus"]:
        import ray.train.torch

        cfg = updated(cfg, {"device": str(ray.train.torch.get_device())})
    search_run(cfg, Path(config["run_dir"]), progress=False, resume=True)


def ddp_search(cfg: ConfigBase, run_dir: Path, cpus: float, gpus: float) -> dict:
    """A search on ``ray.workers`` DDP workers (Ray Train TorchTrainer: gloo on CPUs, NCCL on GPUs). The
    workers resume from ``run_dir/checkpoint.pt``, so a retried worker group or trial continues where the
    last checkpoint left it; the trial reports when the workers finish."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    workers = int(cfg.ray.workers)
    per_worker = {"CPU": float(cpus), **({"GPU": float(gpus)} if gpus else {})}
    trainer = TorchTrainer(
        _ddp_worker,
        train_loop_config={"cfg": as_dict(cfg), "run_dir": str(run_dir), "cpus": cpus, "gpus": gpus},
        torch_config=TorchConfig(backend="nccl" if gpus else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=bool(gpus),
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(name="ddp", storage_path=str(run_dir.parent.resolve()),
                                       failure_config=ray.train.FailureConfig(max_failures=cfg.ray.max_failures)),
    )
    try:
        trainer.fit()
    except Exception as e:  # a worker's DivergedError arrives wrapped: keep its reason for the summary
        msg = str(e)
        if "loss became" in msg:
            line = next(ln for ln in msg.splitlines() if "loss became" in ln)
            raise DivergedError(line.split("DivergedError:")[-1].strip()) from None
        raise
    return json.loads((run_dir / "metrics.json").read_text())


def init_ray(address: str | None, num_cpus: int | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    else:
        # "local": always a new local instance, never a cluster some earlier `ray start` left recorded
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


def run_tune_search(cfg: ConfigBase, name: str, address: str | None = None, num_samples: int = 1,
                    resume: str | None = None, verbose: int = 1, out: str | Path | None = None) -> Path:
    """Launch (or ``resume``) an experiment; returns its directory: ``out`` when given, else
    ``ray.storage_path/name``."""
    import ray
    from ray import tune


    if not resume:
        param_space(cfg, num_samples)  # refuses a bad ray.param_space before a cluster is started
    init_ray(address)
    r = cfg.ray
    n_trials = max(1, num_samples) * grid_size(parse_params(cfg, "ray.param_space"))
    cpu = r.resources.get("cpu")
    if not cpu:  # share the cluster's CPUs among the trials that run at once, at most one node's worth
        at_once = min(n_trials, r.max_concurrent_trials or n_trials)
        per_node = max([int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")] or [1])
        slots = at_once * max(1, r.workers)  # data-parallel workers each take a share
        cpu = max(1, min(int(ray.cluster_resources().get("CPU", 1)) // slots, per_node))
    resources = {"cpu": float(cpu), "gpu": float(r.resources.get("gpu", 0))}
    # a data-parallel trial only coordinates (no CPU, a token of memory): its Ray Train workers hold the resources
    trainable = tune.with_resources(search_trial, resources if r.workers <= 1 else {"cpu": 0, "memory": 2**20})
    if resume:
        path = Path(resume).resolve()
        if not (path / "tuner.pkl").exists() and not any(path.glob("experiment_state-*.json")):
            raise UserError(f"--resume {path}: not a Ray Tune experiment directory")
        # errored trials get another run: a crash (or a lost cluster) resumes from the last checkpoint, a
        # diverged trial fails again at once with its recorded reason
        tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
        exp_dir = path
    else:
        cfg = absolute_paths(cfg)
        if resources["gpu"] > 0:
            cfg = updated(cfg, {"device": "cuda"})
        space = param_space(cfg, num_samples)
        space.update({"cfg": as_dict(cfg), "cpus": resources["cpu"], "gpus": resources["gpu"]})
        if out is not None:
            out = Path(out).resolve()
            if out.exists() and not out.is_dir():
                raise UserError(f"--out {out} is a file; give a directory for the experiment")
            if out.is_dir() and any(out.iterdir()):
                raise UserError(f"--out {out} is not empty; give a new directory, or --resume {out} to continue "
                                "an interrupted experiment there")
            storage, name = str(out.parent), out.name
        else:
            storage = str(Path(r.storage_path).resolve()) if "://" not in r.storage_path else r.storage_path
        if n_trials > 1:
            space["cfg"] = as_dict(full_length(cfg, f"the {n_trials} trials are ranked by their val metrics"))
        from trcnas.runners.live_ray import callbacks

        exp_dir = Path(storage) / name
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=r.max_concurrent_trials),
            run_config=tune.RunConfig(
                # Ray's trial-status box on a terminal only; in a log file the trials' console lines say more
                name=name, storage_path=storage, verbose=verbose if sys.stderr.isatty() else 0,
                callbacks=callbacks(cfg, exp_dir, console=verbose > 0),
                failure_config=tune.FailureConfig(max_failures=r.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            ),
        )
        if "://" not in storage and verbose:
            log.info(f"watch it live: tensorboard --logdir {exp_dir}")
    tuner.fit()

    write_summary(exp_dir)
    return exp_dir
