"""What a bad-input sweep of every command found beyond ``test_bad_input.py``: each of these gave a traceback,
a kilobyte-long line, unsafe advice, a silently dropped value or placeholder figures. Each test fails on the
code before the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from test_data import _nyud_tree  # the NYUD fixture layout

from trcnas.nas.config import load_config
from trcnas.runners.cli import main


def _one_error_line(capsys) -> str:
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in out + err
    return lines[0]


def _nyud_args(root: Path, tmp: Path, workers: int = 0) -> list[str]:
    return ["train", "--fast-dev-run", "--no-progress", "--set", "data.dataset=nyud", "--set", f"data.root={root}",
            "--set", f"data.cache_dir={tmp / 'cache'}", "--set", f"data.num_workers={workers}",
            "--set", "data.crop=[32,32]", "--out", str(tmp / "o")]


def test_real_split_smaller_than_a_batch_is_one_line(tmp_path, capsys):
    _nyud_tree(tmp_path / "nyud", n=1, size=(40, 48))
    code = main([*_nyud_args(tmp_path / "nyud", tmp_path), "--set", "train.batch_size=2"])
    line = _one_error_line(capsys)
    assert code == 2
    assert "1 samples, fewer than one batch (train.batch_size 2)" in line and str(tmp_path / "nyud") in line


def test_corrupt_image_read_by_a_worker_is_one_short_line(tmp_path, capsys):
    ids = _nyud_tree(tmp_path / "nyud", n=2, size=(40, 48))
    bad = tmp_path / "nyud" / "images" / f"{ids[0]}.png"
    bad.write_bytes(b"not a png" * 10)
    code = main([*_nyud_args(tmp_path / "nyud", tmp_path, workers=1), "--set", "train.batch_size=1"])
    line = _one_error_line(capsys)
    assert code == 2
    assert line == f"error: cannot read image {bad}: UnidentifiedImageError; is the file corrupt?"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    root = tmp_path_factory.mktemp("trained")
    assert main(["train", "--fast-dev-run", "--no-progress", "--set", f"data.cache_dir={cache_dir}",
                 "--out", str(root / "run")]) == 0
    return root / "run"


@pytest.mark.parametrize("content, says", [
    (b"\x00garbage" * 50, "is not a readable PyTorch file (truncated or corrupt)"),
    ("foreign", "is a PyTorch file but not a trcnas checkpoint (no 'model' entry)"),
    ("pickle", "holds Python objects that a trcnas checkpoint never holds"),
], ids=["corrupt", "foreign", "pickle"])
@pytest.mark.parametrize("command", ["resume", "importance"])
def test_corrupt_or_foreign_checkpoint_says_what_it_is_not(trained, tmp_path, capsys, cache_dir, content, says,
                                                           command):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    ckpt = run / "checkpoint.pt"
    if content == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, ckpt)
    elif content == "pickle":
        torch.save({"model": Path("x")}, ckpt)  # a Python object: refused by weights_only
    else:
        ckpt.write_bytes(content)
    before = ckpt.read_bytes()
    if command == "resume":  # same --out, same config: train resumes from the checkpoint
        argv = ["train", "--fast-dev-run", "--no-progress", "--set", f"data.cache_dir={cache_dir}", "--out",
                str(run)]
        remedy = "--overwrite"
    else:
        argv = ["importance", "--run", str(run), "--repeats", "1", "--no-progress"]
        remedy = "`trcnas train`"
    capsys.readouterr()
    code = main(argv)
    line = _one_error_line(capsys)
    assert code == 2
    assert f"checkpoint {ckpt} {says}" in line and remedy in line, line
    assert "weights_only" not in line
    assert ckpt.read_bytes() == before  # nothing overwritten


def test_set_of_one_loss_weight_keeps_the_others():
    cfg = load_config("nyud-hrnet18", ["loss_weights={semseg: 2}"])
    assert cfg.loss_weights == {"semseg": 2, "depth": 1.0, "normals": 10.0, "edge": 50.0}
    # _delete_ replaces the mapping whole: the config's normals weight (4.0) is gone, and a task the mapping
    # leaves out takes its own default weight (the paper's 10.0 for normals)
    assert load_config("synthetic-composite").loss_weights["normals"] == 4.0
    cfg = load_config("synthetic-composite", ["loss_weights={semseg: 2, depth: 3, _delete_: true}"])
    assert cfg.loss_weights == {"semseg": 2, "depth": 3, "normals": 10.0, "edge": 50.0}
    # nested mappings merge at every depth: one pair of a relation matrix
    cfg = load_config("synthetic-relations", ["data.relations={red: {green: local}}"])
    assert cfg.data.relations["red"] == {"red": "none", "green": "local", "blue": "local", "grain": "tlabel"}
    assert cfg.data.relations["green"]["red"] == "slabel"
    assert load_config("synthetic-atrc", ["hpo.params={}"]).hpo.params == {}  # {} empties a mapping
    # a search space merges entry by entry, but an entry is one value: it is replaced whole, never mixed
    before = load_config("synthetic-atrc").hpo.params
    assert before["search.freeze_threshold"]["type"] == "float"
    cfg = load_config("synthetic-atrc", ["hpo.params={search.freeze_threshold: {type: categorical, choices: [0.2]}}"])
    assert cfg.hpo.params["search.freeze_threshold"] == {"type": "categorical", "choices": [0.2]}
    assert {k: v for k, v in cfg.hpo.params.items() if k != "search.freeze_threshold"} == {
        k: v for k, v in before.items() if k != "search.freeze_threshold"}


def test_set_of_a_number_in_e_notation_is_a_number():
    assert load_config(None, ["train.lr=5e-4"]).train.lr == 0.0005  # YAML 1.1 alone reads a string


def test_set_help_says_mappings_merge(capsys):
    assert main(["train", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "keeps the other weights" in help_text and "_delete_: true" in help_text


def test_in_process_divergence_is_one_line_exit_1(tmp_path, capsys, cache_dir):
    code = main(["search", "--local", "--fast-dev-run", "--no-progress", "--set", f"data.cache_dir={cache_dir}",
                 "--set", "train.lr=1e30", "--out", str(tmp_path / "s")])
    line = _one_error_line(capsys)
    assert code == 1
    assert line.startswith("error: the training diverged: loss became nan at step ")
    assert "train.lr" in line and "grad_clip" in line


def test_report_on_a_folder_without_results_is_one_line(tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no runs here")
    code = main(["report", str(tmp_path / "empty")])
    line = _one_error_line(capsys)
    assert code == 2
    assert str(tmp_path / "empty") in line and "metrics.json" in line
    assert not (tmp_path / "empty" / "figures").exists()
