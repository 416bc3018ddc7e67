"""Run configuration: defaults, YAML loading (safe_load), ``base:`` inheritance, ``--set`` overrides and
validation. Every user mistake is one ``UserError`` line naming the key or file."""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from trcnas.nas.errors import UserError

DEFAULTS: dict[str, Any] = {
    "name": "run",
    "seed": 0,
    "device": "cpu",
    # modules or .py files that register context types, tasks, backbones, ... (trcnas.nas.plugins); --plugin adds
    "plugins": [],
    "model": {
        # multitask | single_task (plain networks) or a space family: atrc | composite | mteb (what `search`
        # searches; `train` builds the family's fixed network from model.architecture)
        "type": "multitask",
        "backbone": {"name": "tiny", "weights": None, "options": {}},
        "channels": None,  # task feature width C; default: backbone channels / 4
        "attn_channels": None,  # CP block attention width; default C / 2
        "architecture": None,  # architecture file for a fixed network (ATRC, CompositeTasking, mTEB)
        "dropout": 0.0,
        "composite": {  # CompositeTasking (nas/composite)
            "code_length": 20,  # ones per task in its task code
            "conditioning": "pixel",  # pixel: CompositeTasking; image: Task Switching (one task per image)
            # training palettes: rule single | mosaic | semantic (classes: {class: task}, default) | random |
            # file (path: PNG of task indices)
            "palette": {"rule": "mosaic"},
            "anchor_eps": 1.0e-8,  # seg logits 1 / (distance of the sigmoid output to a class anchor + eps)
            "focal_gamma": 2.0,
        },
        "mteb": {  # xTAM / mTEB multi-scale decoder (nas/models/mteb.py)
            "max_query_tokens": 256,  # derives each scale's attention downscale s from its feature size
            "key_channels": None,  # d of the correlation attention (default C / 2)
            "dir_channels": None,  # channels of each half of a directional feature (default C / 2)
            "finest_scale": 1,  # the decoder goes down to input / 2^finest_scale (paper: 1, before the last layer)
        },
    },
    "data": {
        "dataset": "synthetic",
        "root": None,
        "tasks": ["semseg", "depth", "normals", "edge"],
        "image_size": [128, 128],
        "seed": 0,
        "train_samples": 800,
        "val_samples": 200,
        "cache_dir": "results/cache",
        "limit": None,
        "crop": None,
        "augment": {"scale": None, "flip": True, "photometric": True},
        "num_workers": 0,
    },
    "train": {
        "steps": 1500,
        "batch_size": 8,
        "eval_batch_size": 16,
        "optimizer": "sgd",  # sgd | adam
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 0.0005,
        "poly_power": 0.9,
        "schedule": "poly",  # poly (ATRC, xTAM) | plateau (CompositeTasking: lr x factor after patience epochs
        # without improvement of the epoch's mean training loss)
        "plateau": {"factor": 0.3, "patience": 12},
        # lr multiplier of a *pretrained* encoder (model.backbone.weights given; CompositeTasking: 0.01); an
        # encoder trained from scratch always gets the full lr
        "pretrained_encoder_lr_mult": 1.0,
        # sparse labels for baselines (CompositeTasking Table 1): each image's losses only on the pixels a
        # palette rule gives each task, e.g. {rule: mosaic}; null = every label
        "label_palette": None,
        "grad_clip": 10.0,
        "log_every": 10,
        "checkpoint_every": 500,
        "bf16": False,
    },
    "loss_weights": {"semseg": 1.0, "parts": 2.0, "saliency": 5.0, "normals": 10.0, "depth": 1.0, "edge": 50.0},
    "baselines": {},  # single-task metrics per task, for Delta_m
    "search": {
        "space": None,  # another space of model.type's family (a YAML path); default: the family's shipped space
        "steps": 1500,
        "mode": "soft",
        "alpha_lr": 0.0005,
        "alpha_weight_decay": 0.0,
        "tau": {"start": 1.0, "end": 0.05, "shape": "linear"},
        "entropy": {"start": -0.02, "end": 0.06, "shape": "linear"},
        "freeze_threshold": 0.3,
        "alpha_warmup": 0,  # first steps train only the weights (no alpha update, no freezing)
    },
    "ray": {  # searches as Ray Tune trials (runners/tune_search.py)
        "num_samples": 1,  # seeds per point of the param space
        "max_concurrent_trials": None,
        "resources": {"gpu": 0},  # per trial ({"cpu": N, "gpu": G}, fractional GPUs allowed); no cpu: the
        # cluster's CPUs shared among the trials that run at once
        "max_failures": 1,  # retries of a crashed trial, from its last checkpoint
        # data-parallel workers per trial (Ray Train TorchTrainer + DDP: gloo on CPUs, NCCL on GPUs); each
        # worker gets ray.resources and train.batch_size / workers images of every step
        "workers": 1,
        "storage_path": "results/ray",  # must be shared storage for multi-node clusters
        "metric": "delta_m",
        "mode": "max",
        # {"search.alpha_lr": {"grid": [...]}} or {"choice": [...]}, {"uniform": [lo, hi]}, {"loguniform": [lo, hi]}
        "param_space": {},
    },
    "hpo": {  # Optuna studies over hyperparameters (runners/hpo.py)
        "study_name": "trcnas",
        "storage": "sqlite:///results/optuna.db",  # one process; use postgresql://... or journal:FILE for many
        "n_trials": 20,
        "objectives": ["delta_m"],  # any of delta_m, val/<task>, params_M, madds_G, agreement
        "directions": ["maximize"],
        "pruner": "median",  # median | hyperband | none (multi-objective studies cannot prune)
        "retrain": False,  # evaluate each trial's architecture after retraining instead of the search's argmax
        "seeds": 1,  # searches per trial (seeds seed, seed+1, ...): objectives are their mean; `agreement` needs 2+
        # {"search.alpha_lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": true}, ...}
        "params": {},
    },
    "report": {"importance_repeats": 2},  # permutations per block that `trcnas run` computes after retraining
}

MIN_SIZE = 32  # smallest input side: the coarsest backbone level is 1/32 of the input

# keys whose default is None, with the type a value must have
NULLABLE = {
    "model.backbone.weights": str, "model.channels": int, "model.attn_channels": int, "model.architecture": str,
    "model.mteb.key_channels": int, "model.mteb.dir_channels": int,
    "data.root": str, "data.limit": int, "data.crop": list, "data.augment.scale": list,
    "ray.max_concurrent_trials": int, "train.label_palette": dict, "search.space": str,
}
# mappings whose keys are free (task names) and values numbers
OPEN = {"loss_weights": (int, float), "baselines": (int, float), "model.backbone.options": None,
        "model.composite.palette": None,
        "ray.resources": (int, float), "ray.param_space": None, "hpo.params": None}


def shipped_dir():
    return resources.files("trcnas.nas") / "configs"


def list_configs() -> dict[str, str]:
    """name -> first comment line of each shipped config."""
    out = {}
    for f in sorted(shipped_dir().iterdir(), key=lambda p: p.name):
        if f.name.endswith(".yaml"):
            first = f.read_text().splitlines()[0] if f.read_text() else ""
            out[f.name[:-5]] = first.lstrip("# ").strip()
    return out


def _read_yaml(path) -> dict:
    try:
        text = Path(path).read_text() if not hasattr(path, "read_text") else path.read_text()
    except FileNotFoundError:
        raise UserError(f"config file {path} not found") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"malformed YAML in {path}{where}: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config {path} must be a mapping of keys, got {type(data).__name__}")
    return data


def find_config(name_or_path: str):
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise UserError(f"config file {p} not found")
        return p
    f = shipped_dir() / f"{name_or_path}.yaml"
    if not f.is_file():
        raise UserError(f"no config file or shipped config named {name_or_path!r}; `trcnas configs` lists them")
    return f


def _merge(base: dict, over: dict, prefix: str = "") -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        key = f"{prefix}{k}"
        if key in OPEN or key.rstrip(".") in OPEN:
            out[k] = v if v is not None else {}
        elif isinstance(out.get(k), dict) and isinstance(v, dict):
            out[k] = _merge(out[k], v, f"{key}.")
        else:
            out[k] = copy.deepcopy(v)
    return out


def with_defaults(cfg: dict) -> dict:
    """``cfg`` with today's defaults for keys it lacks (a config stored by an older trcnas, e.g. in a Ray
    experiment being resumed)."""
    return _merge(DEFAULTS, cfg)


def _load_chain(name_or_path: str, seen: tuple = ()) -> dict:
    path = find_config(name_or_path)
    if str(path) in seen:
        raise UserError(f"config {path}: circular 'base:' chain")
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    parent = _load_chain(base, (*seen, str(path)))
    return _merge(parent, data)


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise UserError(f"--set {item!r}: expected key.path=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _check(cfg: Any, ref: Any, prefix: str, source: str) -> None:
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if k not in ref:
            raise UserError(f"{source}: unknown config key {key!r}")
        d = ref[k]
        if key in OPEN:
            if not isinstance(v, dict):
                raise UserError(f"{source}: {key} must be a mapping")
            types = OPEN[key]
            for sk, sv in v.items():
                if types and not (isinstance(sv, types) and not isinstance(sv, bool)):
                    raise UserError(f"{source}: {key}.{sk} must be a number, got {sv!r}")
            continue
        if isinstance(d, dict):
            if not isinstance(v, dict):
                raise UserError(f"{source}: {key} must be a mapping, got {v!r}")
            _check(v, d, f"{key}.", source)
            continue
        if v is None:
            if d is None or key in NULLABLE:
                continue
            raise UserError(f"{source}: {key} may not be empty")
        want = NULLABLE.get(key, type(d) if d is not None else None)
        if want is None:
            continue
        ok = isinstance(v, want) and not (isinstance(v, bool) and want is not bool)
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            ok = True
        if not ok:
            raise UserError(f"{source}: {key} must be {want.__name__}, got {v!r}")


def load_config(name_or_path: str | None = None, overrides: list[str] | None = None,
                plugins: list[str] | None = None) -> dict:
    """Defaults <- config file chain <- ``--set`` overrides <- ``plugins`` (``--plugin``) added; validated with
    the plugins loaded (file paths made absolute, so every process finds them)."""
    user = _load_chain(name_or_path) if name_or_path else {}
    source = str(name_or_path) if name_or_path else "defaults"
    _check(user, DEFAULTS, "", source)
    cfg = _merge(DEFAULTS, user)
    for item in overrides or []:
        path, value = parse_override(item)
        node = cfg
        for p in path[:-1]:
            if not isinstance(node.get(p), dict):
                raise UserError(f"--set {item}: unknown config key {'.'.join(path)!r}")
            node = node[p]
        node[path[-1]] = value
        _check({path[0]: cfg[path[0]]}, DEFAULTS, "", f"--set {item}")
    from trcnas.nas.plugins import absolute_plugins

    cfg["plugins"] = list(dict.fromkeys(absolute_plugins({"plugins": [*cfg["plugins"], *(plugins or [])]})))
    _check_semantics(cfg, source)
    return cfg


def validate(cfg: dict, source: str) -> None:
    """Every check ``load_config`` makes, on a config built another way (e.g. with an HPO trial's values)."""
    _check(cfg, DEFAULTS, "", source)
    _check_semantics(cfg, source)


def has_key(dotted: str) -> bool:
    """Whether ``a.b.c`` names a config key (a leaf, or a key inside an open mapping such as loss_weights)."""
    node = DEFAULTS
    parts = dotted.split(".")
    for i, p in enumerate(parts):
        if not isinstance(node, dict) or p not in node:
            return ".".join(parts[:i]) in OPEN and i == len(parts) - 1
        node = node[p]
    return not isinstance(node, dict) or dotted in OPEN


def _check_semantics(cfg: dict, source: str) -> None:
    from trcnas.nas.plugins import load_plugins
    from trcnas.nas.tasks import TASKS

    load_plugins(cfg, source)  # before anything is looked up in a registry a plugin may extend

    tasks = cfg["data"]["tasks"]
    if not tasks:
        raise UserError(f"{source}: data.tasks is empty")
    for t in tasks:
        if t not in TASKS:
            raise UserError(f"{source}: data.tasks: unknown task {t!r}; known: {', '.join(TASKS.names())}")
    from trcnas.nas.models import model_types

    if cfg["model"]["type"] not in model_types():
        raise UserError(f"{source}: model.type {cfg['model']['type']!r} unknown; "
                        f"use one of {', '.join(model_types())}")
    space = cfg["search"]["space"]
    # it must be a space of model.type's family; a space file that is gone is only needed (and reported) by a
    # search: a retrain reads the space its architecture file embeds
    if space is not None and (Path(space).suffix not in (".yaml", ".yml") or Path(space).is_file()):
        from trcnas.nas.families import resolve_space

        resolve_space(cfg, source)
    for k in ("steps", "batch_size"):
        if cfg["train"][k] <= 0:
            raise UserError(f"{source}: train.{k} must be positive")
    _check_values(cfg, source)
    for key in ("image_size", "crop"):
        size = cfg["data"][key]
        if size is None:
            continue
        if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in size):
            raise UserError(f"{source}: data.{key} must be [height, width] in pixels, got {size!r}")
        if min(size) < MIN_SIZE:
            raise UserError(f"{source}: data.{key} {size} is too small: every backbone downsamples by 32, so "
                            f"height and width must be at least {MIN_SIZE} (any size from {MIN_SIZE} up works, "
                            "e.g. the paper's 425x560)")


# value rules checked at load time, so a run never starts with a bad value: key -> (test, what it must be)
def _positive(v):
    return v > 0


def _non_negative(v):
    return v >= 0


RULES: dict[str, tuple] = {
    "train.lr": (_positive, "a positive number"),
    "train.eval_batch_size": (_positive, "a positive integer"),
    "train.log_every": (_positive, "a positive integer"),
    "train.checkpoint_every": (_positive, "a positive integer"),
    "train.momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "train.weight_decay": (_non_negative, "non-negative"),
    "train.poly_power": (_non_negative, "non-negative"),
    "train.grad_clip": (_non_negative, "non-negative (0 = no clipping)"),
    "train.plateau.factor": (lambda v: 0 < v < 1, "in (0, 1)"),
    "train.plateau.patience": (_non_negative, "a non-negative integer"),
    "train.pretrained_encoder_lr_mult": (_positive, "a positive number"),
    "model.dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "model.channels": (lambda v: v is None or v > 0, "a positive integer"),
    "model.attn_channels": (lambda v: v is None or v > 0, "a positive integer"),
    "data.train_samples": (_positive, "a positive integer"),
    "data.val_samples": (_positive, "a positive integer"),
    "data.num_workers": (_non_negative, "a non-negative integer"),
    "search.steps": (_positive, "a positive integer"),
    "search.alpha_lr": (_positive, "a positive number"),
    "search.alpha_weight_decay": (_non_negative, "non-negative"),
    "search.alpha_warmup": (_non_negative, "a non-negative integer"),
    "search.freeze_threshold": (lambda v: 0 <= v <= 1, "in [0, 1] (a probability margin)"),
    "search.tau.start": (_positive, "a positive temperature"),
    "search.tau.end": (_positive, "a positive temperature (0 divides by zero)"),
    "ray.num_samples": (_positive, "a positive integer"),
    "ray.workers": (_positive, "a positive integer"),
    "ray.max_failures": (lambda v: v >= -1, "-1 (retry forever) or a non-negative integer"),
    "ray.max_concurrent_trials": (lambda v: v is None or v > 0, "a positive integer"),
    "ray.mode": (lambda v: v in ("max", "min"), "max or min"),
    "hpo.n_trials": (_positive, "a positive integer"),
    "hpo.seeds": (_positive, "a positive integer"),
}


def _get(cfg: dict, key: str):
    node = cfg
    for p in key.split("."):
        node = node[p]
    return node


def _choices() -> dict[str, tuple]:
    """The allowed values of choice keys, from the modules that define them."""
    from trcnas.nas.engine.loop import OPTIMIZERS, SCHEDULES
    from trcnas.nas.search.mixed import MODES

    return {"train.optimizer": OPTIMIZERS, "train.schedule": SCHEDULES, "search.mode": MODES}


def _check_values(cfg: dict, source: str) -> None:
    from trcnas.nas.search.schedules import SHAPES, Schedule
    from trcnas.nas.tasks import TASKS

    for key, (ok, what) in RULES.items():
        v = _get(cfg, key)
        if not ok(v):
            raise UserError(f"{source}: {key} must be {what}, got {v!r}")
    for key, allowed in _choices().items():
        if _get(cfg, key) not in allowed:
            raise UserError(f"{source}: {key} must be one of {', '.join(allowed)}, got {_get(cfg, key)!r}")
    for name in ("tau", "entropy"):
        try:
            Schedule.from_cfg(cfg["search"][name])
        except ValueError as e:
            key = f"search.{name}.shape" if cfg["search"][name].get("shape") not in SHAPES else f"search.{name}"
            raise UserError(f"{source}: {key}: {e}") from None
    tasks = cfg["data"]["tasks"]
    dup = sorted({t for t in tasks if tasks.count(t) > 1})
    if dup:
        raise UserError(f"{source}: data.tasks lists {', '.join(dup)} more than once")
    for section in ("loss_weights", "baselines"):
        unknown = [t for t in cfg[section] if t not in TASKS]
        if unknown:
            raise UserError(f"{source}: {section}.{unknown[0]}: unknown task; known: {', '.join(TASKS.names())}")
    negative = [t for t, w in cfg["loss_weights"].items() if w < 0]
    if negative:
        raise UserError(f"{source}: loss_weights.{negative[0]} must be non-negative, got "
                        f"{cfg['loss_weights'][negative[0]]}")
    if cfg["data"]["dataset"] == "synthetic" and cfg["data"]["train_samples"] < cfg["train"]["batch_size"]:
        raise UserError(f"{source}: data.train_samples {cfg['data']['train_samples']} is fewer than one batch "
                        f"(train.batch_size {cfg['train']['batch_size']}); raise it or lower the batch size")
    scale = cfg["data"]["augment"]["scale"]
    if scale is not None and (len(scale) != 2 or not all(isinstance(v, (int, float)) and v > 0 for v in scale)
                              or scale[0] > scale[1]):
        raise UserError(f"{source}: data.augment.scale must be [low, high] with 0 < low <= high, got {scale!r}")
    import torch

    try:
        torch.device(cfg["device"])
    except (RuntimeError, TypeError):
        raise UserError(f"{source}: device {cfg['device']!r} is not a device; use cpu, cuda or cuda:N") from None
    for k, v in cfg["ray"]["resources"].items():
        if not isinstance(v, (int, float)) or v < 0:
            raise UserError(f"{source}: ray.resources.{k} must be a non-negative number, got {v!r}")


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
