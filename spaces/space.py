"""A search space: named categorical decisions with ordered candidates, declared in YAML.

Decisions are identified by a path, e.g. ``("atrc", "semseg", "depth")``; an architecture's ``choices``
nest along the same path. ``per: task_pair`` expands one decision per (target, source) pair of the run's
tasks; ``per: single`` lists the decisions explicitly under ``decisions: {name: [candidates]}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from spaces.errors import SpecError

SPACE_FORMAT = "trcnas-space/1"


@dataclass(frozen=True)
class Decision:
    path: tuple[str, ...]
    candidates: tuple

    @property
    def name(self) -> str:
        return ".".join(self.path)


@dataclass
class SearchSpace:
    name: str
    group: str
    per: str
    candidates: list
    exclude_self: list
    restrict: dict
    decisions_spec: dict

    @classmethod
    def from_dict(cls, data: dict, source: str = "space") -> SearchSpace:
        if not isinstance(data, dict):
            raise SpecError(f"{source}: a search space must be a mapping")
        if data.get("format") != SPACE_FORMAT:
            raise SpecError(f"{source}: format must be {SPACE_FORMAT!r}, got {data.get('format')!r}")
        known = {"format", "name", "group", "per", "candidates", "exclude_self", "restrict", "decisions"}
        extra = set(data) - known
        if extra:
            raise SpecError(f"{source}: unknown key(s) {', '.join(sorted(extra))}")
        per = data.get("per", "single")
        if per not in ("task_pair", "single"):
            raise SpecError(f"{source}: per must be task_pair or single, got {per!r}")
        if per == "task_pair" and not data.get("candidates"):
            raise SpecError(f"{source}: a task_pair space needs candidates")
        if per == "single" and not isinstance(data.get("decisions"), dict):
            raise SpecError(f"{source}: a single space needs decisions: {{name: [candidates]}}")
        return cls(
            name=str(data.get("name", "space")),
            group=str(data.get("group", data.get("name", "space"))),
            per=per,
            candidates=list(data.get("candidates") or []),
            exclude_self=list(data.get("exclude_self") or []),
            restrict=dict(data.get("restrict") or {}),
            decisions_spec=dict(data.get("decisions") or {}),
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
                        raise SpecError(f"space {self.name}: restrict {t_key}.{s_key} names unknown {bad}")
                    cands = [c for c in cands if c in allowed]
        if target == source:
            cands = [c for c in cands if c not in self.exclude_self]
        if not cands:
            raise SpecError(f"space {self.name}: pair {target} <- {source} has no candidate left")
        return cands

    def decisions(self, tasks: list[str]) -> list[Decision]:
        if self.per == "task_pair":
            return [Decision((self.group, t, s), tuple(self._pair_candidates(t, s))) for t in tasks for s in tasks]
        return [Decision((self.group, n), tuple(c)) for n, c in self.decisions_spec.items()]


def load_space(name_or_path: str) -> SearchSpace:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise SpecError(f"search space file {p} not found")
        text, source = p.read_text(), str(p)
    else:
        f = resources.files("spaces") / f"{name_or_path}.yaml"
        if not f.is_file():
            raise SpecError(f"no shipped search space named {name_or_path!r}")
        text, source = f.read_text(), f"space {name_or_path}"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError(f"malformed YAML in {source}: {e}") from None
    return SearchSpace.from_dict(data, source)
