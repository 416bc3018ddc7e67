"""Every ``model.type``, registered by name in one registry, ``MODEL_TYPES``: the plain networks (``multitask``,
``single_task``: a ``PlainNetwork``, no search space) and the search-space families (ATRC, CompositeTasking,
mTEB, or a user's: a ``SpaceFamily``). A family owns its shipped space (``spaces/<name>.yaml``), the
supergraph and fixed-network builders (mixed ops built from the space's ``Decision`` objects), its defaults
and fixed variants (Table 1's fixed rows, ``--architecture fixed:<value>``) and, where the reference has one,
its genotype format.

``model.type`` selects the family (``atrc``, ``composite``, ``mteb``; ``multitask`` and ``single_task`` are
plain networks without a space); ``search.space`` may name another space *of that family* (a YAML of your own
with ``group: <family>``), and defaults to the family's shipped space.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

from trcnas.nas.errors import UserError
from trcnas.nas.plugins import load_plugins
from trcnas.nas.registry import Registry
from trcnas.nas.schema import ConfigBase
from trcnas.spaces import default_architecture, load_space

MODEL_TYPES = Registry("model type")


class ModelType(ABC):
    """What a ``model.type`` names: ``fixed`` builds its network. ``label`` names it in tables; ``section`` is
    the config section only its networks read (e.g. model.composite), if any."""

    name: str
    label: str
    section: str | None = None

    @abstractmethod
    def fixed(self, cfg: ConfigBase, tasks: Mapping, architecture):
        """The network (for a family: of one architecture; None: the space's declared defaults)."""


class PlainNetwork(ModelType):
    """A network without a search space: it takes no architecture."""

    def __init__(self, name: str, label: str, build):
        self.name, self.label, self._build = name, label, build

    def fixed(self, cfg: ConfigBase, tasks: Mapping, architecture=None):
        if architecture is not None:
            raise UserError(f"model.type {self.name!r} is a plain network and takes no architecture; set "
                            f"model.type: {architecture.group}")
        return self._build(cfg, tasks)


def register_network(name: str, label: str):
    """Decorator: registers ``build(cfg, tasks)`` as the plain network ``model.type: name``."""
    def deco(build):
        MODEL_TYPES.add(name, PlainNetwork(name, label, build), info=label)
        return build
    return deco


class SpaceFamily(ModelType):
    """The contract of a family. ``name`` is both the ``model.type`` that selects it and the ``group`` of its
    spaces' decisions; ``space`` the shipped space searched by default; ``config`` the shipped config a bare
    ``trcnas retrain --architecture`` of this family uses."""

    space: str
    config: str

    @abstractmethod
    def supergraph(self, cfg: ConfigBase, tasks: Mapping, space):
        """The search network: one MixedOp per ``space.decisions(tasks)`` (built with ``MixedOp.of``)."""

    def choices(self, cfg: ConfigBase, architecture) -> dict:
        """This family's choices of ``architecture``; without one, the defaults its space declares."""
        if architecture is None:
            architecture = default_architecture(resolve_space(cfg), list(cfg.data.tasks))
        return architecture.choices[self.name]

    def fixed_variants(self, space, tasks: list[str]) -> dict[str, str]:
        """``{value: row label}``: the fixed architectures ``fixed:<value>`` builds (every decision set to
        ``value`` where it is a candidate) and Table 1 compares against the searched one. None by default."""
        return {}

    def from_genotype(self, data, tasks: list[str] | None = None):
        raise UserError(f"space family {self.name!r} has no reference genotype format")

    def to_genotype(self, architecture) -> dict:
        raise UserError(f"space family {self.name!r} has no reference genotype format")


def register_family(cls):
    """Class decorator: registers one instance of a :class:`SpaceFamily` subclass under ``cls.name``."""
    MODEL_TYPES.add(cls.name, cls(), info=cls.label)
    return cls


def model_type(name: str) -> ModelType:
    return MODEL_TYPES.get(name)


def family(name: str) -> SpaceFamily:
    f = MODEL_TYPES.get(name)
    if not isinstance(f, SpaceFamily):
        raise UserError(f"model.type {name!r} is a plain network without a search space; use a space family "
                        f"({', '.join(family_names())})")
    return f


def family_names() -> list[str]:
    """Every registered family (the shipped ones and those of loaded plugins)."""
    return [n for n in MODEL_TYPES.names() if is_family(n)]


def foreign_sections(name: str) -> tuple[str, ...]:
    """The config sections of the model types other than ``name``: they do not change what its run computes
    (a run may resume after such a section gained a key)."""
    return tuple(MODEL_TYPES.get(n).section for n in MODEL_TYPES.names()
                 if n != name and MODEL_TYPES.get(n).section)


def is_family(name: str) -> bool:
    return name in MODEL_TYPES and isinstance(MODEL_TYPES.get(name), SpaceFamily)


def resolve_space(cfg: ConfigBase, source: str = "config"):
    """The search space of a config: ``search.space`` (default: the family's shipped space), which must be a
    space of the family ``model.type`` selects."""
    mtype, name = cfg.model.type, cfg.search.space
    if not is_family(mtype):
        if name is None:
            raise UserError(f"{source}: model.type {mtype!r} is a plain network without a search space; set "
                            f"model.type to a space family ({', '.join(family_names())})")
        space = load_space(name)
        raise UserError(f"{source}: search.space {name!r} is a space of family {space.group!r} but model.type "
                        f"{mtype!r} is a plain network that searches nothing; model.type selects the family: to "
                        f"search it set model.type: {space.group} (search.space may then be left out), to train "
                        f"the {mtype} network remove search.space")
    space = load_space(name or family(mtype).space)
    if space.group != mtype:
        raise UserError(f"{source}: search.space {name!r} is a space of family {space.group!r} but model.type is "
                        f"{mtype!r}; set model.type: {space.group}, or a space with group: {mtype}")
    return space


def model_types() -> list[str]:
    """Every valid ``model.type``: the plain networks, then the space families (registration order)."""
    return MODEL_TYPES.names()


def build_model(cfg: ConfigBase, tasks: Mapping, architecture=None):
    """The network ``model.type`` names: a plain network, or the fixed network of a family (``architecture``;
    None: the family's defaults where it declares them)."""
    load_plugins(cfg.plugins)
    mtype = cfg.model.type
    if mtype not in MODEL_TYPES:
        raise UserError(f"model.type {mtype!r} unknown; use one of {', '.join(model_types())}")
    if is_family(mtype) and architecture is not None and architecture.group != mtype:
        raise UserError(f"the architecture is of space family {architecture.group!r} but model.type is "
                        f"{mtype!r}; set model.type: {architecture.group}")
    return model_type(mtype).fixed(cfg, tasks, architecture)


def build_supergraph(cfg: ConfigBase, tasks: Mapping, space):
    """The search network of ``space`` (one MixedOp per decision), built by the space's family."""
    load_plugins(cfg.plugins)
    return family(space.group).supergraph(cfg, tasks, space)


# the shipped model types register themselves (after the names they import from this package are defined)
from trcnas.nas.families import plain  # noqa: E402, F401, I001  (the plain networks first)
from trcnas.nas.families import atrc, composite, mteb  # noqa: E402, F401
