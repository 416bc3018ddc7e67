"""``trcnas compare``: multi-seed runs per variant, mean ± std tables, finished runs kept, bad files rejected."""

import json
import math

import pandas as pd
import pytest
import yaml

from trcnas.runners.cli import main


def _spec(tmp_path, **extra):
    spec = {"name": "t", "config": "synthetic-mteb", "seeds": [0, 1],
            "variants": [{"name": "plain", "label": "Plain", "architecture": "fixed:off"},
                         {"name": "mt", "label": "MT", "config": "synthetic-mt"}], **extra}
    p = tmp_path / "cmp.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def test_compare_runs_every_seed_and_resumes_only_what_is_missing(tmp_path, fast_args, capsys):
    spec, out = _spec(tmp_path), tmp_path / "out"
    assert main(["compare", str(spec), "--out", str(out), *fast_args]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(zip(runs["variant"], runs["seed"])) == [("mt", 0), ("mt", 1), ("plain", 0), ("plain", 1)]
    # seeds differ in initialisation and batches, so the runs differ
    plain = runs[runs["variant"] == "plain"]
    assert plain["delta_m"].nunique() == 2
    summary = pd.read_csv(out / "summary.csv").set_index("variant")
    assert summary.loc["plain", "n"] == 2
    assert summary.loc["plain", "delta_m_mean"] == pytest.approx(plain["delta_m"].mean())
    assert summary.loc["plain", "delta_m_std"] == pytest.approx(plain["delta_m"].std(ddof=1))
    md = (out / "summary.md").read_text()
    m = json.loads((out / "plain" / "seed1" / "metrics.json").read_text())
    # every run records its network's cost at the training size; the table shows the mean over seeds
    assert m["params_M"] > 0 and m["madds_G"] > 0
    assert summary.loc["plain", "params_M_mean"] == pytest.approx(m["params_M"])
    assert f"| Plain | 2 | {m['params_M']:.3f} | {m['madds_G']:.3f} |" in md and " ± " in md
    mt = json.loads((out / "mt" / "seed0" / "metrics.json").read_text())
    assert mt["params_M"] != m["params_M"]
    # training curves: per variant and logged step, the mean over seeds of the runs' own loss
    curves = pd.read_csv(out / "training_curves.csv")
    own = [pd.read_csv(out / "plain" / f"seed{s}" / "train_curve.csv").set_index("step")["loss"] for s in (0, 1)]
    plain_c = curves[curves["variant"] == "plain"].set_index("step")
    assert list(plain_c.index) == list(own[0].index) and (plain_c["seeds"] == 2).all()
    assert plain_c["loss_mean"].to_numpy() == pytest.approx(((own[0] + own[1]) / 2).to_numpy())
    assert (plain_c["smooth_min"] <= plain_c["smooth_mean"] + 1e-12).all()
    assert (out / "training_curves.png").stat().st_size > 0
    assert m["architecture"]["choices"]["mteb"]["scales"] == []
    # a second call keeps finished runs; a missing one is run again
    kept = (out / "plain" / "seed0" / "metrics.json").stat().st_mtime_ns
    (out / "mt" / "seed1" / "metrics.json").unlink()
    capsys.readouterr()
    assert main(["compare", str(spec), "--out", str(out), *fast_args]) == 0
    assert (out / "plain" / "seed0" / "metrics.json").stat().st_mtime_ns == kept
    assert (out / "mt" / "seed1" / "metrics.json").is_file()
    assert "4 finished run(s)" in capsys.readouterr().out
    # a run finished before runs recorded their cost gets it counted from its config and architecture
    f = out / "plain" / "seed1" / "metrics.json"
    f.write_text(json.dumps({k: v for k, v in m.items() if k not in ("params_M", "madds_G")}))
    assert main(["compare", str(spec), "--out", str(out), *fast_args]) == 0
    again = json.loads(f.read_text())
    assert again["params_M"] == pytest.approx(m["params_M"]) and again["madds_G"] == pytest.approx(m["madds_G"])
    assert again["primary"] == m["primary"]


@pytest.mark.parametrize("bad, msg", [
    ({"seeds": [-1]}, "seeds must be"),
    ({"variants": []}, "variants"),
    ({"variants": [{"name": "a"}, {"name": "a"}]}, "unique"),
    ({"variants": [{"name": "a", "arch": "x"}]}, "unknown key"),
    ({"variants": [{"name": "a", "set": ["train.steps=-3x"]}]}, "train.steps"),
    ({"baseline": "st"}, "baseline 'st' is not one of the variants"),
    ({"variants": [{"name": "a", "retrain": False}]}, "`retrain` (true or false) goes with `architecture: search`"),
    ({"variants": [{"name": "a", "architecture": "search", "retrain": "no"}]}, "`retrain`"),
    ({"variants": [{"name": "a b"}]}, "variants.0.name must be letters, digits and _"),
    ({"variants": [{"label": "x"}]}, "variants.0.name is missing"),
    ({"variants": [{"name": "a", "set": "train.steps=3"}]}, "variants.0.set must be a list, got 'train.steps=3'"),
    ({"expand": "all_pairs"}, "expand must be one of planted_pairs, got 'all_pairs'"),
    ({"expand": "planted_pairs"}, "expand: planted_pairs needs exactly one variant with `architecture: planted`"),
    ({"seeds": [True]}, "seeds must be a list of non-negative integers"),
    ({"budget": 3}, "unknown key 'budget'; use baseline, config, expand, name, seeds, set, variants"),
])
def test_bad_comparison_files_are_one_error_line(tmp_path, capsys, bad, msg):
    spec = _spec(tmp_path, **bad)
    assert main(["compare", str(spec), "--out", str(tmp_path / "o"), "--fast-dev-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and msg in err[0]
    assert not (tmp_path / "o" / "a").exists()


def test_inline_architectures_and_shipped_comparisons_load(tmp_path, fast_args):
    from trcnas.runners.compare import SHIPPED, load_comparison, variant_config

    d3 = {"composite": {"embedding_depth": 3, "embedding_width": 32}}
    spec = _spec(tmp_path, config="synthetic-composite", seeds=[0], variants=[{"name": "d3", "architecture": d3}])
    out = tmp_path / "out"
    assert main(["compare", str(spec), "--out", str(out), *fast_args]) == 0
    m = json.loads((out / "d3" / "seed0" / "metrics.json").read_text())
    assert m["architecture"]["choices"]["composite"] == {"embedding_depth": 3, "embedding_width": 32}
    bad = _spec(tmp_path, config="synthetic-composite",
                variants=[{"name": "d4", "architecture": {"composite": {"embedding_depth": 4, "embedding_width": 32}}}])
    assert main(["compare", str(bad), "--out", str(tmp_path / "o2"), *fast_args]) == 2
    for f in sorted(SHIPPED.glob("*.yaml")):  # every shipped comparison is valid, with every config it names
        spec = load_comparison(f.stem)
        for v in spec["variants"]:
            variant_config(spec, v, spec["seeds"][0])


def test_delta_m_against_a_baseline_variant_is_taken_from_its_mean_by_hand():
    from trcnas.analysis.compare import rebase_delta_m, summarise

    runs = pd.DataFrame([
        {"variant": "st", "label": "ST", "seed": 0, "semseg": 80.0, "depth": 0.5, "delta_m": 9.9},
        {"variant": "st", "label": "ST", "seed": 1, "semseg": 60.0, "depth": 0.3, "delta_m": 9.9},
        {"variant": "mt", "label": "MT", "seed": 0, "semseg": 77.0, "depth": 0.36, "delta_m": 9.9},
    ])
    ref = rebase_delta_m(runs, "st", ["semseg", "depth"], {"semseg": "higher", "depth": "lower"})
    assert ref == {"semseg": 70.0, "depth": pytest.approx(0.4)}
    # mt: semseg +10 %, depth 0.36 vs 0.4 is 10 % lower (better): mean +10 %
    assert runs.loc[2, "delta_m"] == pytest.approx(10.0)
    # the baseline's own seeds scatter around 0 and average to 0 only when the metrics are symmetric
    assert runs.loc[0, "delta_m"] == pytest.approx((80 / 70 - 1) * 50 + (1 - 0.5 / 0.4) * 50)
    s = summarise(runs, ["semseg", "depth"]).set_index("variant")
    assert s.loc["mt", "delta_m_mean"] == pytest.approx(10.0)
    empty = runs[runs["variant"] == "mt"].copy()
    assert rebase_delta_m(empty, "st", ["semseg", "depth"], {"semseg": "higher", "depth": "lower"}) == {}
    assert empty["delta_m"].isna().all()


def test_a_search_only_variant_is_its_search(tmp_path, fast_args):
    """``retrain: false``: the run is the search; its metrics (the argmax subgraph's at the end of the search)
    and its architecture are the comparison's, and nothing is retrained."""
    spec = _spec(tmp_path, config="synthetic-atrc", seeds=[0, 1],
                 variants=[{"name": "s", "label": "Search", "architecture": "search", "retrain": False}])
    out = tmp_path / "out"
    assert main(["compare", str(spec), "--out", str(out), *fast_args]) == 0
    runs = pd.read_csv(out / "runs.csv")
    for seed in (0, 1):
        d = out / "s" / f"seed{seed}"
        assert not (d / "retrain").exists() and (d / "search" / "architecture.yaml").is_file()
        m = json.loads((d / "search" / "metrics.json").read_text())
        row = runs[runs["seed"] == seed].iloc[0]
        assert row["semseg"] == pytest.approx(m["primary"]["semseg"]) and row["choices"].startswith("semseg.")


def test_a_run_whose_loss_rose_at_the_end_is_named_under_the_table(tmp_path):
    from trcnas.analysis.compare import write_comparison
    from trcnas.nas.curves import loss_rise

    spec = {"name": "t", "seeds": [0, 1], "baseline": None,
            "variants": [{"name": "w512", "label": "width 512"}]}
    steps = list(range(0, 3000, 10))
    flat = [3.0 - i / len(steps) for i in range(len(steps))]  # falls 3 -> 2, still falling at the end
    spiked = flat[:-15] + [30.0] * 5 + [1500.0] * 10  # the last 15 logged steps blow up (5 % of the curve)
    for seed, loss in ((0, spiked), (1, flat)):
        d = tmp_path / "w512" / f"seed{seed}"
        d.mkdir(parents=True)
        pd.DataFrame({"step": steps, "loss": loss}).to_csv(d / "train_curve.csv", index=False)
        (d / "metrics.json").write_text(json.dumps({
            "primary": {"semseg": 80.0 + seed}, "directions": {"semseg": "higher"}, "delta_m": -5.0 - seed,
            "steps": 3000, "wall_s": 1.0}))
    write_comparison(tmp_path, spec)
    runs = pd.read_csv(tmp_path / "runs.csv").set_index("seed")
    # last 30 logged steps (10 %): mean (15 * 2.05 + 5 * 30 + 10 * 1500) / 30 against the best window, the last
    # 30 of the smooth curve's falling part
    best = sum(flat[-45:-15]) / 30
    assert runs.loc[0, "loss_rise"] == pytest.approx((sum(spiked[-30:]) / 30) / best)
    assert runs.loc[0, "loss_rise"] > 200
    assert runs.loc[1, "loss_rise"] == pytest.approx(1.0)  # a falling curve ends at its best
    md = (tmp_path / "summary.md").read_text()
    assert "width 512 seed 0 (x" in md and "seed 1" not in md.split("Training loss at the end")[1]
    # the metrics stay in the table: the mean covers both seeds
    assert pd.read_csv(tmp_path / "summary.csv").loc[0, "n"] == 2
    assert math.isnan(loss_rise([]))  # no logged loss, no figure


def test_a_training_records_its_loss_rise_and_warns_above_the_limit(tmp_path, fast_args, caplog, monkeypatch):
    from trcnas.nas.curves import loss_rise
    from trcnas.nas.engine import loop

    out = tmp_path / "run"
    assert main(["train", "--config", "synthetic-mt", "--out", str(out), *fast_args]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["loss_rise"] == pytest.approx(loss_rise(pd.read_csv(out / "train_curve.csv")["loss"]))
    assert m["loss_rise"] >= 1.0 and not [r for r in caplog.records if r.levelname == "WARNING"]
    monkeypatch.setattr(loop, "LOSS_RISE", 0.5)  # every curve is above half its best
    assert main(["train", "--config", "synthetic-mt", "--out", str(tmp_path / "run2"), *fast_args]) == 0
    err = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(err) == 1 and "the training loss ended at" in err[0] and str(tmp_path / "run2") in err[0]
    assert (tmp_path / "run2" / "metrics.json").is_file()
