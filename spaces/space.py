"""A search space: named categorical decisions with ordered candidates, declared in YAML.

Decisions are identified by a path, e.g. ``("atrc", "semseg", "depth")``; an architecture's ``choices``
nest along the same path. ``per: task_pair`` expands one decision per (target, source) pair of the run's
tasks; ``per: single`` lists the decisions explicitly under ``decisions: {name: [candidates]}``, or
``{name: {subset: [elements]}}`` for a set-valued decision (e.g. where mTEB blocks go): it is searched as one
off/on decision per element, ``(group, name, element)``, and exported as the list of the elements that are on.
``defaults: {name: value}`` names the fixed architecture a search is compared against.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from trcnas.spaces.errors import UserError, first_violation

SPACE_FORMAT = "trcnas-space/1"


OFF_ON = ("off", "on")


def _decision(spec):
    """A decision's YAML: ``[candidates]``, or ``{subset: [elements]}``."""
    if (isinstance(spec, list) and spec) or (isinstance(spec, dict) and set(spec) == {"subset"}
                                             and isinstance(spec["subset"], list) and spec["subset"]):
        return spec
    raise ValueError(f"must be a list of candidates or {{subset: [elements]}}, got {spec!r}")


class SpaceSpec(BaseModel):
    """The YAML of a search space (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")
    format: Literal[SPACE_FORMAT]
    name: str = "space"
    group: str | None = None  # default: the name
    per: Literal["task_pair", "single"] = "single"
    candidates: list = []
    exclude_self: Any = None  # [candidate, ...] or {candidate: substitute}
    restrict: dict[str, dict[str, list]] = {}  # {target or *: {source or *: [allowed candidates]}}
    decisions: dict[str, Annotated[Any, AfterValidator(_decision)]] | None = None
    defaults: dict = {}

    @field_validator("defaults", "restrict", mode="before")
    @classmethod
    def _empty(cls, v):
        return {} if v is None else v

    @field_validator("exclude_self")
    @classmethod
    def _exclude(cls, v):
        if v is not None and not isinstance(v, (list, dict)):
            raise ValueError("must be a list of candidates or {candidate: substitute}")
        return v


    @model_validator(mode="after")
    def _per(self):
        if self.per == "task_pair" and not self.candidates:
            raise ValueError("a task_pair space needs candidates")
        if self.per == "single" and not self.decisions:
            raise ValueError("a single space needs decisions: {name: [candidates]}")
        return self


@dataclass(frozen=True)
class Decision:
    path: tuple[str, ...]
    candidates: tuple
    element: object = None  # for one element of a subset decision: the element (path[-1] is its str)

    @property
    def name(self) -> str:
        return ".".join(self.path)


@dataclass
class SearchSpace:
    name: str
    group: str
    per: str
    candidates: list
    exclude_self: dict  # candidate -> what a fixed network uses instead on self pairs (None: the first allowed)
    restrict: dict
    decisions_spec: dict
    defaults: dict
    declaration: dict | None = None  # the YAML mapping it was read from
    shipped: bool = False  # one of the spaces in this package (loadable again by name)

    def embedded(self) -> dict | None:
        """What an architecture file carries to be loadable again: nothing for a shipped space (its name
        suffices), the whole declaration for a user's space file."""
        return None if self.shipped else self.declaration

    @classmethod
    def from_dict(cls, data: dict, source: str = "space") -> SearchSpace:
        if not isinstance(data, dict):
            raise UserError(f"{source}: a search space must be a mapping")
        try:
            spec = SpaceSpec.model_validate(data)
        except ValidationError as e:
            raise UserError(first_violation(e, str(source))) from None
        return cls(
            name=spec.name,
            group=spec.group or spec.name,
            per=spec.per,
            candidates=list(spec.candidates),
            exclude_self=_exclude_self(spec.exclude_self),
            restrict=dict(spec.restrict),
            decisions_spec=dict(spec.decisions or {}),
            defaults=dict(spec.defaults),
            declaration=data,
        )

    def _pair_candidates(self, target: str, source: str) -> list:
        cands = list(self.candidates)
        for t_key in (target, "*"):
            row = self.restrict.get(t_key) or {}
            for s_key in (source, "*"):
                if s_key in row:
                    allowed = list(row[s_key])
                    bad = [c for c in allowed if c not in self.candidates]
                    if bad:
                        raise UserError(f"space {self.name}: restrict {t_key}.{s_key} names unknown {bad}")
                    cands = [c for c in cands if c in allowed]
        if target == source:
            cands = [c for c in cands if c not in self.exclude_self]
        if not cands:
            raise UserError(f"space {self.name}: pair {target} <- {source} has no candidate left")
        return cands

    def decisions(self, tasks: list[str]) -> list[Decision]:
        if self.per == "task_pair":
            return [Decision((self.group, t, s), tuple(self._pair_candidates(t, s))) for t in tasks for s in tasks]
        out = []
        for n, spec in self.decisions_spec.items():
            if isinstance(spec, dict):
                out += [Decision((self.group, n, str(e)), OFF_ON, e) for e in spec["subset"]]
            else:
                out.append(Decision((self.group, n), tuple(spec)))
        return out

    def value_of(self, choices: dict, d: Decision):
        """The value of one decision in a ``choices`` tree (None when missing)."""
        node = choices
        for p in d.path if d.element is None else d.path[:-1]:
            if not isinstance(node, dict) or p not in node:
                return None
            node = node[p]
        if d.element is None:
            return node
        if not isinstance(node, list):
            return None
        return "on" if d.element in node else "off"

    def choices_from(self, values: dict[tuple, object]) -> dict:
        """The ``choices`` tree of ``{decision path: value}`` (subset elements collected into lists)."""
        tree: dict = {}
        by_path = {d.path: d for d in self.decisions(self._tasks_of(values))}
        for path, v in values.items():
            d = by_path.get(path)
            if d is not None and d.element is not None:
                lst = _node(tree, path[:-2]).setdefault(path[-2], [])
                if v == "on":
                    lst.append(d.element)
            else:
                _node(tree, path[:-1])[path[-1]] = v
        return tree

    def _tasks_of(self, values) -> list[str]:
        if self.per != "task_pair":
            return []
        return list(dict.fromkeys(p[1] for p in values))

    def default_values(self) -> dict[tuple, object]:
        """``{decision path: value}`` of the space's ``defaults`` (single spaces)."""
        missing = [n for n in self.decisions_spec if n not in self.defaults]
        if self.per != "single" or missing:
            raise UserError(f"space {self.name} declares no defaults for {', '.join(missing) or 'its pairs'}")
        tree = {self.group: self.defaults}
        return {d.path: self.value_of(tree, d) for d in self.decisions([])}


def _exclude_self(spec) -> dict:
    """``exclude_self: [slabel]`` or ``{slabel: tlabel}`` (with the substitute a fixed all-S-label network uses on
    self pairs)."""
    if spec is None:
        return {}
    return {c: None for c in spec} if isinstance(spec, list) else dict(spec)


def _node(tree: dict, path) -> dict:
    for p in path:
        tree = tree.setdefault(p, {})
    return tree


def load_space(name_or_path: str) -> SearchSpace:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise UserError(f"search space file {p} not found")
        text, source = p.read_text(), str(p)
    else:
        f = resources.files("trcnas.spaces") / f"{name_or_path}.yaml"
        if not f.is_file():
            raise UserError(f"no shipped search space named {name_or_path!r}")
        text, source = f.read_text(), f"space {name_or_path}"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"malformed YAML in {source}: {e}") from None
    space = SearchSpace.from_dict(data, source)
    space.shipped = p.suffix not in (".yaml", ".yml")
    return space
