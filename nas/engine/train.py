"""``trcnas train`` / ``retrain``: train a network from scratch and evaluate it on the val split."""

from __future__ import annotations

import warnings
from pathlib import Path

from trcnas.nas.engine.loop import finish_run, fit, prepare
from trcnas.nas.engine.summary import model_summary
from trcnas.nas.errors import UserError
from trcnas.nas.families import build_model, resolve_space
from trcnas.nas.plugins import load_plugins
from trcnas.nas.schema import ConfigBase, updated
from trcnas.nas.tasks import TASKS
from trcnas.spaces import default_architecture, fixed_architecture, load_architecture


def load_run_architecture(cfg: ConfigBase, path: str | None):
    """The architecture file at ``path`` (or model.architecture); ``default``: the defaults declared by the
    config's search space (e.g. CompositeTasking depth 6 / width 128, mTEB at scale 1 with add);
    ``fixed:<value>``: every decision of the space set to that value where it is a candidate (Table 1's
    fixed-context rows, ``fixed:off`` for mTEB). It must be of ``model.type``'s family."""
    path = path or cfg.model.architecture
    if path is None:
        return None
    if path == "default":
        return default_architecture(resolve_space(cfg, f"--architecture {path}"), list(cfg.data.tasks))
    if str(path).startswith("fixed:"):
        space = resolve_space(cfg, f"--architecture {path}")
        context = str(path).split(":", 1)[1]
        allowed = sorted({c for d in space.decisions(list(cfg.data.tasks)) for c in d.candidates})
        if context not in allowed:
            raise UserError(f"--architecture {path}: {context!r} is not a candidate of space {space.name!r}; "
                            f"use fixed:<one of {', '.join(allowed)}>")
        return fixed_architecture(space, list(cfg.data.tasks), context)
    arch = load_architecture(path)
    arch.validate(tasks=cfg.data.tasks, source=str(path), known_tasks=TASKS.names())
    if arch.group != cfg.model.type:
        raise UserError(f"architecture {path} is of space family {arch.group!r} but model.type is "
                        f"{cfg.model.type!r}; add --set model.type={arch.group} (or retrain with the config "
                        "its search saved beside it)")
    return arch


def train_run(cfg: ConfigBase, out_dir: str | Path, architecture: str | None = None, progress: bool = True,
              resume: bool = True, stop_after: int | None = None) -> dict:
    """Trains the config's model (with an architecture: the fixed network of model.type's family) and
    writes config.yaml, checkpoint.pt, train_curve.csv and metrics.json into ``out_dir``."""
    load_plugins(cfg.plugins)
    arch = load_run_architecture(cfg, architecture)
    if arch is not None:
        cfg = updated(cfg, {"model.architecture": str(architecture or cfg.model.architecture)})
    ctx = prepare(cfg, out_dir, progress, resume=resume)
    model = build_model(cfg, ctx.tasks, architecture=arch)
    result = fit(ctx, model, list(model.parameters()), cfg.train.steps, progress=progress, resume=resume,
                 stop_after=stop_after)
    if result.step < cfg.train.steps:
        return {"step": result.step, "finished": False}
    return finish_run(model, ctx, result, cfg.model.type, progress,
                      architecture=None if arch is None else arch.to_dict(), **network_cost(model, cfg))


def network_cost(model, cfg: ConfigBase) -> dict:
    """``params_M`` and ``madds_G`` of a trained network at the training size, for its metrics.json; a network
    the counter cannot trace (a plugin's) records none rather than losing the finished run."""
    try:
        s = model_summary(model, tuple(cfg.data.crop or cfg.data.image_size))
    except Exception as e:  # noqa: BLE001 - counting is a report, the training is done
        warnings.warn(f"could not count the network's params and MAdds ({type(e).__name__}: {e})", stacklevel=2)
        return {}
    return {"params_M": s["params_M"], "madds_G": s["madds_G"]}
