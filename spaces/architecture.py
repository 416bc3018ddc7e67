"""The architecture file: what a search exports and a retrain reads (YAML, ``trcnas-architecture/1``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from trcnas.spaces.errors import UserError, first_violation
from trcnas.spaces.io import atomic_write_text
from trcnas.spaces.space import Decision, SearchSpace, load_space

ARCH_FORMAT = "trcnas-architecture/1"


def _get(tree: dict, path: tuple[str, ...]):
    node = tree
    for p in path:
        if not isinstance(node, dict) or p not in node:
            return None
        node = node[p]
    return node


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    node = tree
    for p in path[:-1]:
        node = node.setdefault(p, {})
    node[path[-1]] = value


@dataclass
class Architecture:
    space: str
    tasks: list[str]
    choices: dict[str, Any]
    search: dict[str, Any] = field(default_factory=dict)
    space_spec: dict | None = None  # a user's space, embedded so the file loads without the space file

    def search_space(self) -> SearchSpace:
        if self.space_spec is not None:
            return SearchSpace.from_dict(self.space_spec, f"the space embedded in the architecture ({self.space})")
        return load_space(self.space)

    @property
    def group(self) -> str:
        """The decision group (``atrc``, ``composite``, ``mteb``): names the network type that builds it."""
        return next(iter(self.choices), self.space)

    def choice(self, path: tuple[str, ...]):
        return _get(self.choices, path)

    def validate(self, space: SearchSpace | None = None, tasks: list[str] | None = None, source: str = "",
                 known_tasks: list[str] | None = None) -> None:
        """Check against the space (every decision present, every value a candidate), the run's tasks and
        the names of known tasks."""
        where = f"{source}: " if source else ""
        if tasks is not None and list(tasks) != list(self.tasks):
            raise UserError(f"{where}architecture is for tasks {self.tasks}, but the config has {list(tasks)}")
        for t in self.tasks if known_tasks is not None else ():
            if t not in known_tasks:
                raise UserError(f"{where}unknown task {t!r} in architecture (known: {', '.join(known_tasks)})")
        if len(set(self.tasks)) != len(self.tasks):
            raise UserError(f"{where}tasks are listed twice: {self.tasks}")
        space = space or self.search_space()
        for d in space.decisions(self.tasks):
            v = space.value_of(self.choices, d)
            if d.element is not None:
                lst = space.value_of(self.choices, Decision(d.path[:-1], ()))
                bad = [e for e in lst or [] if e not in space.decisions_spec[d.path[-2]]["subset"]]
                if not isinstance(lst, list) or bad:
                    raise UserError(f"{where}choices.{'.'.join(d.path[:-1])} must be a list of elements of "
                                    f"{space.decisions_spec[d.path[-2]]['subset']}, got {lst!r}")
                continue
            if v is None:
                raise UserError(f"{where}missing choice for {'.'.join(d.path)} (candidates: {list(d.candidates)})")
            if v not in d.candidates:
                raise UserError(f"{where}choices.{'.'.join(d.path)} = {v!r} is not one of {list(d.candidates)}")

    def to_dict(self) -> dict:
        d = {"format": ARCH_FORMAT, "space": self.space, "tasks": list(self.tasks), "choices": self.choices,
             "search": self.search}
        return {**d, "space_spec": self.space_spec} if self.space_spec is not None else d

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


class ArchitectureSpec(BaseModel):
    """The YAML of an architecture file; what its choices may be is checked against its space
    (``Architecture.validate``)."""

    model_config = ConfigDict(extra="forbid")
    format: Literal[ARCH_FORMAT]
    space: str
    tasks: list[str]
    choices: dict
    search: dict | None = None  # what the search recorded (seed, probabilities, cost, ...)
    space_spec: dict | None = None  # a user's space, embedded


def from_dict(data: Any, source: str = "architecture") -> Architecture:
    if not isinstance(data, dict):
        raise UserError(f"{source}: an architecture file must be a mapping")
    try:
        spec = ArchitectureSpec.model_validate(data)
    except ValidationError as e:
        raise UserError(first_violation(e, str(source))) from None
    arch = Architecture(spec.space, list(spec.tasks), data["choices"], dict(spec.search or {}), spec.space_spec)
    arch.validate(source=source)
    return arch


def shipped_architectures_dir() -> Path:
    return Path(__file__).parent / "architectures"


def shipped_architectures() -> dict[str, str]:
    """name -> what it is (the ``search.about`` line) of each architecture shipped with trcnas (the ATRC
    paper's searched genotypes), usable by name wherever an architecture file is."""
    out = {}
    for f in sorted(shipped_architectures_dir().glob("*.yaml")):
        about = (yaml.safe_load(f.read_text()) or {}).get("search", {}).get("about", "")
        out[f.stem] = str(about)
    return out


def find_architecture(name_or_path: str | Path) -> Path:
    """An architecture file by path, else the shipped architecture of that name; neither is one ``UserError``
    listing the shipped names."""
    p = Path(name_or_path)
    if p.is_file() or p.suffix in (".yaml", ".yml") or len(p.parts) > 1:
        return p
    f = shipped_architectures_dir() / f"{name_or_path}.yaml"
    if not f.is_file():
        raise UserError(f"no architecture file or shipped architecture named {str(name_or_path)!r}; shipped: "
                        f"{', '.join(shipped_architectures())} (`trcnas configs` lists them)")
    return f


def load_architecture(path: str | Path) -> Architecture:
    path = find_architecture(path)
    if not path.is_file():
        raise UserError(f"architecture file {path} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"malformed YAML in {path}: {e}") from None
    return from_dict(data, str(path))


def fixed_architecture(space: SearchSpace, tasks: list[str], context: str) -> Architecture:
    """Every decision gets ``context`` where it is a candidate; elsewhere (self pairs for S-label) the space's
    ``exclude_self`` substitute, else the first candidate."""
    values = {}
    for d in space.decisions(tasks):
        sub = space.exclude_self.get(context)
        values[d.path] = (context if context in d.candidates else sub if sub in d.candidates else d.candidates[0])
    # choices_from collects subset elements (e.g. mTEB scales: fixed:off -> []) into lists
    return Architecture(space.name, list(tasks), space.choices_from(values), {"fixed": context}, space.embedded())


def architecture_from_decisions(space: SearchSpace, tasks: list[str], values: dict[tuple, object],
                                search: dict | None = None) -> Architecture:
    return Architecture(space.name, list(tasks), space.choices_from(values), dict(search or {}), space.embedded())


def default_architecture(space: SearchSpace, tasks: list[str]) -> Architecture:
    """The space's declared ``defaults`` (e.g. CompositeTasking's depth 6 / width 128) as an architecture."""
    return Architecture(space.name, list(tasks), space.choices_from(space.default_values()), {"fixed": "defaults"},
                        space.embedded())


def decision_leaves(choices: dict, prefix: str = "") -> dict[str, Any]:
    """``{"atrc.semseg.depth": "global", "mteb.scales": (1,), ...}``: every decision value of an architecture's
    choices by its dotted path (a subset as a tuple)."""
    out: dict[str, Any] = {}
    for k, v in choices.items():
        if isinstance(v, dict):
            out.update(decision_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
    return out
