"""``trcnas hpo``: an Optuna study over search hyperparameters declared in YAML (``hpo.params``); each trial
is a short search (+ optional retrain) scored on val Delta_m (or other objectives). Studies live in an RDB
or journal storage that optuna-dashboard reads; single-objective studies prune on intermediate val
metrics, multi-objective studies export their Pareto front (CSV + architecture YAMLs)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

from nas.errors import UserError
from spaces.io import atomic_write_text

OBJECTIVES = ("delta_m", "params_M", "madds_G")


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


def suggest(trial, name: str, spec: dict):
    kind = spec.get("type")
    if kind == "float":
        return trial.suggest_float(name, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)))
    if kind == "int":
        return trial.suggest_int(name, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False)))
    if kind == "categorical":
        return trial.suggest_categorical(name, list(spec["choices"]))
    raise UserError(f"hpo.params.{name}: type must be float, int or categorical, got {kind!r}")


def _pruner(name: str):
    import optuna

    pruners = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
               "hyperband": optuna.pruners.HyperbandPruner, "none": optuna.pruners.NopPruner}
    if name not in pruners:
        raise UserError(f"hpo.pruner must be one of {', '.join(pruners)}, got {name!r}")
    return pruners[name]()


def _value(objective: str, summary: dict, cfg: dict, arch_path: Path) -> float:
    if objective == "delta_m":
        if summary.get("delta_m") is None:
            raise UserError("hpo objective delta_m needs single-task `baselines` for every task in the config")
        return float(summary["delta_m"])
    if objective.startswith("val/"):
        return float(summary["primary"][objective[4:]])
    if objective in ("params_M", "madds_G"):
        from nas.data import build_dataset
        from nas.engine.summary import model_summary
        from nas.models import build_model
        from nas.tasks import build_tasks
        from spaces import load_architecture

        _, info = build_dataset(cfg["data"], "val", train=False, progress=False)
        model = build_model(cfg, build_tasks(cfg["data"]["tasks"], info), kind="atrc",
                            architecture=load_architecture(arch_path))
        return float(model_summary(model, tuple(cfg["data"]["crop"] or cfg["data"]["image_size"]))[objective])
    raise UserError(f"unknown hpo objective {objective!r}; use delta_m, val/<task>, params_M or madds_G")


def run_study(cfg: dict, out: str | Path, storage: str | None = None, study_name: str | None = None,
              n_trials: int | None = None) -> dict:
    import optuna

    from nas.engine.search import ARCHITECTURE, search_run
    from nas.engine.train import train_run
    from runners.tune_search import apply_overrides

    h = cfg["hpo"]
    out = Path(out)
    objectives, directions = list(h["objectives"]), list(h["directions"])
    if len(objectives) != len(directions) or not objectives:
        raise UserError("hpo.objectives and hpo.directions must be non-empty and of the same length")
    if not h["params"]:
        raise UserError("hpo.params is empty: declare the hyperparameters to tune")
    multi = len(objectives) > 1
    store = make_storage(storage or h["storage"])
    name = study_name or h["study_name"]
    study = optuna.create_study(study_name=name, storage=store, load_if_exists=True, directions=directions,
                                sampler=optuna.samplers.TPESampler(seed=cfg["seed"]),
                                pruner=None if multi else _pruner(h["pruner"]))
    study.set_metric_names(objectives)

    def objective(trial):
        overrides = {k: suggest(trial, k, spec) for k, spec in h["params"].items()}
        tcfg = apply_overrides(copy.deepcopy(cfg), overrides)
        run_dir = out / f"trial_{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir.resolve()))

        def on_eval(step, m):
            value = m["delta_m"] if objectives[0] == "delta_m" else m["primary"].get(objectives[0][4:])
            if value is None:
                return
            trial.report(float(value), step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")

        prunable = not multi and h["pruner"] != "none" and (objectives[0] != "delta_m" or cfg["baselines"])
        summary = search_run(tcfg, run_dir, progress=False, on_eval=on_eval if prunable else None)
        arch_path = run_dir / ARCHITECTURE
        if h["retrain"]:
            summary = train_run(tcfg, run_dir / "retrain", architecture=str(arch_path), progress=False)
        trial.set_user_attr("architecture", str(arch_path.resolve()))
        values = [_value(o, summary, tcfg, arch_path) for o in objectives]
        return values if multi else values[0]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=n_trials or h["n_trials"], show_progress_bar=True,
                   catch=())
    return export_study(study, out, objectives)


def export_study(study, out: Path, objectives: list[str]) -> dict:
    """trials.csv always; best.yaml (single objective) or pareto.csv + pareto/trial_N.yaml (multi)."""
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
        shutil.copy2(best.user_attrs["architecture"], out / "best.yaml")
        result.update(best_value=best.value, best_params=best.params, best=str(out / "best.yaml"))
        return result
    import pandas as pd

    (out / "pareto").mkdir(exist_ok=True)
    rows = []
    for t in study.best_trials:
        dst = out / "pareto" / f"trial_{t.number:04d}.yaml"
        shutil.copy2(t.user_attrs["architecture"], dst)
        rows.append({"trial": t.number, **dict(zip(objectives, t.values)), **t.params, "architecture": str(dst)})
    atomic_write_text(out / "pareto.csv", pd.DataFrame(rows).to_csv(index=False))
    result.update(pareto=str(out / "pareto.csv"), pareto_size=len(rows))
    return result
