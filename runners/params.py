"""One hyperparameter-space format for Ray Tune (``ray.param_space``) and Optuna (``hpo.params``).

Each entry maps a config key to a range::

    search.alpha_lr: {type: float, low: 0.001, high: 0.1, log: true}
    search.alpha_warmup: {type: int, low: 0, high: 400}          # both ends included
    search.mode: {type: categorical, choices: [soft, hard]}
    search.freeze_threshold: {type: grid, values: [0.2, 0.3]}    # Ray only: every value is run

Ray's own names are accepted as shorthands: ``{grid: [...]}``, ``{choice: [...]}``, ``{uniform: [lo, hi]}``,
``{loguniform: [lo, hi]}``, ``{randint: [lo, hi]}`` (hi excluded, as in Ray). Both runners parse with
:func:`parse_params`; every value a trial could get at the ends of a range is checked against the config schema
before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from trcnas.nas.config import apply_overrides, has_key, validate
from trcnas.nas.errors import UserError
from trcnas.nas.schema import ConfigBase

TYPES = ("float", "int", "categorical", "grid")
SHORTHANDS = ("grid", "choice", "uniform", "loguniform", "randint")


@dataclass(frozen=True)
class Param:
    key: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    values: tuple = ()  # categorical choices / grid values

    def ends(self) -> list:
        """The values to check against the config: every choice, or both ends of the range."""
        return list(self.values) if self.type in ("categorical", "grid") else [self.low, self.high]

    def to_tune(self):
        from ray import tune

        if self.type == "grid":
            return tune.grid_search(list(self.values))
        if self.type == "categorical":
            return tune.choice(list(self.values))
        if self.type == "int":
            return (tune.lograndint if self.log else tune.randint)(int(self.low), int(self.high) + 1)
        return (tune.loguniform if self.log else tune.uniform)(float(self.low), float(self.high))

    def to_optuna(self, where: str):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.type == "grid":
            raise UserError(f"{where}.{self.key}: type grid runs every value as Ray Tune trials (ray.param_space); "
                            "an Optuna study samples: use type categorical")
        if self.type == "categorical":
            return CategoricalDistribution(list(self.values))
        if self.type == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)


def _canonical(spec: dict, where: str) -> dict:
    """A Ray shorthand as the one format."""
    (name, arg), = spec.items()
    if not isinstance(arg, list) or not arg or (name not in ("grid", "choice") and len(arg) != 2):
        raise UserError(f"{where}: {name} needs a list of values{'' if name in ('grid', 'choice') else ' [low, high]'}"
                        f", got {arg!r}")
    if name == "grid":
        return {"type": "grid", "values": arg}
    if name == "choice":
        return {"type": "categorical", "choices": arg}
    if name == "randint":
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in arg):
            raise UserError(f"{where}: randint needs integers [low, high), got {arg!r}")
        return {"type": "int", "low": arg[0], "high": arg[1] - 1}
    return {"type": "float", "low": arg[0], "high": arg[1], "log": name == "loguniform"}


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class FloatRange(_Spec):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _range(self):
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0, got {self.low}")
        return self


class IntRange(FloatRange):
    type: Literal["int"]
    low: int
    high: int


class Choices(_Spec):
    type: Literal["categorical"]
    choices: list = Field(min_length=1)


class Grid(_Spec):
    type: Literal["grid"]
    values: list = Field(min_length=1)


SPECS = TypeAdapter(Annotated[FloatRange | IntRange | Choices | Grid, Field(discriminator="type")])
FIELDS = {m.model_fields["type"].annotation.__args__[0]: set(m.model_fields)  # each type's fields, for messages
          for m in (FloatRange, IntRange, Choices, Grid)}
WORDS = {"float_type": "a number", "int_type": "an integer", "bool_type": "true or false", "list_type": "a list"}


def _error(e: ValidationError, w: str, kind) -> str:
    """The first violation of an entry as one line, named ``<where>.<key>[.<field>]``."""
    err = e.errors(include_url=False)[0]
    field = ".".join(str(x) for x in err["loc"][1:])  # loc[0] is the type's tag
    at, v = f"{w}.{field}" if field else w, err.get("input")
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return (f"{w}.type must be one of {', '.join(TYPES)} (or a shorthand {', '.join(SHORTHANDS)}), "
                f"got {kind!r}")
    if err["type"] == "extra_forbidden":
        return f"{w}: unknown field {field!r} for type {kind}; use {', '.join(sorted(FIELDS[kind]))}"
    if err["type"] == "value_error":
        return f"{at}: {err['ctx']['error']}"
    if err["type"] == "too_short":
        return f"{at} must be a non-empty list, got {v!r}"
    if err["type"] == "missing":
        return f"{at} is missing"
    return f"{at} must be {WORDS.get(err['type'], err['msg'].replace('Input should be ', ''))}, got {v!r}"


def parse_param(key: str, spec, where: str) -> Param:
    w = f"{where}.{key}"
    if isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in SHORTHANDS:
        spec = _canonical(spec, w)
    if not isinstance(spec, dict):
        raise UserError(f"{w} must be a mapping such as {{type: float, low: 0.001, high: 0.1}}, got {spec!r}")
    try:
        r = SPECS.validate_python(spec)
    except ValidationError as e:
        raise UserError(_error(e, w, spec.get("type"))) from None
    if isinstance(r, (Choices, Grid)):
        return Param(key, r.type, values=tuple(r.choices if isinstance(r, Choices) else r.values))
    return Param(key, r.type, r.low, r.high, r.log)


def parse_params(cfg: ConfigBase, where: str) -> dict[str, Param]:
    """``where`` (``ray.param_space`` or ``hpo.params``) of ``cfg`` parsed, every key a config key and every end
    of every range a value the config accepts (one error line otherwise)."""
    section, name = where.split(".")
    out = {}
    for key, spec in (getattr(getattr(cfg, section), name) or {}).items():
        if not has_key(key):
            raise UserError(f"{where}.{key}: unknown config key {key!r}")
        p = out[key] = parse_param(key, spec, where)
        for v in p.ends():
            try:
                validate(apply_overrides(cfg, {key: v}), f"{where}.{key}")
            except UserError as e:
                raise UserError(f"{e} (value {v!r} of the range)") from None
    return out


def grid_size(params: dict[str, Param]) -> int:
    n = 1
    for p in params.values():
        if p.type == "grid":
            n *= len(p.values)
    return n
