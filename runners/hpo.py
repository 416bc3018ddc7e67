"""``trcnas hpo``: an Optuna study over search hyperparameters declared in YAML (``hpo.params``); each trial
is a short search (+ optional retrain) scored on val Delta_m (or other objectives). Studies live in an RDB
or journal storage that optuna-dashboard reads; single-objective studies prune on intermediate val
metrics, multi-objective studies export their Pareto front (CSV + architecture YAMLs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from trcnas.analysis.agreement import mean_agreement
from trcnas.nas.config import apply_overrides, validate
from trcnas.nas.engine.search import ARCHITECTURE, full_length, search_run
from trcnas.nas.engine.train import train_run
from trcnas.nas.errors import UserError
from trcnas.nas.schema import ConfigBase, as_dict, updated
from trcnas.runners.compare import architecture_cost, dataset_info
from trcnas.runners.params import parse_params
from trcnas.runners.tune_search import absolute_paths, init_ray
from trcnas.spaces import load_architecture
from trcnas.spaces.io import atomic_write_text

OBJECTIVES = ("delta_m", "params_M", "madds_G", "agreement")


def make_storage(url: str):
    """``sqlite:///file.db`` (one process), ``postgresql://...`` (many), or ``journal:FILE`` (many, no server)."""
    import optuna

    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as e:  # sqlalchemy raises many types for a bad URL or unreachable server
        raise UserError(f"cannot open Optuna storage {url}: {e.__class__.__name__}: {str(e).splitlines()[0]}") from None


def suggest(trial, name: str, dist):
    """The trial's value of ``name`` under the Optuna distribution ``dist`` (from ``check_study``)."""
    from optuna.distributions import FloatDistribution, IntDistribution

    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log)
    return trial.suggest_categorical(name, list(dist.choices))


PRUNERS = ("median", "hyperband", "none")
DIRECTIONS = ("maximize", "minimize")


def check_study(cfg: ConfigBase) -> dict:
    """Check the study definition before any study is created or loaded: objectives and directions, the
    pruner, and every ``hpo.params`` entry (a config key, a well-formed range, and a range whose ends are
    values the config accepts). Returns the params as Optuna distributions."""
    h = cfg.hpo
    objectives, directions = list(h.objectives), list(h.directions)
    if not objectives or len(objectives) != len(directions):
        raise UserError(f"hpo.objectives ({len(objectives)}) and hpo.directions ({len(directions)}) must be "
                        "non-empty and of the same length")
    for d in directions:
        if d not in DIRECTIONS:
            raise UserError(f"hpo.directions: {d!r} must be maximize or minimize")
    tasks = cfg.data.tasks
    for o in objectives:
        if not (o in OBJECTIVES or (o.startswith("val/") and o[4:] in tasks)):
            raise UserError(f"hpo.objectives: unknown objective {o!r}; use {', '.join(OBJECTIVES)} or val/<task> "
                            f"with a task of data.tasks ({', '.join(tasks)})")
    missing = [t for t in tasks if t not in cfg.baselines]
    if "delta_m" in objectives and missing:
        raise UserError(f"hpo objective delta_m needs single-task baselines for every task; baselines.{missing[0]} "
                        "is missing")
    if "agreement" in objectives and h.seeds < 2:
        raise UserError(f"hpo objective agreement compares the searches of one trial: set hpo.seeds >= 2 "
                        f"(got {h.seeds})")
    if h.pruner not in PRUNERS:
        raise UserError(f"hpo.pruner must be one of {', '.join(PRUNERS)}, got {h.pruner!r}")
    if not h.params:
        raise UserError("hpo.params is empty: declare the hyperparameters to tune")
    return {k: p.to_optuna("hpo.params") for k, p in parse_params(cfg, "hpo.params").items()}


def _pruner(name: str):
    import optuna

    return {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
            "hyperband": optuna.pruners.HyperbandPruner, "none": optuna.pruners.NopPruner}[name]()


def _value(objective: str, summary: dict, cfg: ConfigBase, arch_path: Path) -> float:
    if objective == "delta_m":
        if summary.get("delta_m") is None:
            raise UserError("hpo objective delta_m needs single-task `baselines` for every task in the config")
        return float(summary["delta_m"])
    if objective.startswith("val/"):
        return float(summary["primary"][objective[4:]])
    if objective in ("params_M", "madds_G"):
        if objective in summary:  # a retrain records its network's cost
            return float(summary[objective])

        return float(architecture_cost(cfg, dataset_info(cfg), load_architecture(arch_path))[objective])
    raise UserError(f"unknown hpo objective {objective!r}; use delta_m, val/<task>, params_M or madds_G")


def reads_metrics(objective: str) -> bool:
    """The objective is a val metric of the trial's network (``delta_m``, ``val/<task>``), not its cost or the
    agreement of its searches: it has intermediate values to prune on and depends on how long weights train."""
    return objective == "delta_m" or objective.startswith("val/")


def comparable_searches(cfg: ConfigBase) -> ConfigBase:
    """The study's config: its searches run all their steps when an objective reads the search's own val
    metrics (``delta_m`` or ``val/<task>`` without ``hpo.retrain``)."""
    h = cfg.hpo
    if h.retrain or not any(reads_metrics(o) for o in h.objectives):
        return cfg
    return full_length(cfg, "the study ranks its trials by their searches' val metrics")


def run_trial(cfg: dict | ConfigBase, run_dir: Path, objectives: list[str], on_eval=None) -> tuple[dict, Path]:
    """One trial: ``hpo.seeds`` searches (seeds ``seed``, ``seed + 1``, ...; each retrained with
    ``hpo.retrain``) into ``run_dir`` (``run_dir/seed<k>`` when several). Returns every objective — the mean
    over the searches; ``agreement``: the % of search pairs that took the same value, averaged over the
    decisions — and the first search's architecture file. ``on_eval`` follows the first search."""
    cfg = validate(cfg, "hpo trial")  # the suggested values together, checked like every other config
    n = cfg.hpo.seeds
    per_seed, archs = [], []
    for k in range(n):
        scfg = updated(cfg, {"seed": cfg.seed + k})
        d = run_dir / f"seed{k}" if n > 1 else run_dir
        summary = search_run(scfg, d, progress=False, on_eval=on_eval if k == 0 else None)
        archs.append(d / ARCHITECTURE)
        if cfg.hpo.retrain:
            summary = train_run(scfg, d / "retrain", architecture=str(d / ARCHITECTURE), progress=False)
        per_seed.append({o: _value(o, summary, scfg, d / ARCHITECTURE) for o in objectives if o != "agreement"})
    values = {o: float(sum(v[o] for v in per_seed) / n) for o in objectives if o != "agreement"}
    if "agreement" in objectives:
        values["agreement"] = mean_agreement([load_architecture(a).choices for a in archs])
    return values, archs[0]


def run_study(cfg: ConfigBase, out: str | Path, storage: str | None = None, study_name: str | None = None,
              n_trials: int | None = None, progress: bool = True, pinned: dict | None = None) -> dict:
    """``pinned``: config values that override the trial's suggestions (``--fast-dev-run`` pins the step
    counts, so a study that tunes ``search.steps`` still checks its setup in seconds)."""
    import optuna

    dists = check_study(cfg)
    h = cfg.hpo
    out = Path(out)
    objectives, directions = list(h.objectives), list(h.directions)
    multi = len(objectives) > 1
    store = make_storage(storage or h.storage)
    cfg = comparable_searches(cfg)  # after every input check: its note is not an error's preamble
    name = study_name or h.study_name
    study = optuna.create_study(study_name=name, storage=store, load_if_exists=True, directions=directions,
                                sampler=optuna.samplers.TPESampler(seed=cfg.seed),
                                pruner=None if multi else _pruner(h.pruner))
    study.set_metric_names(objectives)

    def objective(trial):
        overrides = {k: suggest(trial, k, d) for k, d in dists.items()}
        tcfg = apply_overrides(apply_overrides(cfg, overrides, "hpo.params"), pinned or {}, "hpo.pinned")
        run_dir = out / f"trial_{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir.resolve()))

        def on_eval(step, m):
            value = m["delta_m"] if objectives[0] == "delta_m" else m["primary"].get(objectives[0][4:])
            if value is None:
                return
            trial.report(float(value), step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")

        prunable = not multi and h.pruner != "none" and reads_metrics(objectives[0])
        values, arch_path = run_trial(tcfg, run_dir, objectives, on_eval if prunable else None)
        trial.set_user_attr("architecture", str(arch_path.resolve()))
        return [values[o] for o in objectives] if multi else values[objectives[0]]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=n_trials or h.n_trials, show_progress_bar=progress, catch=())
    return export_study(study, out, objectives)


def hpo_trial(config: dict) -> None:
    """Ray Tune trainable of a study run through OptunaSearch: a search with the suggested values, reporting
    a single objective at every checkpoint (Optuna's intermediate values) and every objective at the end."""
    from ray import tune

    suggested = apply_overrides(config["cfg"], {k: config[k] for k in config["params"]}, "hpo.params")
    cfg = validate(apply_overrides(suggested, config["pinned"], "hpo.pinned"), "hpo trial")
    torch.set_num_threads(max(1, int(config["cpus"])))
    objectives = config["objectives"]
    run_dir = Path(tune.get_context().get_trial_dir()) / "run"

    def on_eval(step, m):
        o = objectives[0]
        value = m["delta_m"] if o == "delta_m" else m["primary"].get(o[4:])
        if value is not None:
            tune.report({o: float(value), "step": step, "done": False})

    intermediate = len(objectives) == 1 and reads_metrics(objectives[0])
    final, arch = run_trial(cfg, run_dir, objectives, on_eval if intermediate else None)
    steps = cfg.search.steps * cfg.hpo.seeds
    tune.report({**final, "step": steps, "done": True, "architecture": str(arch.resolve())})


def run_study_ray(cfg: ConfigBase, out: str | Path, storage: str | None = None, study_name: str | None = None,
                  n_trials: int | None = None, address: str | None = None, pinned: dict | None = None) -> dict:
    """The study's trials as Ray Tune trials proposed by OptunaSearch in the same storage: they spread over
    the cluster (``ray.max_concurrent_trials``, ``ray.resources``) and optuna-dashboard sees each trial with
    its params, values and (single objective) intermediate values. Multi-objective studies export their
    Pareto front as the in-process ones do."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch


    dists = check_study(cfg)
    h = cfg.hpo
    objectives, directions = list(h.objectives), list(h.directions)
    out = Path(out).resolve()
    name = study_name or h.study_name
    store = make_storage(storage or h.storage)
    cfg = comparable_searches(cfg)
    modes = ["max" if d == "maximize" else "min" for d in directions]
    multi = len(objectives) > 1
    searcher = OptunaSearch(space=dists, metric=objectives if multi else objectives[0],
                            mode=modes if multi else modes[0], study_name=name, storage=store,
                            sampler=optuna.samplers.TPESampler(seed=cfg.seed))
    init_ray(address)
    cpu = float(cfg.ray.resources.get("cpu") or 1)
    trainable = tune.with_resources(hpo_trial, {"cpu": cpu, "gpu": float(cfg.ray.resources.get("gpu", 0))})
    cfg = absolute_paths(cfg)
    tuner = tune.Tuner(
        trainable,
        param_space={"cfg": as_dict(cfg), "params": list(h.params), "objectives": objectives, "cpus": cpu,
                     "pinned": pinned or {}},
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=n_trials or h.n_trials,
                                    max_concurrent_trials=cfg.ray.max_concurrent_trials),
        run_config=tune.RunConfig(name=name, storage_path=str(out / "ray"), verbose=1),
    )
    results = tuner.fit()
    study = optuna.load_study(study_name=name, storage=store)
    if not study.metric_names:
        study.set_metric_names(objectives)
    # the architecture of each Optuna trial: the Tune trial proposed with the same params (finished Optuna
    # trials take no more user attributes, so the mapping is kept beside the study's exports)
    by_params = {}
    for r in results:
        if r.metrics and r.metrics.get("architecture"):
            by_params[tuple(sorted((k, r.config[k]) for k in h.params))] = r.metrics["architecture"]
    archs = {t.number: by_params[key] for t in study.trials
             if (key := tuple(sorted(t.params.items()))) in by_params}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "architectures.json", json.dumps(archs, indent=2))
    return export_study(study, out, objectives, archs)


def export_study(study, out: Path, objectives: list[str], architectures: dict[int, str] | None = None) -> dict:
    """trials.csv always; best.yaml (single objective) or pareto.csv + pareto/trial_N.yaml (multi).
    A trial's architecture file is its ``architecture`` user attribute, else ``architectures[number]``."""
    def arch_of(t):
        return t.user_attrs.get("architecture") or (architectures or {}).get(t.number)

    out.mkdir(parents=True, exist_ok=True)
    df = study.trials_dataframe()
    atomic_write_text(out / "trials.csv", df.to_csv(index=False))
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    result = {"study": study.study_name, "trials": len(study.trials), "complete": len(done),
              "trials_csv": str(out / "trials.csv")}
    meta = {"study": study.study_name, "objectives": objectives,
            "directions": [d.name.lower() for d in study.directions]}
    atomic_write_text(out / "study.json", json.dumps(meta, indent=2))
    if len(done) >= 2 and len(objectives) == 1:
        import optuna
        import pandas as pd

        imp = optuna.importance.get_param_importances(study)
        atomic_write_text(out / "param_importances.csv",
                          pd.DataFrame({"param": list(imp), "importance": list(imp.values())}).to_csv(index=False))
    if not done:
        return result
    if len(objectives) == 1:
        best = study.best_trial
        shutil.copy2(arch_of(best), out / "best.yaml")
        result.update(best_value=best.value, best_params=best.params, best=str(out / "best.yaml"))
        return result
    import pandas as pd

    (out / "pareto").mkdir(exist_ok=True)
    rows = []
    for t in study.best_trials:
        dst = out / "pareto" / f"trial_{t.number:04d}.yaml"
        shutil.copy2(arch_of(t), dst)
        rows.append({"trial": t.number, **dict(zip(objectives, t.values)), **t.params, "architecture": str(dst)})
    atomic_write_text(out / "pareto.csv", pd.DataFrame(rows).to_csv(index=False))
    result.update(pareto=str(out / "pareto.csv"), pareto_size=len(rows))
    return result
