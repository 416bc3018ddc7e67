"""The package's layers, as Python runs its imports (module-level and function-local alike): no import cycle,
and data flows one way (spaces -> nas -> runners; analysis reads results and may use spaces and nas, never
runners). ``if TYPE_CHECKING:`` imports, which never run, do not count."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("spaces", "nas", "runners", "analysis")
# what each top-level package may import from the others
ALLOWED = {"spaces": set(), "nas": {"spaces"}, "analysis": {"spaces", "nas"}, "runners": {"spaces", "nas", "analysis"}}


def _modules() -> dict[str, Path]:
    out = {}
    for d in PACKAGES:
        for f in (ROOT / d).rglob("*.py"):
            name = ".".join(("trcnas", *f.relative_to(ROOT).with_suffix("").parts))
            out[name.removesuffix(".__init__")] = f
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules ``name`` imports, with the packages that importing them runs (but not ``name``'s
    own ancestors, which Python has run before ``name``)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", "") == "TYPE_CHECKING" for x in node.body for n in ast.walk(x)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    out = set()
    for target in found:
        parts = target.split(".")
        for i in range(2, len(parts) + 1):
            mod = ".".join(parts[:i])
            if mod in modules and mod != name and not name.startswith(mod + "."):
                out.add(mod)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_package_imports_have_no_cycle():
    graph = _graph()
    assert len(graph) > 80 and "trcnas.nas.families" in graph["trcnas.nas.config"]
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_data_flows_one_way_between_the_top_level_packages():
    wrong = sorted(f"{m} -> {t}" for m, targets in _graph().items() for t in targets
                   if (src := m.split(".")[1]) != (dst := t.split(".")[1]) and dst not in ALLOWED[src])
    assert wrong == []


# what may be imported inside a function: heavy or optional third-party libraries (import cost paid only by the
# commands that use them; Ray, Optuna, MLflow, W&B and TensorBoard are extras or services), and, in the command
# line alone, the package's own modules (its commands load lazily, so `trcnas --help` stays fast)
DEFERRED = {"ray", "optuna", "optuna_dashboard", "mlflow", "wandb", "torch.utils.tensorboard", "pandas", "matplotlib",
            "seaborn", "scipy", "skimage", "timm", "trcnas.runners.live_ray"}
LAZY_COMMANDS = "trcnas.runners.cli"


def _function_local_imports() -> list[tuple[str, str]]:
    out = []
    for name, path in _modules().items():
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    out += [(name, a.name) for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    out.append((name, node.module))
    return out


def test_function_local_imports_only_for_heavy_or_optional_libraries_and_lazy_commands():
    found = _function_local_imports()
    assert ("trcnas.runners.tune_search", "ray") in found  # the scan sees function bodies
    wrong = sorted(f"{m}: {t}" for m, t in found
                   if not any(t == d or t.startswith(d + ".") for d in DEFERRED)
                   and not (m == LAZY_COMMANDS and t.startswith("trcnas.")))
    assert wrong == []
