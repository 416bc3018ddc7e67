"""``trcnas export``: write an architecture file from a search run directory, an architecture YAML, a
reference-format JSON genotype, or a Ray Tune experiment (best trial by a metric)."""

from __future__ import annotations

from pathlib import Path

from trcnas.nas.errors import UserError
from trcnas.nas.genotype import from_genotype
from trcnas.nas.tasks import TASKS
from trcnas.runners.experiment import best_trial_dir
from trcnas.spaces import Architecture, load_architecture

ARCHITECTURE = "architecture.yaml"


def load_any(source: str | Path, tasks: list[str] | None = None, metric: str = "delta_m",
             mode: str = "max") -> Architecture:
    src = Path(source)
    if not src.exists():
        raise UserError(f"export source {src} not found (a search run dir, an architecture YAML or a JSON genotype)")
    if src.is_dir():
        if (src / ARCHITECTURE).is_file():
            arch = load_architecture(src / ARCHITECTURE)
        else:
            best = best_trial_dir(src, metric, mode)
            arch = load_architecture(best / ARCHITECTURE)
    elif src.suffix == ".json":
        arch = from_genotype(src, tasks)
    else:
        arch = load_architecture(src)
    arch.validate(known_tasks=TASKS.names(), source=str(src))
    return arch


def export(source: str | Path, out: str | Path, tasks: list[str] | None = None, metric: str = "delta_m",
           mode: str = "max") -> Architecture:
    arch = load_any(source, tasks, metric, mode)
    arch.save(out)
    return arch
