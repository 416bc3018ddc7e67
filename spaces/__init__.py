"""Declarative search spaces (named categorical decisions) and the architecture file format."""

from spaces.architecture import (
    Architecture,
    default_architecture,
    fixed_architecture,
    from_genotype,
    load_architecture,
)
from spaces.space import Decision, SearchSpace, load_space

__all__ = ["Architecture", "Decision", "SearchSpace", "default_architecture", "fixed_architecture", "from_genotype",
           "load_architecture", "load_space"]
