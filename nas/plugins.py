"""User extensions without editing trcnas: a plugin is a Python module whose import registers context types,
tasks, backbones, palette rules or model types in trcnas's registries (``@register_context(...)``,
``TASKS.register(...)``, ...).

Plugins come from two places, and every process that builds a network from a config loads them (the CLI, each
Ray Tune trial, each data-parallel worker):
- the config key ``plugins: [my_pkg.contexts, ./extra_contexts.py]`` (``--plugin`` on the command line adds to
  it), so a run's saved ``config.yaml`` remembers what it needs: a module name importable in every process, or a
  ``.py`` file path (made absolute when the config is handed to Ray trials);
- installed packages declaring an entry point in the group ``trcnas.plugins`` (loaded once per process).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import zlib
from importlib.metadata import entry_points
from pathlib import Path

from trcnas.nas.errors import UserError

ENTRY_POINT_GROUP = "trcnas.plugins"
_loaded: dict[str, object] = {}
_ENTRY_POINTS_DONE = "entry points scanned"


def is_file_plugin(name: str) -> bool:
    return name.endswith(".py") or "/" in name or "\\" in name


def load_plugin(name: str, source: str = "plugins") -> object:
    """Import one plugin (a module name or a .py file) once per process; a failure is one UserError."""
    key = str(Path(name).resolve()) if is_file_plugin(name) else name
    if key in _loaded:
        return _loaded[key]
    try:
        if is_file_plugin(name):
            path = Path(key)
            if not path.is_file():
                raise UserError(f"{source}: plugin file {name} not found")
            mod_name = f"trcnas_plugin_{path.stem}_{zlib.crc32(key.encode()):08x}"  # one name per file path
            spec = importlib.util.spec_from_file_location(mod_name, path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = mod
            try:
                spec.loader.exec_module(mod)
            except BaseException:
                sys.modules.pop(mod_name, None)
                raise
        else:
            mod = importlib.import_module(name)
    except UserError:
        raise
    except ModuleNotFoundError as e:
        raise UserError(f"{source}: cannot import plugin {name!r} ({e}); give a .py file path, or make the module "
                        f"importable (pip install it or add its folder to PYTHONPATH)") from None
    except Exception as e:  # the plugin's own error: name it, one line
        raise UserError(f"{source}: plugin {name!r} failed to load: {type(e).__name__}: {e}") from None
    _loaded[key] = mod
    return mod


def load_entry_points() -> None:
    """Every installed ``trcnas.plugins`` entry point (module or callable), once per process."""
    if _ENTRY_POINTS_DONE in _loaded:  # the installed metadata is scanned once, not at every load_plugins call
        return
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        key = f"entry point {ep.name}"
        if key in _loaded:
            continue
        try:
            obj = ep.load()
            if callable(obj):
                obj()
        except Exception as e:
            raise UserError(f"trcnas plugin entry point {ep.name!r} ({ep.value}) failed to load: "
                            f"{type(e).__name__}: {e}") from None
        _loaded[key] = obj
    _loaded[_ENTRY_POINTS_DONE] = True


def load_plugins(plugins: list | None = None, source: str = "plugins") -> None:
    """The installed entry points and a config's ``plugins`` (its list)."""
    load_entry_points()
    for i, name in enumerate(plugins or []):
        if not isinstance(name, str) or not name:
            raise UserError(f"{source}: plugins[{i}] must be a module name or a .py path, got {name!r}")
        load_plugin(name, f"{source}: plugins[{i}]")


def absolute_plugins(plugins: list[str]) -> list[str]:
    """A config's plugin list with file paths made absolute (for processes with another working directory)."""
    return [str(Path(p).resolve()) if is_file_plugin(p) else p for p in plugins]
