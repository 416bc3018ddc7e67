"""Live metrics of a run in progress (nas/engine/live.py): TensorBoard event files read back with TensorBoard's
own reader, an MLflow store read back with the mlflow client, offline W&B, the console line off a terminal, a
missing optional extra as one error line, the cost ledger in every metrics.json, and no change of results with
every logger on. The Ray-trial path (tune.report -> Ray's TensorBoard logger) is in the slow suite."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from trcnas.runners.cli import main

LOG_EVERY = ["--set", "train.log_every=1", "--set", "logging.console_interval_s=0"]


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    files = sorted(folder.rglob("events.out.tfevents*"))
    assert files, f"no event file under {folder}"
    out: dict[str, list] = {}
    for f in files:
        ea = EventAccumulator(str(f), size_guidance={"scalars": 0})
        ea.Reload()
        for tag in ea.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in ea.Scalars(tag))
    return out


def _candidates(run: Path) -> set[str]:
    """``decision/candidate`` of every candidate of every decision, from the search's alpha history."""
    cols = pd.read_csv(run / "alpha_history.csv").columns
    return {c.replace(":", "/", 1) if ":" in c else c for c in cols if ":" in c}


@pytest.fixture(scope="module")
def local_search(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("live") / "search"
    assert main(["search", "--local", "--fast-dev-run", "--no-progress", "--set", f"data.cache_dir={cache_dir}",
                 *LOG_EVERY, "--out", str(out)]) == 0
    return out


def test_local_search_writes_loss_and_every_candidate_probability(local_search):
    s = _scalars(local_search / "tensorboard")
    curve = pd.read_csv(local_search / "train_curve.csv")
    assert [st for st, _ in s["loss"]] == list(curve["step"])  # every log_every step (1 here)
    assert [round(v, 4) for _, v in s["loss"]] == [round(v, 4) for v in curve["loss"]]
    probs = {t[len("prob/"):] for t in s if t.startswith("prob/")}
    assert probs == _candidates(local_search) and len(probs) >= 16 * 4
    for name in ("lr", "tau", "entropy_weight", "frozen", "img_per_s", "loss/semseg"):
        assert len(s[name]) == len(curve), name
    final = json.loads((local_search / "metrics.json").read_text())
    assert s["val/semseg"][-1][1] == pytest.approx(final["primary"]["semseg"], rel=1e-5)
    assert s["val/delta_m"][-1][1] == pytest.approx(final["delta_m"], rel=1e-5)


def test_every_probability_series_sums_to_one_per_decision(local_search):
    s = _scalars(local_search / "tensorboard")
    decisions: dict[str, list] = {}
    for tag, series in s.items():
        if tag.startswith("prob/"):
            decisions.setdefault(tag[len("prob/"):].rsplit("/", 1)[0], []).append([v for _, v in series])
    for d, series in decisions.items():
        for values in zip(*series):
            assert sum(values) == pytest.approx(1.0, abs=1e-4), d


def test_mlflow_store_holds_the_metrics_and_the_config(tmp_path, cache_dir):
    mlflow = pytest.importorskip("mlflow")
    out = tmp_path / "train"
    assert main(["train", "--fast-dev-run", "--no-progress", "--set", f"data.cache_dir={cache_dir}", *LOG_EVERY,
                 "--set", "logging.mlflow=true", "--out", str(out)]) == 0
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("synthetic-mt-fast-dev")
    (run,) = client.search_runs([exp.experiment_id])
    curve = pd.read_csv(out / "train_curve.csv")
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == list(curve["step"])
    assert [round(m.value, 4) for m in history] == [round(v, 4) for v in curve["loss"]]
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert run.data.params["train.lr"] == str(cfg["train"]["lr"])
    assert run.data.params["data.tasks"] == str(cfg["data"]["tasks"])
    final = json.loads((out / "metrics.json").read_text())
    assert run.data.metrics["val/semseg"] == pytest.approx(final["primary"]["semseg"], rel=1e-6)
    assert run.info.status == "FINISHED"


def test_offline_wandb_needs_no_network(tmp_path, cache_dir, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "train"
    assert main(["train", "--fast-dev-run", "--no-progress", "--set", f"data.cache_dir={cache_dir}", *LOG_EVERY,
                 "--set", "logging.wandb=true", "--out", str(out)]) == 0
    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0


@pytest.mark.parametrize("extra", ["mlflow", "wandb"])
def test_missing_optional_extra_is_one_error_line(tmp_path, cache_dir, capsys, monkeypatch, extra):
    monkeypatch.setitem(sys.modules, extra, None)  # import fails as if not installed
    code = main(["train", "--fast-dev-run", "--no-progress", "--set", f"data.cache_dir={cache_dir}",
                 "--set", f"logging.{extra}=true", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"pip install 'trcnas[{extra}]'" in err[0] and f"logging.{extra}" in err[0]


def test_console_line_off_a_terminal(tmp_path, cache_dir, caplog):
    """stderr is not a terminal under pytest: no live bar, one console line per logging step (interval 0)."""
    caplog.set_level(logging.INFO, logger="trcnas")
    out = tmp_path / "s"
    assert main(["search", "--local", "--fast-dev-run", "--set", f"data.cache_dir={cache_dir}", *LOG_EVERY,
                 "--out", str(out)]) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "trcnas" and " step " in r.getMessage()
             and "validation" not in r.getMessage()]
    assert [ln.split(" step ")[1].split(",")[0] for ln in lines] == ["1/3", "2/3", "3/3"]
    assert all("frozen " in ln and "/16" in ln and "img/s" in ln and "ETA" in ln for ln in lines)


def test_no_console_line_with_no_progress(tmp_path, cache_dir, caplog):
    caplog.set_level(logging.INFO, logger="trcnas")
    assert main(["train", "--fast-dev-run", "--no-progress", "--set", f"data.cache_dir={cache_dir}", *LOG_EVERY,
                 "--out", str(tmp_path / "t")]) == 0
    assert not [r for r in caplog.records if " step " in r.getMessage()]


def test_loggers_change_no_result(tmp_path, cache_dir, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("WANDB_MODE", "offline")
    base = ["search", "--local", "--fast-dev-run", "--no-progress", "--set", f"data.cache_dir={cache_dir}"]
    assert main([*base, "--set", "logging.tensorboard=false", "--out", str(tmp_path / "off")]) == 0
    assert main([*base, *LOG_EVERY, "--set", "logging.mlflow=true", "--out", str(tmp_path / "on")]) == 0
    off, on = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("off", "on"))
    assert off["metrics"] == on["metrics"]
    assert (yaml.safe_load((tmp_path / "off" / "architecture.yaml").read_text())["choices"]
            == yaml.safe_load((tmp_path / "on" / "architecture.yaml").read_text())["choices"])
    assert not (tmp_path / "off" / "tensorboard").exists() and (tmp_path / "on" / "tensorboard").is_dir()


def test_cost_ledger_in_train_search_retrain(tmp_path, cache_dir, local_search):
    fast = ["--fast-dev-run", "--no-progress", "--set", f"data.cache_dir={cache_dir}"]
    assert main(["train", *fast, "--out", str(tmp_path / "t")]) == 0
    assert main(["retrain", *fast, "--architecture", str(local_search / "architecture.yaml"),
                 "--out", str(tmp_path / "r")]) == 0
    for run in (tmp_path / "t", local_search, tmp_path / "r"):
        cost = json.loads((run / "metrics.json").read_text())["cost"]
        assert cost["wall_s"] > 0 and cost["cpu_s"] > 0 and cost["peak_rss_mb"] > 100, (run, cost)
    arch = yaml.safe_load((local_search / "architecture.yaml").read_text())
    assert arch["search"]["cost"] == json.loads((local_search / "metrics.json").read_text())["cost"]


@pytest.mark.slow
def test_ray_trial_reports_every_logging_step_to_rays_tensorboard_logger(tmp_path, cache_dir):
    out = tmp_path / "exp"
    p = subprocess.run([sys.executable, "-m", "trcnas.runners.cli", "search", "--fast-dev-run", "--set",
                        f"data.cache_dir={cache_dir}", "--set", "train.log_every=1", "--set",
                        "logging.console_interval_s=0", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    (trial,) = [d for d in out.iterdir() if d.name.startswith("search_trial")]
    s = _scalars(trial)
    live = [v for _, v in s["ray/tune/total_steps"]]  # only the live reports carry the run's length
    assert len(live) == 3 + 1  # three logging steps and the final evaluation
    curve = pd.read_csv(trial / "run" / "train_curve.csv")
    losses = [round(v, 4) for _, v in s["ray/tune/loss"]]
    assert losses == [round(v, 4) for v in curve["loss"]]
    probs = {t[len("ray/tune/prob/"):] for t in s if t.startswith("ray/tune/prob/")}
    assert probs == _candidates(trial / "run")
    # the driver's console: one line per trial and logging step, no Ray status box off a terminal
    lines = [ln for ln in p.stderr.splitlines() if " step " in ln and "frozen" in ln]
    assert len(lines) == 3 and all("search synthetic-atrc-fast-dev (" in ln for ln in lines)
    assert "Trial status" not in p.stdout + p.stderr


def test_the_console_handler_writes_warnings_as_one_line_to_the_current_stderr(capsys):
    """What the package logs reaches a user's terminal: progress with its time, a warning as ``warning: …``, on
    whatever stderr is at the time (so a redirect after the handler was made still receives it)."""
    import logging

    from trcnas.nas.engine import live

    logger = logging.getLogger("trcnas")
    saved, root = (logger.handlers[:], logger.level), logging.getLogger().handlers[:]
    logger.handlers, logging.getLogger().handlers = [], []
    try:
        live.console_logging()
        logging.getLogger("trcnas.nas.engine.loop").warning("%s: the training loss rose", "run")
        logging.getLogger("trcnas.runners.compare").info("[1/2] planted seed 0 -> out")
        err = capsys.readouterr().err.splitlines()
        assert err[0] == "warning: run: the training loss rose"
        assert len(err) == 2 and err[1].endswith(" [1/2] planted seed 0 -> out") and err[1][2] == ":"
        live.console_logging(verbose=False)
        logging.getLogger("trcnas.runners.compare").info("hidden")
        assert capsys.readouterr().err == ""
    finally:
        logger.handlers, logging.getLogger().handlers = saved[0], root
        logger.setLevel(saved[1])
