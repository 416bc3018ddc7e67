"""Declarative search spaces (named categorical decisions) and the architecture file format."""

from trcnas.spaces.architecture import (
    Architecture,
    default_architecture,
    fixed_architecture,
    load_architecture,
)
from trcnas.spaces.space import Decision, SearchSpace, load_space

__all__ = ["Architecture", "Decision", "SearchSpace", "default_architecture", "fixed_architecture",
           "load_architecture", "load_space"]
