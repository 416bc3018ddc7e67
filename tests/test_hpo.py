"""Optuna studies in a real RDB storage, read back by the real optuna-dashboard server on loopback."""

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest

from trcnas.runners.cli import main


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def served_dashboard(storage: str):
    """`trcnas dashboard` on a free loopback port; yields (the study summaries it lists, get(path) -> JSON)."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "trcnas.runners.cli", "dashboard", "--storage", storage, "--port",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                studies = _get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    pytest.fail("optuna-dashboard did not start")
                time.sleep(0.5)
        yield studies, lambda path: _get(f"http://127.0.0.1:{port}{path}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_hpo_study_is_served_by_optuna_dashboard(tmp_path, fast_args, capsys):
    db = f"sqlite:///{tmp_path / 'optuna.db'}"
    out = tmp_path / "hpo"
    argv = ["hpo", "--storage", db, "--study-name", "s1", "--out", str(out), *fast_args,
            "--set", "baselines={semseg: 5.0, depth: 4.0, normals: 50.0, edge: 5.0}"]
    assert main(argv) == 0
    assert "%|" not in capsys.readouterr().err  # --no-progress hides Optuna's bar too
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 2 and set(trials["state"]) == {"COMPLETE"}
    assert (out / "best.yaml").exists()
    assert main([*argv, "--n-trials", "1"]) == 0  # same name: the study resumes
    assert len(pd.read_csv(out / "trials.csv")) == 3

    with served_dashboard(db) as (studies, get):
        assert [s["study_name"] for s in studies] == ["s1"]
        detail = get(f"/api/studies/{studies[0]['study_id']}")
        assert len(detail["trials"]) == 3
        t0 = detail["trials"][0]
        names = {p["name"] for p in t0["params"]}
        assert {"search.alpha_lr", "search.freeze_threshold", "loss_weights.edge"} <= names
        value_col = next(c for c in trials.columns if c.startswith("value"))  # "values_delta_m" when named
        assert len(t0["values"]) == 1 and t0["values"][0] == pytest.approx(trials[value_col][0])
        assert detail["objective_names"] == ["delta_m"]


def test_multi_objective_exports_pareto_front(tmp_path, fast_args):
    out = tmp_path / "mo"
    argv = ["hpo", "--storage", f"journal:{tmp_path / 'journal.log'}", "--out", str(out), *fast_args,
            "--set", "hpo.objectives=[val/semseg, params_M]", "--set", "hpo.directions=[maximize, minimize]"]
    assert main(argv) == 0
    front = pd.read_csv(out / "pareto.csv")
    assert 1 <= len(front) <= 2 and {"val/semseg", "params_M", "search.alpha_lr"} <= set(front.columns)
    for f in front["architecture"]:
        assert (out / "pareto").exists() and f.endswith(".yaml")
    from trcnas.analysis.report import make_report

    rep = make_report(out)
    assert "optuna.png" in rep["files"] and (out / "figures" / "optuna.pdf").stat().st_size > 0


def test_bad_storage_is_one_line(tmp_path, capsys, fast_args):
    assert main(["hpo", "--storage", "nosuchdb://x", "--out", str(tmp_path), *fast_args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot open Optuna storage" in err[0]


def test_mean_agreement_by_hand():
    from trcnas.analysis.agreement import mean_agreement

    a = {"atrc": {"s": {"d": "global", "n": "local"}}, "mteb": {"scales": [1, 2]}}
    b = {"atrc": {"s": {"d": "global", "n": "none"}}, "mteb": {"scales": [1, 2]}}
    c = {"atrc": {"s": {"d": "local", "n": "none"}}, "mteb": {"scales": [1]}}
    # per decision, agreeing pairs of (a,b), (a,c), (b,c): d 1/3, n 1/3, scales 1/3
    assert mean_agreement([a, b, c]) == pytest.approx(100 / 3)
    assert mean_agreement([a, a]) == 100.0


def test_a_reliability_objective_runs_several_searches_per_trial(tmp_path, fast_args):
    from trcnas.analysis.agreement import mean_agreement
    from trcnas.spaces import load_architecture

    out = tmp_path / "hpo"
    argv = ["hpo", "--storage", f"sqlite:///{tmp_path / 'o.db'}", "--out", str(out), "--n-trials", "1",
            *fast_args, "--set", "hpo.seeds=2", "--set", "hpo.objectives=[agreement, val/semseg]",
            "--set", "hpo.directions=[maximize, maximize]"]
    assert main(argv) == 0
    trial = out / "trial_0000"
    archs = [load_architecture(trial / f"seed{k}" / "architecture.yaml") for k in (0, 1)]
    assert [a.search["seed"] for a in archs] == [0, 1]
    row = pd.read_csv(out / "trials.csv").iloc[0]
    assert row["values_agreement"] == pytest.approx(mean_agreement([a.choices for a in archs]))
    semseg = [json.loads((trial / f"seed{k}" / "metrics.json").read_text())["primary"]["semseg"] for k in (0, 1)]
    assert row["values_val/semseg"] == pytest.approx(sum(semseg) / 2)


def test_shipped_reliability_study_fast_dev_run_pins_the_step_counts(tmp_path, fast_args):
    out = tmp_path / "rel"
    argv = ["hpo", "--config", "synthetic-atrc-reliability", "--storage", f"sqlite:///{tmp_path / 'r.db'}", "--out",
            str(out), "--n-trials", "1", *fast_args, "--set", "hpo.seeds=2"]
    assert main(argv) == 0
    row = pd.read_csv(out / "trials.csv").iloc[0]
    assert row["params_search.steps"] in (600, 1200) and row["state"] == "COMPLETE"
    for k in (0, 1):  # suggested 600 or 1200 steps, ran the fast-dev 3
        assert json.loads((out / "trial_0000" / f"seed{k}" / "metrics.json").read_text())["steps"] == 3
    assert 0.0 <= row["values_agreement"] <= 100.0


@pytest.mark.parametrize("spec, msg", [
    ({"type": "gauss", "low": 1, "high": 2}, "hpo.params.train.lr.type must be one of float, int, categorical, grid"),
    ({"low": 1}, "hpo.params.train.lr.type must be one of"),
    ({"type": "float", "low": 1, "high": 0.1}, "hpo.params.train.lr: low 1.0 is above high 0.1"),
    ({"type": "float", "low": 0, "high": 0.1, "log": True}, "hpo.params.train.lr: log: true needs low > 0"),
    ({"type": "int", "low": 0.5, "high": 3}, "hpo.params.train.lr.low must be an integer, got 0.5"),
    ({"type": "float", "low": True, "high": 3}, "hpo.params.train.lr.low must be a number, got True"),
    ({"type": "float", "low": 1, "high": 3, "step": 2},
     "hpo.params.train.lr: unknown field 'step' for type float; use high, log, low, type"),
    ({"type": "categorical", "choices": []}, "hpo.params.train.lr.choices must be a non-empty list, got []"),
    ({"type": "float", "low": 1, "high": 3, "log": "yes"}, "hpo.params.train.lr.log must be true or false"),
    ({"type": "float", "high": 3}, "hpo.params.train.lr.low is missing"),
    ({"randint": [0.5, 3]}, "randint needs integers [low, high)"),
    (3, "hpo.params.train.lr must be a mapping such as"),
])
def test_a_bad_range_is_one_line_naming_its_field(spec, msg):
    from trcnas.nas.errors import UserError
    from trcnas.runners.params import parse_param

    with pytest.raises(UserError) as e:
        parse_param("train.lr", spec, "hpo.params")
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_ranges_and_shorthands_parse_to_one_format():
    from trcnas.runners.params import Param, parse_param

    assert parse_param("k", {"type": "float", "low": 0.001, "high": 0.1, "log": True}, "w") == \
        parse_param("k", {"loguniform": [0.001, 0.1]}, "w") == Param("k", "float", 0.001, 0.1, True)
    assert parse_param("k", {"randint": [0, 401]}, "w") == parse_param("k", {"type": "int", "low": 0, "high": 400},
                                                                        "w") == Param("k", "int", 0, 400)
    assert parse_param("k", {"choice": ["a", "b"]}, "w").values == ("a", "b")
    assert parse_param("k", {"grid": [1, 2]}, "w") == Param("k", "grid", values=(1, 2))
