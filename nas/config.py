"""Run configuration: defaults, YAML loading (safe_load), ``base:`` inheritance, ``--set`` overrides and
validation. Every user mistake is one ``UserError`` line naming the key or file."""

from __future__ import annotations

import copy
import re
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml

from trcnas.nas import schema
from trcnas.nas.data.relations import check_also_right, check_relations
from trcnas.nas.errors import UserError
from trcnas.nas.families import family, is_family, model_types, resolve_space
from trcnas.nas.plugins import absolute_plugins, load_plugins
from trcnas.nas.schema import ConfigBase, as_dict
from trcnas.nas.tasks import TASKS

RETIRED = ("debug",)  # keys of older configs that no longer mean anything (dropped when such a config is read)
# settings added after runs were stored, with what their absence from a stored config meant (the behaviour
# before the key existed), so that the resume check compares like with like
ADDED_LATER = {("model", "composite", "anchor_inset"): 0.0, ("model", "composite", "anchors"): "lattice",
               ("model", "composite", "normals"): "sigmoid", ("model", "composite", "block_slope"): 0.2,
               ("model", "composite", "palette_antialias"): True, ("model", "composite", "top_kernel"): 3,
               ("model", "composite", "align_corners"): False, ("model", "composite", "film_hidden"): None,
               ("model", "composite", "embedding_init"): "kaiming", ("search", "selection_sweeps"): 2,
               ("search", "selection_tune_steps"): 0, ("search", "alpha_data"): "train",
               ("search", "heldout_fraction"): 0.5}


def config_schema():
    """The config model with every section: the core's, the shipped families' (imported above) and those of
    the plugins loaded so far."""
    return schema.schema()


def defaults() -> dict:
    """Every key's default (the schema's, with every registered section)."""
    return schema.defaults()


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
    """A YAML file (by path), else the shipped config of that name. A folder that shares a shipped config's name
    (e.g. a run's ``--out synthetic-composite``) does not hide the config."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise UserError(f"config file {p} {'is a folder' if p.is_dir() else 'not found'}; give a YAML file "
                            "or the name of a shipped config (`trcnas configs`)")
        return p
    f = shipped_dir() / f"{name_or_path}.yaml"
    if not f.is_file():
        raise UserError(f"no config file or shipped config named {name_or_path!r}; `trcnas configs` lists them")
    return f


def _merge(base: dict, over: dict, prefix: str = "", open_keys: set | None = None) -> dict:
    """``over`` merged into ``base``; an open mapping (loss_weights, param spaces, ...) is replaced whole."""
    open_keys = schema.open_mappings() if open_keys is None else open_keys
    out = copy.deepcopy(base)
    for k, v in over.items():
        key = f"{prefix}{k}"
        if key in open_keys:
            out[k] = {} if v is None and isinstance(out.get(k), dict) else copy.deepcopy(v)
        elif isinstance(out.get(k), dict) and isinstance(v, dict):
            out[k] = _merge(out[k], v, f"{key}.", open_keys)
        else:
            out[k] = copy.deepcopy(v)
    return out


def with_defaults(cfg: dict) -> dict:
    """``cfg`` with today's defaults for keys it lacks (a config stored by an older trcnas, e.g. in a Ray
    experiment being resumed; keys that were retired are dropped)."""
    return _merge(defaults(), {k: v for k, v in cfg.items() if k not in RETIRED})


def stored_as_today(cfg: dict) -> dict:
    """A run's stored ``config.yaml`` as this version writes the same settings (for the resume check): retired
    keys dropped; keys added later filled in with what their absence meant (``ADDED_LATER``; a task without a
    loss weight weighed 1.0); ``search.space``
    written out as the family's own space (or set for a plain network, where it meant nothing) is the default,
    null."""
    cfg = copy.deepcopy({k: v for k, v in cfg.items() if k not in RETIRED})
    with_task_weights(cfg, lambda t: 1.0)  # a task without a weight weighed 1.0 before configs listed them all
    for path, before in ADDED_LATER.items():
        node = cfg
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and path[-1] not in node:
            node[path[-1]] = before
    model, search = cfg.get("model"), cfg.get("search")
    if isinstance(model, dict) and isinstance(search, dict) and search.get("space") is not None:
        mtype = model.get("type")
        if not is_family(str(mtype)) or search["space"] == family(mtype).space:
            cfg["search"] = {**search, "space": None}
    return cfg


def _load_chain(name_or_path: str, seen: tuple = ()) -> dict:
    path = find_config(name_or_path)
    if str(path) in seen:
        raise UserError(f"config {path}: circular 'base:' chain")
    data = {k: v for k, v in _read_yaml(path).items() if k not in RETIRED}
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
    return key.strip().split("."), _number(value)


_SCIENTIFIC = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _number(value):
    """``1e30``, which YAML 1.1 (PyYAML) reads as a string for want of a dot, as the float a user means."""
    return float(value) if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()) else value


REPLACE_KEY = "_delete_"  # in a mapping given with --set: replace the config's mapping whole (as mmengine's)
# mappings whose entries are single values (one search-space entry each): `--set` merges the mapping but replaces
# an entry whole, so `{grid: [..]}` over `{type: float, low: .., high: ..}` is the grid, not a mixture of both
WHOLE_ENTRIES = {("hpo", "params"), ("ray", "param_space")}


def merge_override(old, new, path: tuple[str, ...] = ()):
    """A ``--set`` value over the config's at ``path``: a mapping merges into the mapping it overrides, key by key
    and at every depth (``--set 'loss_weights={semseg: 2}'`` keeps the other weights), unless it holds
    ``_delete_: true``, which replaces the old mapping whole, or is empty (``{}`` empties it), or is an entry of a
    search space (``WHOLE_ENTRIES``); any other value replaces the old one."""
    if not isinstance(new, dict):
        return new
    new = dict(new)
    if not new:  # `key={}` empties the mapping (merging nothing would silently keep it)
        return {}
    if new.pop(REPLACE_KEY, False) is True or not isinstance(old, dict) or path[:-1] in WHOLE_ENTRIES:
        return {k: merge_override(None, v, (*path, k)) for k, v in new.items()}
    out = copy.deepcopy(old)
    for k, v in new.items():
        out[k] = merge_override(out.get(k), v, (*path, k))
    return out


def load_config(name_or_path: str | None = None, overrides: list[str] | None = None,
                plugins: list[str] | None = None) -> ConfigBase:
    """Defaults <- config file chain <- ``--set`` overrides <- ``plugins`` (``--plugin``) added. The merged config
    is validated against the schema after the file chain and after every override (so an error names the step
    that broke it), then the checks that need the registries run with the plugins loaded (file paths made
    absolute, so every process finds them). The result is the typed config (``cfg.train.lr``)."""
    user = _load_chain(name_or_path) if name_or_path else {}
    source = str(name_or_path) if name_or_path else "defaults"
    plugins_of = user.get("plugins") if isinstance(user.get("plugins"), list) else []
    load_plugins([*plugins_of, *(plugins or [])], source)  # their config sections first
    cfg = _validated(_merge(defaults(), user), source)
    for item in overrides or []:
        path, value = parse_override(item)
        node = cfg
        for p in path[:-1]:
            if not isinstance(node.get(p), dict):
                raise UserError(f"--set {item}: unknown config key {'.'.join(path)!r}")
            node = node[p]
        node[path[-1]] = merge_override(node.get(path[-1]), value, tuple(path))
        cfg = _validated(cfg, f"--set {item}")
    cfg["plugins"] = list(dict.fromkeys(absolute_plugins([*cfg["plugins"], *(plugins or [])])))
    return _typed(cfg, source)


def _own_weight(task: str) -> float | None:
    """A registered task's default loss weight (1.0 where it declares none); None for an unknown task, which
    ``_check_semantics`` refuses."""
    if task not in TASKS:
        return None
    w = TASKS.get(task).loss_weight
    return 1.0 if w is None else w


def with_task_weights(cfg: dict, weight_of=None) -> dict:
    """``cfg`` with a ``loss_weights`` entry for each of its tasks: one the config does not give is the task's own
    default (``Task.loss_weight``, else 1.0; ``weight_of(task)`` instead when given), so that config.yaml states
    every weight the run used."""
    weight_of = weight_of or _own_weight
    tasks = (cfg.get("data") or {}).get("tasks") or []
    lw = cfg.get("loss_weights")
    if isinstance(lw, dict) and isinstance(tasks, list):
        filled = {t: weight_of(t) for t in tasks if t not in lw}
        cfg["loss_weights"] = {**lw, **{t: float(w) for t, w in filled.items() if w is not None}}
    return cfg


def _validated(cfg: dict, source: str) -> dict:
    try:
        return schema.check(cfg, source)
    except ValueError as e:
        raise UserError(str(e)) from None


def _typed(cfg: dict, source: str) -> ConfigBase:
    """The checks that need the registries, then the typed config with every task's loss weight stated."""
    try:
        typed = schema.parse(with_task_weights(cfg), source)
    except ValueError as e:
        raise UserError(str(e)) from None
    _check_semantics(typed, source)
    return typed


def apply_overrides(cfg: dict | ConfigBase, overrides: dict, where: str = "ray.param_space") -> dict:
    """``{"search.alpha_lr": 0.01}`` -> nested assignment on a plain copy of ``cfg``; the key must exist in the
    config (else one error naming ``where``, the section the key came from). Values are not validated here
    (``validate`` makes the result a typed config)."""
    cfg = as_dict(cfg)
    for dotted, value in overrides.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise UserError(f"{where}: unknown config key {dotted!r}")
            node = node[p]
        if leaf not in node:
            raise UserError(f"{where}: unknown config key {dotted!r}")
        node[leaf] = value
    return cfg


def validate(cfg: dict | ConfigBase, source: str) -> ConfigBase:
    """Every check ``load_config`` makes, on a config built another way (a Ray trial's ``param_space`` values,
    an Optuna trial's suggestions, a config that crossed a process boundary as plain data); returns the typed
    config."""
    cfg = as_dict(cfg)
    load_plugins(cfg["plugins"] if isinstance(cfg.get("plugins"), list) else [], source)
    return _typed(cfg, source)


def has_key(dotted: str) -> bool:
    """Whether ``a.b.c`` names a config key (a leaf, or a key inside an open mapping such as loss_weights)."""
    node, open_keys = defaults(), schema.open_mappings()
    parts = dotted.split(".")
    for i, p in enumerate(parts):
        if not isinstance(node, dict) or p not in node:
            return ".".join(parts[:i]) in open_keys and i == len(parts) - 1
        node = node[p]
    return not isinstance(node, dict) or dotted in open_keys


def _check_semantics(cfg: ConfigBase, source: str) -> None:
    """The checks the schema cannot make: names looked up in registries that plugins extend (tasks, model
    types, the search space's family) and the device."""
    load_plugins(cfg.plugins, source)  # before anything is looked up in a registry a plugin may extend
    for t in cfg.data.tasks:
        if t not in TASKS:
            raise UserError(f"{source}: data.tasks: unknown task {t!r}; known: {', '.join(TASKS.names())}")
    for section in ("loss_weights", "baselines"):
        unknown = [t for t in getattr(cfg, section) if t not in TASKS]
        if unknown:
            raise UserError(f"{source}: {section}.{unknown[0]}: unknown task; known: {', '.join(TASKS.names())}")
    if cfg.data.dataset == "relations":
        try:
            check_relations(cfg.data.relations, cfg.data.tasks)
            check_also_right(cfg.data.also_right)
        except UserError as e:
            raise UserError(f"{source}: {e}") from None
    else:
        for key in ("relations", "also_right"):
            if getattr(cfg.data, key) is not None:
                raise UserError(f"{source}: data.{key} belongs to the relations dataset, but data.dataset is "
                                f"{cfg.data.dataset!r}; remove it or use data.dataset: relations")
    if cfg.model.type not in model_types():
        raise UserError(f"{source}: model.type {cfg.model.type!r} unknown; use one of {', '.join(model_types())}")
    space = cfg.search.space
    # it must be a space of model.type's family; a space file that is gone is only needed (and reported) by a
    # search: a retrain reads the space its architecture file embeds
    if space is not None and (Path(space).suffix not in (".yaml", ".yml") or Path(space).is_file()):
        resolve_space(cfg, source)
    try:
        torch.device(cfg.device)
    except (RuntimeError, TypeError):
        raise UserError(f"{source}: device {cfg.device!r} is not a device; use cpu, cuda or cuda:N") from None


def dump(cfg: dict | ConfigBase) -> str:
    return yaml.safe_dump(as_dict(cfg), sort_keys=False)
