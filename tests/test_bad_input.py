"""Bad input across every command: each case exits with code 2, prints exactly one ``error:`` line naming the
key or path at fault, raises no traceback, creates no ``--out`` it was refused for, and leaves the outputs
of earlier good runs (a train run, a local search, a CompositeTasking run) byte-for-byte unchanged."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from trcnas.runners.cli import main

ARCH = "trcnas-architecture/1"


@pytest.fixture(scope="module")
def good(tmp_path_factory, cache_dir):
    """Earlier good runs that no bad input may touch."""
    root = tmp_path_factory.mktemp("good")
    fast = ["--fast-dev-run", "--no-progress", "--set", f"data.cache_dir={cache_dir}"]
    assert main(["train", "--out", str(root / "train"), *fast]) == 0
    assert main(["search", "--local", "--out", str(root / "search"), *fast]) == 0
    assert main(["train", "--config", "synthetic-composite", "--out", str(root / "composite"), *fast]) == 0
    return {"root": root, "fast": fast, "snapshot": _snapshot(root)}


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(root)): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _w(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


def _arch(tmp: Path, **over) -> Path:
    tasks = over.pop("tasks", ["semseg", "depth", "normals", "edge"])
    choices = {"atrc": {t: {s: "global" for s in tasks} for t in tasks}}
    return _w(tmp / "arch.yaml", yaml.safe_dump({"format": ARCH, "space": "atrc", "tasks": tasks,
                                                 "choices": choices, **over}))


def _bad_arch_choice(tmp: Path) -> Path:
    p = _arch(tmp)
    d = yaml.safe_load(p.read_text())
    d["choices"]["atrc"]["semseg"]["depth"] = "telekinesis"
    return _w(p, yaml.safe_dump(d))


def _corrupt_checkpoint_copy(g: dict, tmp: Path) -> Path:
    dst = tmp / "copy"
    shutil.copytree(g["root"] / "train", dst)
    _w(dst / "checkpoint.pt", b"\x00garbage" * 50)
    return dst


def _spec(tmp: Path, text: str) -> Path:
    return _w(tmp / "spec.yaml", text)


def _set(case: str, item: str, want: str, *command: str):
    """A case that is one bad ``--set`` value of ``command`` (default ``train``)."""
    return case, lambda g, t: [*(command or ("train",)), "--set", item], want


GOOD_SPEC = "name: c\nconfig: synthetic-mt\nseeds: [0]\nvariants:\n  - {name: a, label: A}\n"
BAD_SPACE = "format: trcnas-space/1\nper: x\n"
HPO = "hpo.params={search.alpha_lr: {type: float, low: 0.001, high: 0.1, log: true}}"

# (id, argv builder (good, tmp) -> list, the text the error line must contain (builder or string))
CASES = [
    # ---- config files and values, every section ----
    ("config-missing", lambda g, t: ["train", "--config", str(t / "none.yaml")], lambda g, t: str(t / "none.yaml")),
    ("config-malformed", lambda g, t: ["train", "--config", str(_w(t / "c.yaml", "train: [1, 2\n"))], "malformed YAML"),
    ("config-not-mapping", lambda g, t: ["train", "--config", str(_w(t / "c.yaml", "- 1\n- 2\n"))],
     lambda g, t: str(t / "c.yaml")),
    ("config-base-missing", lambda g, t: ["train", "--config", str(_w(t / "c.yaml", "base: nowhere-config\n"))],
     "nowhere-config"),
    _set("config-unknown-key", "model.colour=red", "model.colour"),
    _set("config-unknown-section", "optimiser.lr=1", "optimiser"),
    _set("override-syntax", "train.lr", "train.lr"),
    _set("train.steps-type", "train.steps=many", "train.steps"),
    _set("train.steps-zero", "train.steps=0", "train.steps"),
    _set("train.batch_size", "train.batch_size=-1", "train.batch_size"),
    _set("train.lr", "train.lr=-1", "train.lr"),
    _set("train.momentum", "train.momentum=1.5", "train.momentum"),
    _set("train.weight_decay", "train.weight_decay=-0.1", "train.weight_decay"),
    _set("train.checkpoint_every", "train.checkpoint_every=0", "train.checkpoint_every"),
    _set("train.log_every", "train.log_every=0", "train.log_every"),
    _set("train.eval_batch_size", "train.eval_batch_size=0", "train.eval_batch_size"),
    _set("train.eval_workers", "train.eval_workers=0", "train.eval_workers"),
    _set("train.optimizer", "train.optimizer=rmsprop", "train.optimizer"),
    _set("train.schedule", "train.schedule=cosine", "train.schedule"),
    _set("train.plateau.factor", "train.plateau.factor=1.5", "train.plateau.factor"),
    _set("train.grad_clip", "train.grad_clip=-1", "train.grad_clip"),
    _set("data.tasks-unknown", "data.tasks=[semseg, telepathy]", "telepathy"),
    _set("data.tasks-duplicate", "data.tasks=[semseg, semseg]", "data.tasks"),
    _set("data.tasks-empty", "data.tasks=[]", "data.tasks"),
    _set("data.image_size-1d", "data.image_size=[64]", "data.image_size"),
    _set("data.image_size-small", "data.image_size=[16, 16]", "data.image_size"),
    _set("data.augment.scale", "data.augment.scale=[2]", "data.augment.scale"),
    _set("data.train_samples", "data.train_samples=0", "data.train_samples"),
    _set("data.train_samples-batch", "data.train_samples=3", "data.train_samples"),
    _set("data.num_workers", "data.num_workers=-1", "data.num_workers"),
    ("data.dataset-unknown", lambda g, t: ["train", *g["fast"], "--set", "data.dataset=imagenet"],
     "imagenet"),
    ("data.root-missing", lambda g, t: ["train", "--set", "data.dataset=nyud", "--set", f"data.root={t}/nyud"],
     lambda g, t: f"{t}/nyud"),
    ("device", lambda g, t: ["train", "--device", "tpu"], "tpu"),
    _set("loss_weights-task", "loss_weights.foo=1", "loss_weights.foo"),
    _set("loss_weights-negative", "loss_weights.semseg=-1", "loss_weights.semseg"),
    _set("baselines-task", "baselines.foo=1", "baselines.foo"),
    _set("model.type", "model.type=transformer", "model.type"),
    _set("model.dropout", "model.dropout=1.5", "model.dropout"),
    _set("model.channels", "model.channels=0", "model.channels"),
    ("model.backbone.name", lambda g, t: ["train", *g["fast"], "--set", "model.backbone.name=vgg99"],
     "vgg99"),
    ("backbone-weights-garbage", lambda g, t: ["train", *g["fast"], "--out", str(t / "o"), "--set",
                                               f"model.backbone.weights={_w(t / 'w.pt', bytes(range(256)) * 3)}"],
     lambda g, t: str(t / "w.pt")),
    ("backbone-weights-missing", lambda g, t: ["train", *g["fast"], "--out", str(t / "o"), "--set",
                                               f"model.backbone.weights={t / 'nope.pt'}"],
     lambda g, t: str(t / "nope.pt")),
    _set("search.mode", "search.mode=x", "search.mode", "search", "--local"),
    _set("search.tau.shape", "search.tau.shape=x", "search.tau.shape", "search", "--local"),
    _set("search.tau.end", "search.tau.end=0", "search.tau.end", "search", "--local"),
    _set("search.entropy.shape", "search.entropy.shape=exp", "search.entropy", "search", "--local"),
    _set("search.steps", "search.steps=-3", "search.steps", "search", "--local"),
    _set("search.freeze_threshold", "search.freeze_threshold=2", "search.freeze_threshold", "search", "--local"),
    _set("search.alpha_lr", "search.alpha_lr=-1", "search.alpha_lr", "search", "--local"),
    _set("ray.resources.cpu", "ray.resources.cpu=-2", "ray.resources.cpu", "search"),
    _set("ray.mode", "ray.mode=up", "ray.mode", "search"),
    _set("ray.num_samples", "ray.num_samples=0", "ray.num_samples", "search"),
    _set("ray.max_failures", "ray.max_failures=-5", "ray.max_failures", "search"),
    _set("ray.param_space-value", "ray.param_space={train.lr: {grid: [0.1, -1]}}", "ray.param_space.train.lr",
         "search"),
    _set("ray.param_space-combination", "ray.param_space={train.batch_size: {choice: [8, 900]}}",
         "data.train_samples", "search"),
    _set("plugin-section-without-plugin", "model.dilated.dilation=2", "model.dilated"),
    # ---- directories, runs and checkpoints ----
    ("out-is-a-file", lambda g, t: ["train", *g["fast"], "--out", str(_w(t / "f", "x"))], lambda g, t: str(t / "f")),
    ("out-holds-another-config", lambda g, t: ["train", *g["fast"], "--out", str(g["root"] / "train"), "--set",
                                               "train.lr=0.5"], "train.lr"),
    ("out-holds-another-model", lambda g, t: ["train", *g["fast"], "--out", str(g["root"] / "train"), "--set",
                                              "model.type=single_task"], "model.type"),
    ("checkpoint-garbage", lambda g, t: ["train", *g["fast"], "--out", str(_corrupt_checkpoint_copy(g, t))],
     lambda g, t: str(t / "copy" / "checkpoint.pt")),
    ("search-out-is-a-file", lambda g, t: ["search", "--local", *g["fast"], "--out", str(_w(t / "f", "x"))],
     lambda g, t: str(t / "f")),
    ("search-space-missing", lambda g, t: ["search", "--local", "--set", f"search.space={t / 'sp.yaml'}"],
     lambda g, t: str(t / "sp.yaml")),
    ("search-space-malformed", lambda g, t: ["search", "--local", "--set",
                                             "search.space=" + str(_w(t / "sp.yaml", BAD_SPACE))],
     lambda g, t: str(t / "sp.yaml")),
    _set("search-space-unknown-name", "search.space=nas-bench-201", "nas-bench-201", "search", "--local"),
    # ---- architecture files ----
    ("architecture-missing", lambda g, t: ["train", "--architecture", str(t / "a.yaml")],
     lambda g, t: str(t / "a.yaml")),
    ("architecture-malformed", lambda g, t: ["train", "--architecture", str(_w(t / "a.yaml", "choices: [\n"))],
     lambda g, t: str(t / "a.yaml")),
    ("architecture-not-mapping", lambda g, t: ["train", "--architecture", str(_w(t / "a.yaml", "- x\n"))],
     lambda g, t: str(t / "a.yaml")),
    ("architecture-format", lambda g, t: ["train", "--architecture", str(_arch(t, format="v0"))],
     lambda g, t: str(t / "arch.yaml")),
    ("architecture-tasks", lambda g, t: ["train", "--architecture", str(_arch(t, tasks=["semseg", "depth"]))],
     lambda g, t: str(t / "arch.yaml")),
    ("architecture-choice", lambda g, t: ["train", "--architecture", str(_bad_arch_choice(t))], "telekinesis"),
    ("architecture-unknown-key", lambda g, t: ["train", "--architecture", str(_arch(t, colour="red"))], "colour"),
    ("architecture-fixed", lambda g, t: ["train", "--architecture", "fixed:telepathy"], "fixed:telepathy"),
    ("retrain-architecture-missing", lambda g, t: ["retrain", "--architecture", str(t / "a.yaml")],
     lambda g, t: str(t / "a.yaml")),
    ("summary-architecture-missing", lambda g, t: ["summary", "--architecture", str(t / "a.yaml")],
     lambda g, t: str(t / "a.yaml")),
    _set("summary-config", "model.colour=red", "model.colour", "summary"),
    # ---- export ----
    ("export-source-missing", lambda g, t: ["export", str(t / "nothing"), "--out", str(t / "o.yaml")],
     lambda g, t: str(t / "nothing")),
    ("export-out-directory", lambda g, t: ["export", str(g["root"] / "search"), "--out", str(t)], lambda g, t: str(t)),
    ("export-genotype-malformed", lambda g, t: ["export", str(_w(t / "g.json", "{not json")), "--out",
                                                str(t / "o.yaml")], lambda g, t: str(t / "g.json")),
    ("export-genotype-code", lambda g, t: ["export", str(_w(t / "g.json", json.dumps(
        {"data": {"semseg": {"semseg": 9}}}))), "--out", str(t / "o.yaml")], lambda g, t: str(t / "g.json")),
    # ---- hpo studies and storages ----
    ("hpo-param-key", lambda g, t: ["hpo", "--storage", f"sqlite:///{t}/s.db", "--set",
                                    "hpo.params={train.nope: {type: float, low: 1, high: 2}}"],
     "hpo.params.train.nope"),
    ("hpo-param-type", lambda g, t: ["hpo", "--storage", f"sqlite:///{t}/s.db", "--set",
                                     "hpo.params={train.lr: {type: gauss, low: 1, high: 2}}"], "hpo.params.train.lr"),
    ("hpo-param-range", lambda g, t: ["hpo", "--storage", f"sqlite:///{t}/s.db", "--set",
                                      "hpo.params={train.lr: {type: float, low: 1, high: 0.1}}"],
     "hpo.params.train.lr"),
    ("hpo-param-value", lambda g, t: ["hpo", "--storage", f"sqlite:///{t}/s.db", "--set",
                                      "hpo.params={train.lr: {type: float, low: -1, high: 0.1}}"],
     "hpo.params.train.lr"),
    ("hpo-param-log", lambda g, t: ["hpo", "--storage", f"sqlite:///{t}/s.db", "--set",
                                    "hpo.params={train.lr: {type: float, low: 0, high: 0.1, log: true}}"],
     "hpo.params.train.lr"),
    ("hpo-param-choices", lambda g, t: ["hpo", "--storage", f"sqlite:///{t}/s.db", "--set",
                                        "hpo.params={search.mode: {type: categorical, choices: [soft, bogus]}}"],
     "hpo.params.search.mode"),
    ("hpo-params-empty", lambda g, t: ["hpo", "--storage", f"sqlite:///{t}/s.db", "--set", "hpo.params={}"],
     "hpo.params"),
    ("hpo-objective", lambda g, t: ["hpo", "--storage", f"sqlite:///{t}/s.db", "--set", HPO, "--set",
                                    "hpo.objectives=[accuracy]"], "hpo.objectives"),
    ("hpo-agreement-one-seed", lambda g, t: ["hpo", "--storage", f"sqlite:///{t}/s.db", "--set", HPO, "--set",
                                             "hpo.objectives=[agreement]"], "hpo.seeds"),
    ("hpo-directions", lambda g, t: ["hpo", "--storage", f"sqlite:///{t}/s.db", "--set", HPO, "--set",
                                     "hpo.directions=[up]"], "hpo.directions"),
    ("hpo-pruner", lambda g, t: ["hpo", "--storage", f"sqlite:///{t}/s.db", "--set", HPO, "--set",
                                 "hpo.pruner=guillotine"], "hpo.pruner"),
    ("hpo-storage-url", lambda g, t: ["hpo", "--storage", "nosql://x", "--set", HPO], "nosql://x"),
    ("dashboard-storage-url", lambda g, t: ["dashboard", "--storage", "nosql://x"], "nosql://x"),
    # ---- analysis and task editing ----
    ("report-dir-missing", lambda g, t: ["report", str(t / "nothing")], lambda g, t: str(t / "nothing")),
    ("report-dir-is-file", lambda g, t: ["report", str(_w(t / "f", "x"))], lambda g, t: str(t / "f")),
    ("importance-run-missing", lambda g, t: ["importance", "--run", str(t / "nothing")],
     lambda g, t: str(t / "nothing")),
    ("importance-not-atrc", lambda g, t: ["importance", "--run", str(g["root"] / "train"), "--out", str(t / "o")],
     lambda g, t: str(g["root"] / "train")),
    ("importance-repeats", lambda g, t: ["importance", "--run", str(g["root"] / "train"), "--repeats", "0"],
     "--repeats"),
    ("predict-not-composite", lambda g, t: ["predict", "--run", str(g["root"] / "train"), "--palette",
                                            str(_w(t / "p.png", b"x")), "--out", str(t / "o.npz")],
     lambda g, t: str(g["root"] / "train")),
    ("predict-palette-missing", lambda g, t: ["predict", "--run", str(g["root"] / "composite"), "--palette",
                                              str(t / "p.png"), "--out", str(t / "o.npz")],
     lambda g, t: str(t / "p.png")),
    ("predict-palette-garbage", lambda g, t: ["predict", "--run", str(g["root"] / "composite"), "--palette",
                                              str(_w(t / "p.png", b"\x89PNG garbage")), "--out", str(t / "o.npz")],
     lambda g, t: str(t / "p.png")),
    ("predict-index", lambda g, t: ["predict", "--run", str(g["root"] / "composite"), "--palette",
                                    str(_w(t / "p.png", b"x")), "--index", "99999", "--out", str(t / "o.npz")],
     "--index"),
    # ---- comparisons, tables, benchmarks, usage ----
    ("compare-spec-unknown", lambda g, t: ["compare", "no-such-comparison", "--out", str(t / "o")],
     "no-such-comparison"),
    ("compare-spec-malformed", lambda g, t: ["compare", str(_spec(t, "variants: [\n")), "--out", str(t / "o")],
     lambda g, t: str(t / "spec.yaml")),
    ("compare-spec-key", lambda g, t: ["compare", str(_spec(t, GOOD_SPEC + "colour: red\n")), "--out", str(t / "o")],
     "colour"),
    ("compare-only", lambda g, t: ["compare", str(_spec(t, GOOD_SPEC)), "--only", "zzz", "--out", str(t / "o")],
     "zzz"),
    ("compare-set", lambda g, t: ["compare", str(_spec(t, GOOD_SPEC)), "--set", "train.lr=-1", "--out", str(t / "o")],
     "train.lr"),
    ("table-variant", lambda g, t: ["table", "--variants", "telepathy", "--out", str(t / "o")], "telepathy"),
    ("table-seeds", lambda g, t: ["table", "--seeds", "0", "--out", str(t / "o")], "--seeds"),
    ("table-architecture", lambda g, t: ["table", "--architecture", str(_arch(t, tasks=["semseg", "depth"])),
                                         "--out", str(t / "o")], lambda g, t: str(t / "arch.yaml")),
    ("bench-device", lambda g, t: ["bench", "--device", "tpu", "--out", str(t / "o")], "tpu"),
    ("data-check-root", lambda g, t: ["data", "check", "--set", f"data.root={t}/nyud"], lambda g, t: f"{t}/nyud"),
    ("usage-int", lambda g, t: ["importance", "--run", "x", "--repeats", "y"], "--repeats"),
    ("usage-command", lambda g, t: ["teleport"], "teleport"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line_and_harms_nothing(good, tmp_path, capsys, case):
    _, argv_of, expect = case
    argv = argv_of(good, tmp_path)
    want = expect(good, tmp_path) if callable(expect) else expect
    if argv[0] in ("train", "retrain", "search", "hpo", "summary", "table") and "--out" not in argv \
            and argv[0] != "summary":
        argv += ["--out", str(tmp_path / "o")]
    if "--no-progress" not in argv and argv[0] in ("train", "retrain", "search", "hpo", "table"):
        argv.append("--no-progress")
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert want in lines[0], (want, lines[0])
    assert "Traceback" not in out + err
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.npz").exists()  # refused before writing
    assert not (tmp_path / "s.db").exists()  # no study created for a bad study definition
    assert _snapshot(good["root"]) == good["snapshot"]  # earlier good runs untouched


def test_sixty_distinct_bad_inputs_reach_every_command(tmp_path):
    from trcnas.runners.cli import COMMANDS

    g = {"root": tmp_path / "g", "fast": []}
    (g["root"] / "train").mkdir(parents=True)
    commands = {argv(g, tmp_path)[0] for _, argv, _ in CASES}
    assert len({c[0] for c in CASES}) == len(CASES) >= 60
    # every command but `configs` (no input) and `run` (search + retrain: their inputs are covered)
    assert set(COMMANDS) - commands == {"configs", "run"}
