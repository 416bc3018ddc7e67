"""The typed run configuration (pydantic v2): every key, its type, default, choices and range, and the checks that
span several keys. Unknown keys are refused (``extra="forbid"``); values are strict (``1`` for a float is
accepted, ``true`` for an integer is not). ``trcnas.nas.config`` merges YAML files and ``--set`` overrides and
validates the result here after every merge; a violation becomes one ``error:`` line naming the key path.

Sections a family or plugin owns are contributed with :func:`register_section` (CompositeTasking's
``model.composite`` and mTEB's ``model.mteb`` are, by their families); the schema is rebuilt from them.

Checks that need the registries (known tasks, model types, devices, the search space) run after this, with the
config's plugins loaded (``trcnas.nas.config``).
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from trcnas.nas.tasks import published_loss_weights
from trcnas.spaces.errors import first_violation

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("poly", "plateau")  # poly (ATRC, xTAM) | plateau (CompositeTasking)
MODES = ("soft", "soft-all", "hard")  # search modes of the mixed ops
WEIGHTINGS = ("softmax", "sigmoid")  # how a mixed op weighs its candidates (sigmoid: Fair DARTS)
# how a search decides (alpha: the paper's; DARTS-PT; SPOS-style evaluation; isolated probes)
SELECTIONS = ("alpha", "perturbation", "evaluation", "probes")
WARMUPS = ("mixture", "paths")  # what the weight-only warm-up trains
ALPHA_DATA = ("train", "heldout")  # what the alphas are stepped on
SHAPES = ("linear", "cosine", "exp")  # schedule shapes
MIN_SIZE = 32  # smallest input side: the coarsest backbone level is 1/32 of the input
NonNegative = Annotated[float, Field(ge=0)]  # values of mappings such as loss_weights and ray.resources


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=False)


class Backbone(Section):
    name: str = "tiny"
    weights: str | None = None  # a local checkpoint file; nothing is downloaded
    options: dict[str, Any] = {}


class ModelSection(Section):
    # multitask | single_task (plain networks) or a space family: atrc | composite | mteb (what `search`
    # searches; `train` builds the family's fixed network from model.architecture)
    type: str = "multitask"
    backbone: Backbone = Backbone()
    channels: int | None = Field(None, gt=0)  # task feature width C; default: backbone channels / 4
    attn_channels: int | None = Field(None, gt=0)  # CP block attention width; default C / 2
    architecture: str | None = None  # architecture file for a fixed network (ATRC, CompositeTasking, mTEB)
    dropout: float = Field(0.0, ge=0, lt=1)


def _size(v, key: str):
    if v is None:
        return v
    if not isinstance(v, list) or len(v) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise ValueError(f"must be [height, width] in pixels (two integers), got {v!r}")
    if min(v) < MIN_SIZE:
        raise ValueError(f"{v} is too small: every backbone downsamples by 32, so height and width must be at "
                         f"least {MIN_SIZE} (any size from {MIN_SIZE} up works, e.g. the paper's 425x560)")
    return v


class Augment(Section):
    scale: list[float] | None = None  # [low, high] random rescaling
    flip: bool = True
    photometric: bool = True

    @field_validator("scale")
    @classmethod
    def _scale(cls, v):
        if v is not None and (len(v) != 2 or not 0 < v[0] <= v[1]):
            raise ValueError(f"must be [low, high] with 0 < low <= high, got {v!r}")
        return v


class DataSection(Section):
    dataset: str = "synthetic"
    root: str | None = None
    tasks: list[str] = ["semseg", "depth", "normals", "edge"]
    image_size: list[int] = [128, 128]
    seed: int = 0
    train_samples: int = Field(800, gt=0)
    val_samples: int = Field(200, gt=0)
    cache_dir: str = "results/cache"
    limit: int | None = Field(None, gt=0)
    crop: list[int] | None = None
    augment: Augment = Augment()
    num_workers: int = Field(0, ge=0)
    # the relations dataset's planted matrix {target: {source: type}}, every pair of data.tasks present
    # (nas/data/relations.py)
    relations: dict[str, dict[str, str]] | None = None
    # the relations dataset's score: per planted type, the other types a search's choice also counts as right for a
    # pair of that type (those the planting proof could not tell apart from it; analysis.planted.type_classes)
    also_right: dict[str, list[str]] | None = None

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v):
        if not v:
            raise ValueError("is empty")
        dup = sorted({t for t in v if v.count(t) > 1})
        if dup:
            raise ValueError(f"lists {', '.join(dup)} more than once")
        return v

    @field_validator("image_size", "crop", mode="before")
    @classmethod
    def _sizes(cls, v, info):
        return _size(v, info.field_name)


class Plateau(Section):
    factor: float = Field(0.3, gt=0, lt=1)
    patience: int = Field(12, ge=0)


class TrainSection(Section):
    steps: int = Field(1500, gt=0)
    batch_size: int = Field(8, gt=0)
    eval_batch_size: int = Field(16, gt=0)
    # processes that compute the per-image boundary (edge) counts of an evaluation (nas/pool.py); null = torch's
    # thread count (the CPUs a Ray trial was given), 1 = in the run's own process; the metrics are the same
    eval_workers: int | None = Field(None, gt=0)
    optimizer: Literal[OPTIMIZERS] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0005, ge=0)
    poly_power: float = Field(0.9, ge=0)
    # poly (ATRC, xTAM) | plateau (CompositeTasking: lr x factor after patience epochs without improvement of the
    # epoch's mean training loss)
    schedule: Literal[SCHEDULES] = "poly"
    plateau: Plateau = Plateau()
    # lr multiplier of a *pretrained* encoder (model.backbone.weights given; CompositeTasking: 0.01); an encoder
    # trained from scratch always gets the full lr
    pretrained_encoder_lr_mult: float = Field(1.0, gt=0)
    # sparse labels for baselines (CompositeTasking Table 1): each image's losses only on the pixels a palette
    # rule gives each task, e.g. {rule: mosaic}; null = every label
    label_palette: dict[str, Any] | None = None
    grad_clip: float = Field(10.0, ge=0)  # 0 = no clipping
    log_every: int = Field(10, gt=0)
    checkpoint_every: int = Field(500, gt=0)
    bf16: bool = False


class ScheduleSection(Section):
    start: float
    end: float
    shape: Literal[SHAPES] = "linear"

    @model_validator(mode="after")
    def _exp(self):
        if self.shape == "exp" and self.start * self.end <= 0:
            raise ValueError("an exp schedule needs a non-zero start and end of the same sign")
        return self


class TauSection(ScheduleSection):
    start: float = Field(1.0, gt=0)
    end: float = Field(0.05, gt=0)  # a positive temperature (0 divides by zero)


class EntropySection(ScheduleSection):
    start: float = -0.02
    end: float = 0.06


class SearchSection(Section):
    space: str | None = None  # another space of model.type's family (a YAML path); default: the family's space
    steps: int = Field(1500, gt=0)
    mode: Literal[MODES] = "soft"
    alpha_lr: float = Field(0.0005, gt=0)
    alpha_weight_decay: float = Field(0.0, ge=0)
    tau: TauSection = TauSection()
    entropy: EntropySection = EntropySection()
    freeze_threshold: float = Field(0.3, ge=0, le=1)  # a probability margin
    alpha_warmup: int = Field(0, ge=0)  # first steps train only the weights (no alpha update, no freezing)
    # end the search at the step its last decision freezes (frozen is final: the architecture is the full-length
    # search's); its supergraph's val metrics then come from fewer weight steps, so searches whose metrics are
    # compared (several Ray trials, hpo objectives on the search's metrics, a comparison's `retrain: false`
    # variants) always run all search.steps
    stop_when_frozen: bool = False
    # the weights' gradient-norm clip during the search (0 = none); unset: train.grad_clip
    grad_clip: float | None = Field(None, ge=0)
    # how a mixed op weighs its candidates in the search: softmax (the paper's Gumbel-softmax, candidates compete
    # for one unit of weight) or sigmoid (Fair DARTS, Chu et al. 2020: an independent relaxed-Bernoulli gate per
    # candidate, so a parameter-free candidate gains nothing from the others' loss of weight); mode soft only
    weights: Literal[WEIGHTINGS] = "softmax"
    zero_one: float = Field(0.0, ge=0)  # Fair DARTS' zero-one loss weight: pushes each sigmoid gate to 0 or 1
    # how the decisions are decided: alpha (argmax, freezing at the margin; the paper's) or perturbation
    # (DARTS-PT, Wang et al. 2021: nothing freezes during the search; at its end, decision by decision in a
    # seeded order, the candidate whose removal from the supergraph's mixture raises the validation loss most)
    # or evaluation (single-path one-shot, Guo et al. 2020: every step trains one uniformly drawn candidate per
    # decision, alpha unused; at the end each decision takes the candidate whose single path has the lowest
    # validation loss, by greedy coordinate descent over the decisions in a seeded order) or probes (ATRC only:
    # every candidate of every pair trains in isolation for the whole search, through its own fusion and
    # prediction conv fed with its message alone, alpha unused; each pair then takes the candidate whose probe has
    # the lowest validation loss of the pair's target; nas/search/probes.py)
    selection: Literal[SELECTIONS] = "alpha"
    # what the alphas are stepped on: train (the paper's single-level optimisation: the training batch the weights
    # are stepped on) or heldout (first-order DARTS, Liu et al. 2019: a part of the training split that the weights
    # never see, heldout_fraction of it; every step after alpha_warmup first steps the alphas on a held-out batch,
    # then the weights on a training batch), so a candidate that fits the training images without generalising
    # gains no weight; about twice the compute per step
    alpha_data: Literal[ALPHA_DATA] = "train"
    heldout_fraction: float = Field(0.5, gt=0, lt=1)  # alpha_data heldout: the share of the training split held out
    selection_batches: int | None = Field(None, gt=0)  # val batches per selection score (null: the split)
    selection_sweeps: int = Field(2, gt=0)  # evaluation: at most this many coordinate-descent sweeps
    # perturbation: weight steps that tune the supergraph after each decision is fixed, before the next is judged
    # (DARTS-PT's fine-tuning between edge decisions; 0: none, the decided op then computes its candidate at full
    # weight in a supergraph trained on its share of the mixture). The train.optimizer at train.lr, cosine-decayed
    # to 0 over all the tuning steps, on the batches that follow the search's
    selection_tune_steps: int = Field(0, ge=0)
    # what the alpha_warmup steps train: mixture (the search's own mixture, alphas held at their start) or paths
    # (one candidate per decision drawn uniformly each step at full weight, as single-path one-shot NAS trains a
    # supergraph: every candidate learns on its own before alpha moves)
    warmup: Literal[WARMUPS] = "mixture"

    @model_validator(mode="after")
    def _sigmoid_soft(self):
        if self.weights == "sigmoid" and self.mode != "soft":
            raise ValueError(f"weights sigmoid (Fair DARTS gates) needs mode soft, got mode {self.mode}")
        if self.zero_one > 0 and self.weights != "sigmoid":
            raise ValueError("zero_one is the loss of sigmoid gates: set weights: sigmoid, or zero_one: 0")
        if self.selection == "probes" and self.alpha_data == "heldout":
            raise ValueError("selection probes leaves alpha out of the search, so alpha_data heldout has nothing to "
                             "step: set alpha_data: train")
        if self.selection_tune_steps and self.selection != "perturbation":
            raise ValueError("selection_tune_steps tunes between the decisions of selection perturbation, got "
                             f"selection {self.selection}: set selection: perturbation, or selection_tune_steps: 0")
        return self


class RaySection(Section):
    """Searches as Ray Tune trials (runners/tune_search.py)."""

    num_samples: int = Field(1, gt=0)  # seeds per point of the param space
    max_concurrent_trials: int | None = Field(None, gt=0)
    # per trial ({"cpu": N, "gpu": G}, fractional GPUs allowed); no cpu: the cluster's CPUs shared among the
    # trials that run at once
    resources: dict[str, NonNegative] = {"gpu": 0}
    max_failures: int = Field(1, ge=-1)  # retries of a crashed trial from its last checkpoint (-1: forever)
    # data-parallel workers per trial (Ray Train TorchTrainer + DDP: gloo on CPUs, NCCL on GPUs); each worker
    # gets ray.resources and train.batch_size / workers images of every step
    workers: int = Field(1, gt=0)
    storage_path: str = "results/ray"  # must be shared storage for multi-node clusters
    metric: str = "delta_m"
    mode: Literal["max", "min"] = "max"
    param_space: dict[str, Any] = {}  # the format of runners/params.py (shared with hpo.params)


class HpoSection(Section):
    """Optuna studies over hyperparameters (runners/hpo.py)."""

    study_name: str = "trcnas"
    storage: str = "sqlite:///results/optuna.db"  # one process; use postgresql://... or journal:FILE for many
    n_trials: int = Field(20, gt=0)
    objectives: list[str] = ["delta_m"]  # any of delta_m, val/<task>, params_M, madds_G, agreement
    directions: list[str] = ["maximize"]
    pruner: str = "median"  # median | hyperband | none (multi-objective studies cannot prune)
    retrain: bool = False  # evaluate each trial's architecture after retraining instead of the search's argmax
    seeds: int = Field(1, gt=0)  # searches per trial: objectives are their mean; `agreement` needs 2+
    params: dict[str, Any] = {}  # the format of runners/params.py (shared with ray.param_space)


class LoggingSection(Section):
    """Live metrics of a run in progress (nas/engine/live.py); none of this changes what a run computes."""

    tensorboard: bool = True  # event files in <run>/tensorboard (in-process); Ray trials: Ray's TensorBoard logger
    mlflow: bool = False  # an MLflow run (extra: mlflow); its store: mlflow_uri, default sqlite:///<run>/mlflow.db
    mlflow_uri: str | None = None
    wandb: bool = False  # a Weights & Biases run (extra: wandb); WANDB_MODE=offline needs no network
    experiment: str | None = None  # MLflow experiment / W&B project; default the config's name
    # off a terminal (a log file, a Ray trial) at most one console line per this many seconds
    console_interval_s: float = Field(30.0, ge=0)


class ReferenceFigure(Section):
    label: str = Field(min_length=1)  # e.g. "Multi-task baseline"
    delta_m: float  # Delta_m (%) against this config's baselines
    std: float | None = Field(None, ge=0)  # sample std over the seeds
    seeds: int = Field(1, gt=0)
    source: str = Field(min_length=1)  # where and when it was measured (command, seeds, date, docs page)


class ReportSection(Section):
    importance_repeats: int = Field(2, gt=0)  # permutations per block that `trcnas run` computes after retraining
    # Delta_m figures measured once for this config (the multi-task baseline, the best fixed context), each {label,
    # delta_m, std, seeds, source}: report.md puts the retrained network's Delta_m beside them, with their provenance
    reference: list[ReferenceFigure] = []


class ConfigBase(Section):
    name: str = "run"
    seed: int = 0
    device: str = "cpu"
    # modules or .py files that register context types, tasks, backbones, ... (trcnas.nas.plugins); --plugin adds
    plugins: list[str] = []
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    train: TrainSection = TrainSection()
    # per-task loss weights; aux heads use the same weights. Default: each registered task's published weight
    # (Task.loss_weight, the papers'); a task without one weighs 1.0
    loss_weights: dict[str, NonNegative] = Field(default_factory=published_loss_weights)
    baselines: dict[str, float] = {}  # single-task metrics per task, for Delta_m
    search: SearchSection = SearchSection()
    ray: RaySection = RaySection()
    hpo: HpoSection = HpoSection()
    report: ReportSection = ReportSection()
    logging: LoggingSection = LoggingSection()

    @model_validator(mode="after")
    def _batch(self):
        if self.data.dataset == "synthetic" and self.data.train_samples < self.train.batch_size:
            raise ValueError(f"data.train_samples {self.data.train_samples} is fewer than one batch (train.batch_size "
                             f"{self.train.batch_size}); raise it or lower the batch size")
        if self.search.selection == "probes" and self.model.type != "atrc":
            raise ValueError(f"search.selection probes gives each (target, source) pair's candidates their own probes, "
                             f"which the atrc model has; model.type is {self.model.type}: choose another "
                             f"search.selection")
        if self.search.alpha_data == "heldout" and self.train.label_palette:
            raise ValueError("search.alpha_data heldout steps the alphas on full labels, but train.label_palette "
                             "masks the training labels: set search.alpha_data: train with a label palette")
        return self


_SECTIONS: dict[str, type[Section]] = {}


def register_section(path: str, model: type[Section]) -> None:
    """A family's or plugin's own config section, at ``model.<name>`` or top level ``<name>`` (its defaults
    become the config's)."""
    parts = path.split(".")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "model") or not all(parts):
        raise ValueError(f"a config section goes at model.<name> or <name>, not {path!r}")
    if _SECTIONS.get(path) not in (None, model):
        raise KeyError(f"config section {path!r} registered twice")
    _SECTIONS[path] = model
    schema.cache_clear()


@lru_cache(maxsize=1)
def schema() -> type[ConfigBase]:
    """The config model with every registered section (the shipped families' register theirs when
    ``trcnas.nas.families`` is imported, as ``trcnas.nas.config`` does)."""
    model_extra = {p.split(".")[1]: (m, m()) for p, m in _SECTIONS.items() if p.startswith("model.")}
    top = {p: (m, m()) for p, m in _SECTIONS.items() if "." not in p}
    model = create_model("Model", __base__=ModelSection, **model_extra) if model_extra else ModelSection
    return create_model("Config", __base__=ConfigBase, model=(model, model()), **top)


def defaults() -> dict:
    return schema()().model_dump()


def open_mappings() -> set[str]:
    """Dotted keys of the mappings whose keys are free (task names, options, param spaces): a config replaces
    them whole instead of merging into them."""
    out: set[str] = set()

    def walk(cls, prefix):
        for name, f in cls.model_fields.items():
            ann = f.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{prefix}{name}.")
            elif "dict" in str(ann):
                out.add(f"{prefix}{name}")

    walk(schema(), "")
    return out


def message(e: ValidationError, source: str) -> str:
    """The first violation as one line: ``<source>: <key.path> <what is wrong>``."""
    return first_violation(e, source, unknown="config key")


def parse(cfg: dict, source: str) -> ConfigBase:
    """``cfg`` validated against the schema: the typed config the code reads (``cfg.train.lr``); a violation is
    a ``ValueError`` with the one-line message. A config crosses process boundaries (Ray trials, Ray Train
    workers) as its ``model_dump()`` and is parsed again where it lands."""
    try:
        return schema().model_validate(cfg)
    except ValidationError as e:
        raise ValueError(message(e, source)) from None


def check(cfg: dict, source: str) -> dict:
    """``cfg`` validated against the schema, as plain dicts (floats where floats are due)."""
    return parse(cfg, source).model_dump()


def as_dict(cfg: dict | ConfigBase) -> dict:
    """A plain, deep copy of ``cfg`` (what config.yaml holds and what crosses to another process)."""
    return cfg.model_dump() if isinstance(cfg, ConfigBase) else copy.deepcopy(cfg)


def updated(section: Section, changes: dict[str, Any]) -> Section:
    """A copy of ``section`` (a config or one of its sections) with ``{"a.b": value}`` set, the rest shared;
    the values are not validated (as ``model_copy``)."""
    nested: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    for dotted, value in changes.items():
        head, _, rest = dotted.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    direct.update({k: updated(getattr(section, k), v) for k, v in nested.items()})
    return section.model_copy(update=direct)
