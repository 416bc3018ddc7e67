"""``trcnas compare``: a multi-seed comparison of variants under one budget, resumable across sessions.

A comparison file (YAML) names the variants; every variant is trained (or searched, then retrained) once per
seed, each run in its own folder ``OUT/<variant>/seed<k>/`` (``search/`` and ``retrain/`` for a searched
variant). Finished runs are kept and skipped; an interrupted run resumes from its last checkpoint. So a
comparison that outlasts a session is continued by running the same command again. The seed changes the
initialisation, the batch order and the Gumbel noise; the labels (``data.seed``) stay the same.

Example (``results/``-relative paths are fine)::

    name: mteb-placement
    config: synthetic-mteb          # default config of every variant
    set: [train.steps=1000]         # overrides for every variant (the shared budget)
    seeds: [0, 1, 2]
    variants:
      - {name: plain, label: Plain multi-scale decoder, architecture: "fixed:off"}
      - {name: default, label: "mTEB, paper placement", architecture: default}
      - {name: searched, label: "mTEB, searched placement", architecture: search}
      - {name: mt, label: Multi-task baseline, config: synthetic-mt, set: [model.dropout=0.05]}

``baseline: <variant>`` (optional): Δm of every run is taken against that variant's per-task mean over the
seeds (e.g. single-task networks trained under the same budget), not the config's fixed ``baselines``.

``architecture``: omitted (the config's model), ``default``, ``fixed:<candidate>``, a file, ``search``
(search with the config's space, then retrain the exported architecture; with ``retrain: false`` the search
alone, whose argmax subgraph's metrics are the run's), ``planted`` (the relations dataset's planted matrix,
``data.relations``, as an ATRC architecture), or the choices themselves, e.g.
``{composite: {embedding_depth: 3, embedding_width: 128}}``.

``expand: planted_pairs`` (with a variant whose architecture is ``planted``): adds one variant per (target,
source) pair and candidate other than the planted one, named ``<target>__<source>__<candidate>``: the planted
matrix with that one pair changed. Their runs prove the planting (``analysis.planted``: ``proof.md``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trcnas.analysis.compare import final_dir, write_comparison
from trcnas.nas.config import load_config, validate
from trcnas.nas.data import build_dataset
from trcnas.nas.data.relations import check_relations
from trcnas.nas.engine.loop import write_json
from trcnas.nas.engine.search import ARCHITECTURE, full_length, search_run
from trcnas.nas.engine.train import network_cost, train_run
from trcnas.nas.errors import UserError
from trcnas.nas.families import build_model, resolve_space
from trcnas.nas.schema import ConfigBase, as_dict, message
from trcnas.nas.tasks import TASKS, build_tasks
from trcnas.runners.tune_search import absolute_paths, init_ray
from trcnas.spaces.architecture import ARCH_FORMAT, from_dict
from trcnas.spaces.io import atomic_write_text

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).parent / "comparisons"
EXPANSIONS = ("planted_pairs",)


class Variant(BaseModel):
    """One variant of a comparison (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    label: str | None = None
    config: str | None = None
    set: list[str] = []
    architecture: str | dict | None = None
    retrain: Any = None  # true or false, with architecture: search

    @field_validator("name")
    @classmethod
    def _identifier(cls, v):
        if not v.isidentifier():
            raise ValueError(f"must be letters, digits and _ (a folder name), got {v!r}")
        return v

    @model_validator(mode="after")
    def _retrain(self):
        if self.retrain is not None and (not isinstance(self.retrain, bool) or self.architecture != "search"):
            raise ValueError(f"({self.name}): `retrain` (true or false) goes with `architecture: search`")
        return self


class Comparison(BaseModel):
    """A comparison file: variants, the seeds each runs, a shared config and overrides."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    config: str | None = None
    set: list[str] = []
    seeds: Any = [0]
    variants: list[Variant] = Field(min_length=1)
    baseline: str | None = None
    expand: Literal[EXPANSIONS] | None = None

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v):
        if not isinstance(v, list) or not v or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                       for s in v):
            raise ValueError(f"must be a list of non-negative integers, got {v!r}")
        return v

    @model_validator(mode="after")
    def _variants(self):
        names = [v.name for v in self.variants]
        for i, v in enumerate(self.variants):
            if not (v.config or self.config):
                raise ValueError(f"variants.{i} ({v.name}) has no config (set `config:` here or at the top)")
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        if self.baseline is not None and self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not one of the variants {names}")
        if self.expand is not None:
            planted = [v.name for v in self.variants if v.architecture == "planted"]
            if len(planted) != 1:
                raise ValueError(f"expand: {self.expand} needs exactly one variant with `architecture: planted`, "
                                 f"got {len(planted)}")
        return self


def _spec_error(e: ValidationError, source) -> str:
    """A comparison file's first violation as one line (an unknown key names the keys that are known)."""
    err = e.errors(include_url=False)[0]
    loc = err["loc"]
    if err["type"] == "extra_forbidden":
        model = Variant if loc[:1] == ("variants",) else Comparison
        where = f"variants.{loc[1]}: " if model is Variant else ""
        return f"{source}: {where}unknown key {loc[-1]!r}; use {', '.join(sorted(model.model_fields))}"
    return message(e, str(source))


def load_comparison(path: str | Path | dict) -> dict:
    """A comparison file (a path, or the name of a shipped one), or the comparison itself as a mapping (e.g.
    ``trcnas table``'s), checked."""
    if isinstance(path, dict):
        return check_comparison(path, "comparison")
    p = Path(path)
    if not p.is_file() and (SHIPPED / f"{path}.yaml").is_file():
        p = SHIPPED / f"{path}.yaml"
    if not p.is_file():
        shipped = ", ".join(sorted(f.stem for f in SHIPPED.glob("*.yaml")))
        raise UserError(f"comparison {path} not found; give a YAML file with `variants:` or a shipped one "
                        f"({shipped})")
    try:
        spec = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    return check_comparison(spec, p)


def check_comparison(spec, p) -> dict:
    """The comparison ``spec`` (a mapping read from ``p``) checked (``Comparison``); one ``UserError`` line naming
    the key otherwise."""
    if not isinstance(spec, dict) or not isinstance(spec.get("variants"), list) or not spec["variants"]:
        raise UserError(f"{p}: needs a non-empty list `variants:`")
    try:
        c = Comparison.model_validate(spec)
    except ValidationError as e:
        raise UserError(_spec_error(e, p)) from None
    return {"name": c.name or getattr(p, "stem", "comparison"), "config": c.config, "set": list(c.set),
            "seeds": c.seeds, "variants": [v.model_dump(exclude_unset=True) for v in c.variants],
            "baseline": c.baseline, "expand": c.expand}


def planted_choices(cfg: ConfigBase, source) -> dict:
    """The relations dataset's planted matrix (``data.relations``) as ATRC choices."""
    if cfg.data.dataset != "relations":
        raise UserError(f"{source}: `architecture: planted` needs data.dataset: relations (its planted matrix), "
                        f"got {cfg.data.dataset!r}")
    if cfg.model.type != "atrc":
        raise UserError(f"{source}: `architecture: planted` is an ATRC architecture; model.type is "
                        f"{cfg.model.type!r}")
    return {"atrc": check_relations(cfg.data.relations, list(cfg.data.tasks))}


def expand_planted_pairs(spec: dict, config_of, source) -> dict:
    """``spec`` with every ``planted`` variant's architecture resolved to its own config's matrix
    (``config_of(variant)``) and, with ``expand: planted_pairs``, one variant per (pair, other candidate of the
    pair's decision)."""
    variants = []
    for v in spec["variants"]:
        if v.get("architecture") != "planted":
            variants.append(v)
            continue
        cfg = config_of(v)
        choices = planted_choices(cfg, f"{source}: variants {v['name']}")
        variants.append({**v, "architecture": choices, "planted": True})
        if spec.get("expand") != "planted_pairs":
            continue
        space = resolve_space(cfg, f"{source}: variants {v['name']}")
        for d in space.decisions(list(cfg.data.tasks)):
            _, t, s = d.path
            planted = choices["atrc"][t][s]
            for c in d.candidates:
                if c == planted:
                    continue
                alt = {k: dict(row) for k, row in choices["atrc"].items()}
                alt[t][s] = c
                variants.append({"name": f"{t}__{s}__{c}", "label": f"{t} <- {s}: {c} (planted: {planted})",
                                 "set": list(v.get("set") or []), "architecture": {"atrc": alt},
                                 **({"config": v["config"]} if v.get("config") else {}),
                                 "pair": [t, s], "type": c, "planted_type": planted, "planted_variant": v["name"]})
    return {**spec, "variants": variants}


def variant_config(spec: dict, variant: dict, seed: int, extra: list[str] = ()) -> ConfigBase:
    overrides = [*spec["set"], *(variant.get("set") or []), *extra, f"seed={seed}"]
    return load_config(variant.get("config") or spec["config"], overrides)


def _run_variant(cfg: ConfigBase, variant: dict, run_dir: Path, progress: bool) -> Path:
    """Trains (searches first if asked) into ``run_dir``; returns the folder holding the final metrics."""
    arch = variant.get("architecture")
    final = _final_of(variant, run_dir)
    if isinstance(arch, dict):
        arch = str(run_dir / "architecture.yaml")
    if (final / "metrics.json").is_file():
        return final
    if arch == "search":
        if not (run_dir / "search" / ARCHITECTURE).is_file():
            # a search without retrain is the run: its val metrics are compared, so it runs all its steps
            scfg = full_length(cfg) if variant.get("retrain") is False else cfg
            search_run(scfg, run_dir / "search", progress=progress, resume=True)
        if variant.get("retrain") is False:  # the search is the run (e.g. a reliability study)
            return final
        arch = str(run_dir / "search" / ARCHITECTURE)
    train_run(cfg, final, architecture=arch, progress=progress, resume=True)
    return final


def _inline_architecture(variant: dict, cfg: ConfigBase, source):
    """``architecture: {group: {decision: value}}`` in the comparison file, as a validated architecture of the
    config's search space."""
    space = resolve_space(cfg, f"{source}: variants {variant['name']}")
    data = {"format": ARCH_FORMAT, "space": space.name, "tasks": list(cfg.data.tasks),
            "choices": variant["architecture"]}
    if space.embedded() is not None:
        data["space_spec"] = space.embedded()
    arch = from_dict(data, source=f"{source}: variants {variant['name']}.architecture")
    arch.validate(tasks=cfg.data.tasks, source=f"{source}: variants {variant['name']}.architecture",
                  known_tasks=TASKS.names())
    return arch


def compare_trial(config: dict) -> None:
    """Ray Tune trainable: one (variant, seed) of a comparison, written into the comparison's own folder."""
    from ray import tune

    job = config["job"]
    torch.set_num_threads(max(1, int(job["cpus"])))
    cfg = validate(job["cfg"], f"comparison job {job['name']}")  # it crossed to this process as plain data
    final = _run_variant(cfg, job["variant"], Path(job["run_dir"]), progress=False)
    m = json.loads((final / "metrics.json").read_text())
    tune.report({"delta_m": m.get("delta_m"), "steps": m.get("steps"), "run_dir": str(final)})


def _run_on_ray(jobs: list[tuple[dict, dict, Path]], out: Path, address: str | None) -> list[str]:
    """Every unfinished (variant, seed) as a Ray Tune trial (``ray.resources`` each, ``ray.max_concurrent_trials``
    at once); returns the errors of the trials that failed."""
    from ray import tune

    if not jobs:
        return []
    init_ray(address)
    r = jobs[0][0].ray
    cpus = float(r.resources.get("cpu") or 1)
    trainable = tune.with_resources(compare_trial, {"cpu": cpus, "gpu": float(r.resources.get("gpu", 0))})
    grid = [{"cfg": as_dict(absolute_paths(cfg)), "variant": v, "run_dir": str(run_dir.resolve()), "cpus": cpus,
             "name": f"{v['name']}-seed{cfg.seed}"} for cfg, v, run_dir in jobs]
    tuner = tune.Tuner(
        trainable,
        param_space={"job": tune.grid_search(grid)},
        tune_config=tune.TuneConfig(max_concurrent_trials=r.max_concurrent_trials,
                                    trial_name_creator=lambda t: t.config["job"]["name"],
                                    trial_dirname_creator=lambda t: t.config["job"]["name"]),
        run_config=tune.RunConfig(name=f"ray-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=str(out.resolve()),
                                  verbose=0, failure_config=tune.FailureConfig(max_failures=r.max_failures)),
    )
    results = tuner.fit()
    return [f"{res.config['job']['name']}: {str(res.error).strip().splitlines()[-1]}" for res in results if res.error]


def run_compare(spec_path: str | Path | dict, out: str | Path, extra: list[str] = (), progress: bool = True,
                only: list[str] | None = None, ray: bool = False, address: str | None = None,
                seeds: list[int] | None = None) -> dict:
    """Runs every (variant, seed) not finished yet — in this process, or with ``ray`` as Ray Tune trials (on a
    local Ray instance, or the cluster at ``address``) — then writes the tables (``analysis.compare``). The
    result's ``errors`` lists the runs that failed (Ray); the others are kept."""
    spec = load_comparison(spec_path)
    source = spec["name"] if isinstance(spec_path, dict) else spec_path
    if any(v.get("architecture") == "planted" for v in spec["variants"]):
        spec = expand_planted_pairs(spec, lambda v: variant_config(spec, v, spec["seeds"][0], extra), source)
    out = Path(out)
    variants = [v for v in spec["variants"] if not only or v["name"] in only]
    if only and len(variants) != len(set(only)):
        raise UserError(f"--only {only}: unknown variant(s); the file has {[v['name'] for v in spec['variants']]}")
    if seeds and set(seeds) - set(spec["seeds"]):
        raise UserError(f"--seeds {seeds}: the file's seeds are {spec['seeds']}")
    run_seeds = [s for s in spec["seeds"] if not seeds or s in seeds]
    # every config (and inline architecture) is loaded and validated before the first run starts
    cfgs = {(v["name"], s): variant_config(spec, v, s, extra) for v in variants for s in run_seeds}
    inline = {v["name"]: _inline_architecture(v, cfgs[(v["name"], run_seeds[0])], source)
              for v in variants if isinstance(v.get("architecture"), dict)}
    out.mkdir(parents=True, exist_ok=True)

    atomic_write_text(out / "comparison.yaml", yaml.safe_dump({**spec, "extra": list(extra)}, sort_keys=False))
    total, done, jobs = len(cfgs), 0, []
    for v in variants:
        for s in run_seeds:
            run_dir = out / v["name"] / f"seed{s}"
            if v["name"] in inline and not (run_dir / "architecture.yaml").is_file():
                inline[v["name"]].save(run_dir / "architecture.yaml")
            if ray:
                jobs.append((cfgs[(v["name"], s)], v, run_dir))
                continue
            log.info("[%d/%d] %s seed %d -> %s", done + 1, total, v["name"], s, run_dir)
            _run_variant(cfgs[(v["name"], s)], v, run_dir, progress)
            done += 1
    errors = _run_on_ray([j for j in jobs if not _finished(j[1], j[2])], out, address) if ray else []
    _record_costs(out, spec, cfgs)

    # the score's classes as the configs give them today (they change as the proof gains seeds, and change no run)
    classes = {v["name"]: (cfgs.get((v["name"], run_seeds[0])) or variant_config(spec, v, run_seeds[0], extra)
                           ).data.also_right for v in spec["variants"]}
    return {**write_comparison(out, spec, {t: TASKS.get(t).metric for t in TASKS.names()}, classes),
            "errors": errors}


def dataset_info(cfg: ConfigBase):
    """Label-space sizes for counting a network's cost (the runs have built and cached the dataset already)."""
    _, info = build_dataset(cfg.data, "val", train=False, progress=False)
    return info


def architecture_cost(cfg: ConfigBase, info, arch) -> dict:
    """``params_M`` and ``madds_G`` of the config's network with ``arch`` at the training size (empty when the
    network cannot be counted)."""
    return network_cost(build_model(cfg, build_tasks(cfg.data.tasks, info), architecture=arch), cfg)


def _record_costs(out: Path, spec: dict, cfgs: dict) -> None:
    """Runs finished before runs recorded their network's cost get it counted now, from their own config and
    architecture, and added to their metrics.json (atomically; nothing else in the file changes)."""
    infos: dict[str, object] = {}  # per data config (variants may use other configs)
    for (name, seed), cfg in cfgs.items():
        variant = next(v for v in spec["variants"] if v["name"] == name)
        f = _final_of(variant, out / name / f"seed{seed}") / "metrics.json"
        if not f.is_file():
            continue
        m = json.loads(f.read_text())
        if "params_M" in m:
            continue
        key = cfg.data.model_dump_json()
        if key not in infos:
            infos[key] = dataset_info(cfg)
        arch = from_dict(m["architecture"]) if m.get("architecture") else None
        cost = architecture_cost(cfg, infos[key], arch)
        if cost:
            write_json(f, {**m, **cost})


def _final_of(variant: dict, run_dir: Path) -> Path:
    return final_dir(variant, run_dir)


def _finished(variant: dict, run_dir: Path) -> bool:
    return (_final_of(variant, run_dir) / "metrics.json").is_file()
