"""The four folders install as the ``trcnas`` namespace, editable (this checkout) and as a wheel."""

import configparser
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("nas", "spaces", "runners", "analysis")


def _packages() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg["options"]["packages"].split()


def test_setup_cfg_lists_every_package_folder():
    found = sorted("trcnas." + str(p.parent.relative_to(ROOT)).replace("/", ".")
                   for f in FOLDERS for p in (ROOT / f).rglob("__init__.py") if "__pycache__" not in p.parts)
    assert found == sorted(_packages())


def _requirement_names(text: str) -> set[str]:
    return {re.split(r"[\s\[<>=!~;]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
            for line in text.splitlines() if line.strip()}


def test_every_third_party_import_is_a_declared_dependency():
    """A fresh machine gets every package the code imports: each third-party module imported by the four folders
    belongs to a distribution named in install_requires (or, for optional commands, an extra)."""
    import ast
    from importlib.metadata import packages_distributions

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    declared = _requirement_names(cfg["options"]["install_requires"])
    extras = set().union(*(_requirement_names(v) for v in cfg["options.extras_require"].values()))
    mods = set()
    for d in FOLDERS:
        for f in (ROOT / d).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.Import):
                    mods |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    mods.add(node.module.split(".")[0])
    dists = packages_distributions()
    third = {m for m in mods if m not in sys.stdlib_module_names and m not in ("trcnas", "__future__")}
    missing = {m: dists.get(m) for m in third
               if not {d.lower().replace("_", "-") for d in dists.get(m, [m])} & (declared | extras)}
    assert not missing, f"imported but not declared in setup.cfg: {missing}"
    optional = {m for m in third if not {d.lower() for d in dists.get(m, [m])} & declared}
    assert optional <= {"optuna_dashboard"}, optional  # only `trcnas dashboard` may need an extra


def test_the_editable_install_is_this_checkout():
    import trcnas.nas
    import trcnas.runners.cli

    assert Path(trcnas.nas.__file__).resolve().parent == ROOT / "nas"
    assert Path(trcnas.runners.cli.__file__).resolve().parent == ROOT / "runners"


def test_a_wheel_holds_every_module_and_shipped_yaml_and_runs_from_elsewhere(tmp_path):
    src = tmp_path / "src"  # a copy: building writes build/ and *.egg-info/ into the source tree
    src.mkdir()
    for f in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / f, src / f)
    for d in FOLDERS:
        shutil.copytree(ROOT / d, src / d, ignore=shutil.ignore_patterns("__pycache__"))
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(tmp_path / "whl"), str(src)], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    (wheel,) = (tmp_path / "whl").glob("trcnas-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    want = {f"trcnas/{f.relative_to(ROOT)}" for d in FOLDERS for f in (ROOT / d).rglob("*")
            if f.suffix in (".py", ".yaml") and "__pycache__" not in f.parts}
    assert want and want <= names, sorted(want - names)[:5]
    assert not any(n.split("/")[0] in FOLDERS for n in names)  # nothing installed under a generic name
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "trcnas = trcnas.runners.cli:main" in entry
    target = tmp_path / "site"
    p = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                        str(wheel)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    code = ("import trcnas.nas, trcnas.runners.cli as c; print(trcnas.nas.__file__); "
            "c.main(['configs'])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.splitlines()
    assert lines[0].startswith(str(target / "trcnas" / "nas"))
    listed = {ln.split()[0] for ln in lines[1:] if ln.startswith("  ")}
    assert {"synthetic-atrc", "synthetic-relations", "atrc-nyud-hrnet18"} <= listed  # shipped configs and
    # architectures found in the wheel
