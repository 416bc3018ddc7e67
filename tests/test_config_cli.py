import json

import pytest

from trcnas.nas.config import load_config
from trcnas.nas.errors import UserError
from trcnas.runners.cli import main


def _err(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.mark.parametrize("text,match", [
    ("model:\n  colour: red\n", "unknown config key 'model.colour'"),
    ("train:\n  steps: many\n", "train.steps must be an integer, got 'many'"),
    ("data:\n  tasks: [semseg, telepathy]\n", "unknown task 'telepathy'"),
    ("train: [1, 2\n", "malformed YAML"),
])
def test_bad_config_is_one_clear_line(tmp_path, capsys, text, match):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    code, err = _err(capsys, ["train", "--config", str(p), "--no-progress"])
    assert code == 2 and len(err) == 1 and match in err[0] and str(p) in err[0]


def test_missing_config_file_and_bad_override(tmp_path, capsys):
    code, err = _err(capsys, ["train", "--config", str(tmp_path / "none.yaml")])
    assert code == 2 and err == [f"error: config file {tmp_path / 'none.yaml'} not found; give a YAML file or the "
                                 "name of a shipped config (`trcnas configs`)"]
    (tmp_path / "dir.yaml").mkdir()
    code, err = _err(capsys, ["train", "--config", str(tmp_path / "dir.yaml")])
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: config file {tmp_path / 'dir.yaml'} is a folder")
    code, err = _err(capsys, ["train", "--set", "train.nope=1"])
    assert code == 2 and "unknown config key" in err[0]


def test_missing_dataset_root_via_cli(capsys, tmp_path):
    code, err = _err(capsys, ["train", "--set", "data.dataset=nyud", "--set", f"data.root={tmp_path}/x",
                              "--out", str(tmp_path / "o")])
    assert code == 2 and len(err) == 1 and "does not exist" in err[0] and "gt_sets" in err[0]


def test_base_inheritance_and_override():
    cfg = load_config("synthetic-atrc", ["train.lr=0.5", "data.image_size=[32, 48]"])
    assert cfg.model.dropout == 0.05 and cfg.name == "synthetic-atrc"
    assert cfg.train.lr == 0.5 and cfg.data.image_size == [32, 48]
    with pytest.raises(UserError):
        load_config("no-such-config")


def test_a_folder_named_like_a_shipped_config_does_not_hide_it(tmp_path, monkeypatch):
    # e.g. `trcnas train --config synthetic-composite --out synthetic-composite`, then the mosaic baselines, whose
    # `base:` chain names synthetic-composite
    monkeypatch.chdir(tmp_path)
    (tmp_path / "synthetic-composite").mkdir()
    cfg = load_config("synthetic-st-mosaic")
    assert cfg.name == "synthetic-st-mosaic" and cfg.train.optimizer == "adam"
    assert load_config("synthetic-composite").model.type == "composite"


def test_configs_lists_shipped(capsys):
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    for name in ("synthetic-mt", "synthetic-st", "synthetic-atrc", "nyud-hrnet18", "nyud-hrnet48", "pascal-hrnet18"):
        assert name in out
    for name in ("nyud-hrnet18", "nyud-hrnet48", "pascal-hrnet18"):
        load_config(name)  # paper configs validate


def test_output_piped_into_a_reader_that_stops_is_no_traceback(tmp_path, monkeypatch):
    """`trcnas configs | head -1`: writing to a pipe whose reader has gone raises BrokenPipeError; the command
    ends quietly with exit code 0 (no traceback), its stdout pointed at /dev/null for the final flush."""
    import sys

    class ClosedPipe:
        def __init__(self, fd):
            self.fd = fd

        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

        def fileno(self):
            return self.fd

    with open(tmp_path / "stdout", "w") as f:
        monkeypatch.setattr(sys, "stdout", ClosedPipe(f.fileno()))
        assert main(["configs"]) == 0


@pytest.mark.parametrize("config", ["synthetic-mt", "synthetic-st", "synthetic-atrc"])
def test_fast_dev_run_every_synthetic_config(tmp_path, fast_args, config):
    out = tmp_path / "run"
    assert main(["train", "--config", config, "--out", str(out), *fast_args]) == 0
    for f in ("config.yaml", "metrics.json", "checkpoint.pt", "train_curve.csv"):
        assert (out / f).stat().st_size > 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["primary"]) == {"semseg", "depth", "normals", "edge"}
    assert m["steps"] == 3


def test_train_is_deterministic_on_cpu(tmp_path, fast_args):
    runs = []
    for i in range(2):
        out = tmp_path / f"r{i}"
        assert main(["train", "--out", str(out), "--seed", "5", *fast_args]) == 0
        runs.append(json.loads((out / "metrics.json").read_text())["metrics"])
    assert runs[0] == runs[1]


def test_summary_json_counts(capsys):
    assert main(["summary", "--json", "--set", "data.image_size=[64, 64]"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["params_M"] > 0 and s["madds_G"] > 0
    assert sum(m["params_M"] for m in s["modules"]) == pytest.approx(s["params_M"])
    assert sum(m["madds_G"] for m in s["modules"]) <= s["madds_G"] + 1e-9


@pytest.mark.parametrize("bad, key", [
    ("search.mode=x", "search.mode"), ("search.tau.shape=x", "search.tau.shape"), ("train.lr=-1", "train.lr"),
    ("search.alpha_lr=-1", "search.alpha_lr"), ("train.checkpoint_every=0", "train.checkpoint_every"),
    ("train.log_every=0", "train.log_every"), ("train.eval_batch_size=0", "train.eval_batch_size"),
    ("data.train_samples=3", "data.train_samples"), ("data.train_samples=0", "data.train_samples"),
    ("data.image_size=[64]", "data.image_size"), ("data.augment.scale=[2]", "data.augment.scale"),
    ("search.tau.end=0", "search.tau.end"), ("ray.resources.cpu=-2", "ray.resources.cpu"),
    ("search.steps=-3", "search.steps"), ("search.freeze_threshold=2", "search.freeze_threshold"),
    ("loss_weights.foo=1", "loss_weights.foo"), ("data.tasks=[semseg,semseg]", "data.tasks"),
    ("train.schedule=cosine", "train.schedule"), ("train.plateau.factor=1.5", "train.plateau.factor"),
    ("model.dropout=1.5", "model.dropout"), ("search.entropy.shape=exp", "search.entropy"),
    ("train.optimizer=rmsprop", "train.optimizer"), ("ray.mode=up", "ray.mode"),
])
def test_every_bad_value_is_refused_at_load_with_its_key(tmp_path, capsys, bad, key):
    out = tmp_path / "run"
    assert main(["train", "--set", bad, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and key in err[0], err
    assert not out.exists()  # refused before anything ran


@pytest.mark.parametrize("backbone", ["tiny", "resnet18"])
def test_garbage_backbone_weights_are_one_error_line(tmp_path, capsys, backbone):
    bad = tmp_path / "w.pt"
    bad.write_bytes(bytes(range(256)) * 3)
    out = tmp_path / "run"
    assert main(["train", "--fast-dev-run", "--no-progress", "--out", str(out), "--set",
                 f"model.backbone.name={backbone}", "--set", f"model.backbone.weights={bad}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: backbone.weights:") and str(bad) in err[0]


def test_resume_only_with_the_same_config_overwrite_starts_over(tmp_path, capsys, fast_args):
    out = tmp_path / "run"
    assert main(["train", *fast_args, "--out", str(out)]) == 0
    metrics = (out / "metrics.json").read_text()
    ckpt = (out / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert main(["train", *fast_args, "--out", str(out), "--set", "train.lr=0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.lr" in err[0] and "--overwrite" in err[0]
    assert (out / "metrics.json").read_text() == metrics and (out / "checkpoint.pt").read_bytes() == ckpt
    assert "lr: 0.5" not in (out / "config.yaml").read_text()  # the stored config is not rewritten
    assert main(["train", *fast_args, "--out", str(out), "--set", "model.type=single_task"]) == 2
    assert main(["train", *fast_args, "--out", str(out), "--set", "data.num_workers=0"]) == 0  # same run
    assert main(["train", *fast_args, "--out", str(out), "--set", "train.lr=0.5", "--overwrite"]) == 0
    assert "lr: 0.5" in (out / "config.yaml").read_text()
    f = tmp_path / "file"
    f.write_text("x")
    capsys.readouterr()
    assert main(["train", *fast_args, "--out", str(f)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["export", str(out), "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_another_familys_section_does_not_block_a_resume(tmp_path, capsys, fast_args):
    """model.composite is read by CompositeTasking networks only: a multi-task run resumes after that section
    changed (or gained a key in a later version); a change of a section the run reads is refused."""
    out = tmp_path / "run"
    assert main(["train", *fast_args, "--out", str(out)]) == 0
    assert main(["train", *fast_args, "--out", str(out), "--set", "model.composite.decoder=quarter"]) == 0
    capsys.readouterr()
    assert main(["train", *fast_args, "--out", str(out), "--set", "model.channels=24"]) == 2
    assert "model.channels" in capsys.readouterr().err
    cout = tmp_path / "composite"
    args = [*fast_args, "--config", "synthetic-composite", "--out", str(cout)]
    assert main(["train", *args]) == 0
    capsys.readouterr()
    assert main(["train", *args, "--set", "model.composite.decoder=full"]) == 2
    assert "model.composite.decoder" in capsys.readouterr().err


def test_progress_off_a_terminal_is_a_few_whole_lines(tmp_path, capsys, cache_dir):
    """stderr is captured (not a terminal): bars become rate-limited lines, no carriage-return redraws."""
    out = tmp_path / "run"
    assert main(["train", "--fast-dev-run", "--out", str(out), "--set", f"data.cache_dir={tmp_path / 'c'}"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [ln for ln in err.splitlines() if "it/s" in ln or "s/it" in ln]
    assert lines and len(lines) <= 12, err  # render (2 splits), train, evaluation: a start and an end line each


@pytest.mark.parametrize("command,key,values", [("train", "data.num_workers", (0, 1)),
                                                ("search", "data.num_workers", (0, 1)),
                                                ("train", "train.eval_workers", (1, 2))])
def test_worker_settings_change_no_result(tmp_path, fast_args, command, key, values):
    """Throughput settings, not result settings: the same seed gives the same metrics with the data loaded in
    worker processes (samples and their augmentation depend on (seed, index, epoch) only), and with the edge
    meter's per-image counts computed on worker processes."""
    runs = []
    for workers in values:
        out = tmp_path / f"w{workers}"
        argv = [command, *(["--local"] if command == "search" else []), "--out", str(out), *fast_args,
                "--set", f"{key}={workers}"]
        assert main(argv) == 0
        runs.append(json.loads((out / "metrics.json").read_text())["metrics"])
    assert runs[0] == runs[1]


def test_configuration_reference_is_not_stale(capsys):
    """docs/configuration.md is what `trcnas configs --reference` prints now: regenerate it after a schema change."""
    from pathlib import Path

    assert main(["configs", "--reference"]) == 0
    page = Path(__file__).parent.parent / "docs" / "configuration.md"
    assert capsys.readouterr().out == page.read_text(), "stale: trcnas configs --reference > docs/configuration.md"
    assert "| `logging.mlflow` | `bool` | `False` |" in page.read_text()
