import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import yaml

from trcnas.analysis import context
from trcnas.analysis.report import make_report
from trcnas.nas.engine.importance import importance_of, summarize
from trcnas.nas.genotype import from_genotype
from trcnas.nas.models.contract import DenseNetwork, PermutableUnit
from trcnas.nas.tasks import DatasetInfo, build_tasks

TASKS = ["semseg", "depth", "normals", "edge"]


class Planted(DenseNetwork):
    """depth <- normals carries the depth signal (encoded in image channel 0); depth <- depth is pure noise."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def permutable(self):
        return [PermutableUnit(("depth", "normals"), "depth", "normals", "global"),
                PermutableUnit(("depth", "depth"), "depth", "depth", "local")]

    def forward(self, image, hooks=None):
        hooks = hooks or {}
        signal = hooks.get(("depth", "normals"), lambda m: m)(image[:, :1] * self.scale)
        noise = hooks.get(("depth", "depth"), lambda m: m)(image[:, 1:2])
        b, _, h, w = image.shape
        normals = torch.zeros(b, 3, h, w)
        normals[:, 2] = 1
        return {"pred": {"depth": signal + 0.1 * noise, "normals": normals}, "aux": {}}


def test_importance_ranks_informative_source_above_noise():
    g = torch.Generator().manual_seed(0)
    n = 24
    depth = 1 + 4 * torch.rand(n, 1, 1, 1, generator=g).expand(n, 1, 8, 8)
    noise = torch.randn(n, 1, 8, 8, generator=g)
    image = torch.cat([depth, noise, torch.zeros(n, 1, 8, 8)], 1)
    normals = torch.nn.functional.normalize(torch.randn(n, 3, 8, 8, generator=g), dim=1)
    ds = [{"image": image[i], "depth": depth[i], "normals": normals[i], "index": torch.tensor(i)} for i in range(n)]
    tasks = build_tasks(["depth", "normals"], DatasetInfo("planted"))

    def loader():
        return torch.utils.data.DataLoader(ds, batch_size=5)

    rows, meta = importance_of(Planted(), loader, tasks, {}, repeats=3, seed=0, device="cpu")
    imp = pd.DataFrame(summarize(rows, ["depth", "normals"])).set_index("source")
    assert meta["delta_m_original"] == 0.0  # no single-task baselines: relative to the unpermuted network
    assert imp.loc["normals", "drop_delta_m_mean"] > 10 * max(imp.loc["depth", "drop_delta_m_mean"], 1e-3)
    assert imp.loc["normals", "drop_depth_mean"] > 0.5  # RMSE rises by metres when the signal is shuffled
    assert imp.loc["depth", "drop_normals_mean"] == pytest.approx(0.0)
    # deterministic for a seed
    rows2, _ = importance_of(Planted(), loader, tasks, {}, repeats=3, seed=0, device="cpu")
    assert rows == rows2


def _arch(seed):
    rng = np.random.default_rng(seed)
    codes = {t: {s: int(rng.choice([0, 1, 2, 3] if t == s else [0, 1, 2, 3, 4])) for s in TASKS} for t in TASKS}
    codes["semseg"]["depth"] = 1  # always global: full agreement on this pair
    return from_genotype({"data": codes})


def _fake_results(root, runs=3):
    for i in range(runs):
        d = root / f"search{i}"
        a = _arch(i)
        a.save(d / "architecture.yaml")
        hist = {"step": [0, 1, 2], "tau": [1.0, 0.5, 0.05], "entropy_weight": [-0.02, 0.02, 0.06]}
        for t in TASKS:
            for s in TASKS:
                for c in ("none", "global"):
                    hist[f"atrc.{t}.{s}:{c}"] = [0.5, 0.6, 0.7] if c == "global" else [0.5, 0.4, 0.3]
        pd.DataFrame(hist).to_csv(d / "alpha_history.csv", index=False)
        pd.DataFrame([{"step": 1, "decision": "atrc.semseg.depth", "choice": "global", "probability": 0.7,
                       "margin": 0.4}]).to_csv(d / "freeze_events.csv", index=False)
    imp = pd.DataFrame([{"target": t, "source": s, "context": "global", "drop_delta_m_mean": float(i + j),
                         "drop_delta_m_std": 0.1} for i, t in enumerate(TASKS) for j, s in enumerate(TASKS)])
    imp.to_csv(root / "importance.csv", index=False)
    return imp


def test_report_writes_figures_and_heatmap_equals_csv(tmp_path):
    imp = _fake_results(tmp_path)
    summary = make_report(tmp_path)
    fig = tmp_path / "figures"
    for name in ("importance_heatmap", "chosen_context", "context_proportions", "search_reliability",
                 "alpha_trajectories", "schedules"):
        png, pdf = fig / f"{name}.png", fig / f"{name}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
        assert pdf.read_bytes()[:5] == b"%PDF-"
    # figures with nothing to show are not written; the report says what each needs
    assert set(summary["not_drawn"]) == {"search_vs_retrain", "resources", "optuna"}
    assert "trcnas hpo" in summary["not_drawn"]["optuna"] and "trcnas table" in summary["not_drawn"]["resources"]
    assert not any(fig.glob("optuna.*")) and not any(fig.glob("resources.*"))
    m = pd.read_csv(fig / "importance_matrix.csv").set_index("target")
    for _, r in imp.iterrows():
        assert m.loc[r["target"], r["source"]] == pytest.approx(r["drop_delta_m_mean"])
    assert summary["importance_matrix"]["depth"]["semseg"] == pytest.approx(1.0)
    assert (fig / "importance_matrix.tex").read_text().startswith("\\begin{tabular}")
    rel = pd.read_csv(fig / "search_reliability.csv")
    assert rel.set_index(["target", "source"]).loc[("semseg", "depth"), "agreement"] == 100.0
    assert summary["reliability"]["runs"] == 3 and summary["reliability"]["pearson_r"] is not None
    props = pd.read_csv(fig / "context_proportions.csv").set_index("target")
    assert np.allclose(props.sum(axis=1), 100.0)
    assert json.loads((fig / "report.json").read_text())["search_runs"] == 3


def test_report_averages_the_importance_of_several_fitted_models(tmp_path):
    """Two retrains' importance.csv files: each pair's drop is the mean over the models with a block there
    (one model has none for edge <- semseg), its std the spread between them; an mTEB-like file with one pair
    at two scales is summed per pair first."""
    imp = _fake_results(tmp_path)
    other = imp.copy()
    other["drop_delta_m_mean"] = 3.0 * imp["drop_delta_m_mean"] + 1.0
    other = other[~((other["target"] == "edge") & (other["source"] == "semseg"))]
    (tmp_path / "seed1").mkdir()
    other.to_csv(tmp_path / "seed1" / "importance.csv", index=False)
    summary = make_report(tmp_path)
    assert summary["importance_models"] == 2
    m = pd.read_csv(tmp_path / "figures" / "importance_matrix.csv").set_index("target")
    for _, r in imp.iterrows():
        a = r["drop_delta_m_mean"]
        want = a if (r["target"], r["source"]) == ("edge", "semseg") else (a + 3.0 * a + 1.0) / 2
        assert m.loc[r["target"], r["source"]] == pytest.approx(want)
    from trcnas.analysis.loaders import read_importance

    avg, n = read_importance(tmp_path)
    row = avg.set_index(["target", "source"]).loc[("depth", "normals")]
    assert n == 2 and row["n_models"] == 2 and row["drop_delta_m_std"] == pytest.approx(abs(2.0 * 3.0 + 1.0) / 2)
    assert avg.set_index(["target", "source"]).loc[("edge", "semseg"), "n_models"] == 1
    scales = pd.DataFrame([{"target": "depth", "source": "semseg", "context": f"mTEB scale {k}",
                            "drop_delta_m_mean": v, "drop_delta_m_std": 0.0} for k, v in ((1, 0.5), (2, 1.5))])
    (tmp_path / "seed2").mkdir()
    scales.to_csv(tmp_path / "seed2" / "importance.csv", index=False)
    avg, n = read_importance(tmp_path)
    row = avg.set_index(["target", "source"]).loc[("depth", "semseg")]
    assert n == 3 and row["n_models"] == 3
    assert row["drop_delta_m_mean"] == pytest.approx((1.0 + 4.0 + 2.0) / 3)


def test_reliability_agreement_by_hand():
    a, b, c = _arch(0), _arch(0), _arch(1)
    rel = context.reliability([a.to_dict(), b.to_dict(), c.to_dict()]).set_index(["target", "source"])
    # pair agreement = share of the 3 run pairs with equal choices: 1/3 when only (a, b) agree
    ca, cc = a.choices["atrc"], c.choices["atrc"]
    for t in TASKS:
        for s in TASKS:
            want = 100.0 if ca[t][s] == cc[t][s] else 100.0 / 3
            assert rel.loc[(t, s), "agreement"] == pytest.approx(want)


def test_empty_dir_report_draws_nothing_and_says_what_each_figure_needs(tmp_path):
    from trcnas.analysis.report_md import not_drawn_line

    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "optuna.png").write_bytes(b"stale")  # an older report's figure goes too
    s = make_report(tmp_path)
    assert s["search_runs"] == 0 and not any((tmp_path / "figures").glob("*.png"))
    assert {"importance_heatmap", "search_reliability", "optuna"} <= set(s["not_drawn"])
    line = not_drawn_line(s)
    assert line.startswith("not drawn, nothing to show yet: ") and "search_reliability (needs at least two" in line


def test_report_md_puts_the_retrained_delta_m_beside_the_configs_reference_figures(tmp_path):
    import yaml

    run = tmp_path / "retrain"
    run.mkdir()
    arch = {"format": "trcnas-architecture/1", "space": "atrc", "tasks": ["semseg", "depth"],
            "choices": {"atrc": {"semseg": {"semseg": "global", "depth": "none"},
                                 "depth": {"semseg": "local", "depth": "global"}}}}
    (run / "metrics.json").write_text(json.dumps({"model": "atrc", "architecture": arch, "delta_m": 7.123,
                                                  "steps": 1000, "primary": {"semseg": 86.5, "depth": 0.41}}))
    ref = [{"label": "Multi-task baseline", "delta_m": 3.46, "std": 0.2, "seeds": 3, "source": "table 1, seeds 0-2"},
           {"label": "Best fixed", "delta_m": 6.97, "source": "one run"}]
    (run / "config.yaml").write_text(yaml.safe_dump({"seed": 4, "report": {"reference": ref}}))
    s = make_report(tmp_path, outputs={"retrain": run})
    md = (tmp_path / "figures" / "report.md").read_text()
    assert "report.md" in s["files"]
    row = "| this run: the chosen architecture retrained (1000 steps, seed 4) | +7.12 | 1 | `retrain/metrics.json` |"
    assert row in md
    assert "| Multi-task baseline | +3.46 ± 0.20 | 3 | table 1, seeds 0-2 |" in md
    assert "| Best fixed | +6.97 | 1 | one run |" in md
    assert "Per task (primary metric): semseg 86.5, depth 0.41." in md
    assert f"| retrain | `{run}` |" in md and "Not drawn, nothing to show yet: " in md
    assert "pairs recovered" not in md  # not the planted-relations benchmark
    # without single-task baselines the row says why there is no Delta_m; two retrains: no headline row
    (run / "metrics.json").write_text(json.dumps({"model": "atrc", "architecture": arch, "delta_m": None}))
    make_report(tmp_path)
    md = (tmp_path / "figures" / "report.md").read_text()
    assert "Δm is not computed: the config has no single-task `baselines`." in md
    run.rename(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "metrics.json").write_text((tmp_path / "a" / "metrics.json").read_text())
    make_report(tmp_path)
    assert "## The retrained network" not in (tmp_path / "figures" / "report.md").read_text()


def test_cached_encoder_gives_the_same_importance_as_full_forwards():
    from trcnas.nas.config import load_config
    from trcnas.nas.families import build_model

    g = torch.Generator().manual_seed(0)
    n = 10
    info = DatasetInfo("s", num_classes=9, normal_centroids=np.eye(3, dtype=np.float32))
    tasks = build_tasks(["semseg", "depth"], info)
    arch = from_genotype({"data": {"semseg": {"semseg": 3, "depth": 1}, "depth": {"semseg": 2, "depth": 0}}})
    cfg = load_config("synthetic-atrc", ["data.tasks=[semseg, depth]"])
    torch.manual_seed(0)
    model = build_model(cfg, tasks, architecture=arch).eval()
    for f in model.distill.fusion.values():  # the zero-initialised BN would hide every message: let them count
        nn.init.normal_(f.reduce[1].weight)
    ds = [{"image": torch.randn(3, 32, 32, generator=g), "semseg": torch.randint(0, 9, (32, 32), generator=g),
           "depth": 1 + torch.rand(1, 32, 32, generator=g), "index": torch.tensor(i)} for i in range(n)]

    def loader():
        return torch.utils.data.DataLoader(ds, batch_size=4)

    fast, _ = importance_of(model, loader, tasks, {}, repeats=2, seed=1, device="cpu")

    class NoSplit(DenseNetwork):  # same network, seen without encode/decode
        def __init__(self, m):
            super().__init__()
            self.m = m

        def permutable(self):
            return self.m.permutable()

        def forward(self, image, hooks=None):
            return self.m(image, hooks=hooks)

    slow, _ = importance_of(NoSplit(model), loader, tasks, {}, repeats=2, seed=1, device="cpu")
    assert len(fast) == 3 * 2  # three blocks (depth <- depth is none), two repeats
    # the cached path also re-evaluates only each block's target (the network declares its units feed only
    # their target); the full forward re-evaluates every task: identical rows, and the permutations do matter
    assert model.units_affect_only_their_target and not NoSplit(model).units_affect_only_their_target
    for a, b in zip(fast, slow):
        assert a["source"] == b["source"] and a["drop_delta_m"] == pytest.approx(b["drop_delta_m"], abs=1e-9)
        assert all(a[f"drop_{t}"] == pytest.approx(b[f"drop_{t}"], abs=1e-9) for t in ("semseg", "depth"))
    assert max(abs(r["drop_delta_m"]) for r in fast) > 1e-4


def test_report_of_named_decision_searches(tmp_path):
    """mTEB-style spaces get per-decision figures: chosen values, shares over runs, agreement."""
    runs = [{"scales": [1], "fusion": "add"}, {"scales": [1], "fusion": "prod"}, {"scales": [], "fusion": "add"}]
    for i, ch in enumerate(runs):
        d = tmp_path / f"run{i}"
        d.mkdir()
        (d / "architecture.yaml").write_text(yaml.safe_dump({"format": "trcnas-architecture/1", "space": "mteb",
                                                             "tasks": ["semseg", "depth"], "choices": {"mteb": ch}}))
        (d / "alpha_history.csv").write_text("step,tau,entropy_weight,mteb.fusion:add\n0,1.0,0.0,0.5\n")
    s = make_report(tmp_path)
    figs = tmp_path / "figures"
    for name in ("chosen_decisions", "decision_proportions", "decision_reliability"):
        assert (figs / f"{name}.png").stat().st_size > 0 and (figs / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
    rel = pd.read_csv(figs / "decision_reliability.csv").set_index("decision")["agreement"]
    assert rel["mteb.fusion"] == pytest.approx(100 / 3) and rel["mteb.scales"] == pytest.approx(100 / 3)
    share = pd.read_csv(figs / "decision_proportions.csv")
    row = share[(share["decision"] == "mteb.scales") & (share["choice"] == "-")]
    assert float(row["share"].iloc[0]) == pytest.approx(100 / 3)
    assert s["reliability"]["runs"] == 3


def test_a_ray_trial_counts_once(tmp_path):
    """A trial holds its run directory and checkpoint copies of it: one search run, not three."""
    from trcnas.analysis.loaders import search_runs

    trial = tmp_path / "exp" / "search_trial_0"
    for d in ("run", "checkpoint_000000", "checkpoint_000001"):
        (trial / d).mkdir(parents=True)
        (trial / d / "architecture.yaml").write_text("x")
        (trial / d / "alpha_history.csv").write_text("x")
    (trial / "params.json").write_text("{}")
    local = tmp_path / "local"
    local.mkdir()
    (local / "architecture.yaml").write_text("x")
    (local / "alpha_history.csv").write_text("x")
    assert search_runs(tmp_path) == sorted([trial / "run", local])
    (trial / "run" / "alpha_history.csv").unlink()  # a trial whose run dir is elsewhere: its newest checkpoint
    assert search_runs(tmp_path) == sorted([trial / "checkpoint_000001", local])


def test_decision_titles_name_mteb_scales_as_the_paper():
    from trcnas.analysis.style import decision_label

    assert decision_label("mteb.scales.1") == "scale 1 (1/2)"
    assert decision_label("mteb.scales.4") == "scale 4 (1/16)"
    assert decision_label("mteb.fusion") == "fusion"
    assert "←" in decision_label("atrc.semseg.depth")


def test_report_of_a_folder_with_two_spaces_a_named_single_objective_study_and_tiny_values(tmp_path):
    """ATRC and mTEB searches side by side (an hpo folder) get their figures per space; the importance matrix's
    empty pairs (NaN) are null in report.json; a single named objective (Optuna's ``value_<name>`` column)
    is plotted; 1e-6 is not printed as 0.00."""
    imp = _fake_results(tmp_path, runs=2)
    imp = imp[~((imp["target"] == "edge") & (imp["source"] == "semseg"))].copy()  # a pair without a block
    imp.loc[imp.index[0], "drop_delta_m_mean"] = 1e-6
    imp.to_csv(tmp_path / "importance.csv", index=False)
    for i, ch in enumerate([{"scales": [1], "fusion": "add"}, {"scales": [2], "fusion": "add"}]):
        d = tmp_path / "mteb" / f"run{i}"
        d.mkdir(parents=True)
        (d / "architecture.yaml").write_text(yaml.safe_dump({"format": "trcnas-architecture/1", "space": "mteb",
                                                             "tasks": TASKS, "choices": {"mteb": ch}}))
        (d / "alpha_history.csv").write_text("step,tau,entropy_weight,mteb.fusion:add\n0,1.0,0.0,0.5\n")
    study = tmp_path / "study"
    study.mkdir()
    pd.DataFrame({"number": [0, 1, 2], "value_delta_m": [1.0, 3.0, 2.0], "params_search.alpha_lr": [.1, .2, .3],
                  "state": ["COMPLETE", "COMPLETE", "COMPLETE"]}).to_csv(study / "trials.csv", index=False)
    (study / "study.json").write_text(json.dumps({"objectives": ["delta_m"], "directions": ["maximize"]}))
    s = make_report(tmp_path)
    figs = tmp_path / "figures"
    assert set(s["spaces"]) == {"atrc", "mteb"}
    assert s["spaces"]["atrc"]["search_runs_of_space"] == 2 and s["spaces"]["mteb"]["search_runs_of_space"] == 2
    assert (figs / "atrc" / "context_proportions.csv").is_file()
    assert (figs / "mteb" / "decision_proportions.csv").is_file()
    assert s["study"]["history_points"] == 3
    text = (figs / "report.json").read_text()
    parsed = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in report.json"))
    assert parsed["importance_matrix"]["semseg"]["edge"] is None
    assert "1.0e-06" in (figs / "importance_matrix.md").read_text()


def test_no_data_text_stays_inside_its_panel():
    from trcnas.analysis.style import no_data, plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    for ax in axes:
        no_data(ax, "param_importances.csv of an Optuna study with at least two complete trials (run `trcnas hpo`)")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in axes:
        box, text = ax.get_window_extent(renderer), ax.texts[0].get_window_extent(renderer)
        assert box.x0 <= text.x0 and text.x1 <= box.x1, (box, text)
    plt.close(fig)


def test_heatmap_annotation_keeps_small_values():
    from trcnas.analysis.style import annotation, number

    assert annotation(1e-6) == "1.0e-06" and annotation(0.0) == "0.00" and annotation(2.345) == "2.35"
    assert annotation(float("nan")) == "" and number(4e-4, "%.3f") == "4.0e-04" and number(4e-3, "%.3f") == "0.004"


def test_reliability_reports_top_connections_and_both_correlations(tmp_path):
    from scipy import stats

    imp = _fake_results(tmp_path, runs=3)
    s = make_report(tmp_path)["reliability"]
    rel = pd.read_csv(tmp_path / "figures" / "search_reliability.csv")
    merged = rel.merge(imp, on=["target", "source"])
    assert s["n_pairs"] == len(merged) == 16
    rho, p = stats.spearmanr(merged["drop_delta_m_mean"], merged["agreement"])
    assert s["spearman_rho"] == pytest.approx(rho) and s["spearman_p"] == pytest.approx(p)
    top = [(r["target"], r["source"]) for r in s["top_k"]]
    assert top[0] == ("edge", "edge") and set(top[1:]) == {("edge", "normals"), ("normals", "edge")}
    archs = [_arch(i) for i in range(3)]
    for r in s["top_k"]:  # identical_runs: how many of the 3 runs chose the majority context, counted by hand
        picks = [a.choices["atrc"][r["target"]][r["source"]] for a in archs]
        assert r["identical_runs"] == max(picks.count(c) for c in set(picks)) and r["runs"] == 3


def test_report_cli_takes_importance_from_elsewhere_and_refuses_a_missing_path(tmp_path, capsys):
    """Searches in one folder, the retrains' importance in another (a reliability study): --importance
    replaces the (here: decoy) importance.csv under DIR; a missing path is one error line, exit 2."""
    from trcnas.runners.cli import main

    searches = tmp_path / "searches"
    imp = _fake_results(searches, runs=3)
    decoy = imp.copy()
    decoy["drop_delta_m_mean"] = 0.0
    decoy.to_csv(searches / "importance.csv", index=False)
    retrain = tmp_path / "retrains" / "seed0"
    retrain.mkdir(parents=True)
    imp.to_csv(retrain / "importance.csv", index=False)
    assert main(["report", str(searches), "--importance", str(tmp_path / "retrains")]) == 0
    report = json.loads((searches / "figures" / "report.json").read_text())
    assert report["importance_models"] == 1
    assert report["reliability"]["top_k"][0]["importance"] == pytest.approx(6.0)  # edge <- edge: 3 + 3
    capsys.readouterr()
    assert main(["report", str(searches), "--importance", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "nowhere" in err[0]
    (tmp_path / "empty").mkdir()
    assert main(["report", str(searches), "--importance", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no importance.csv" in err[0]


def test_fleiss_kappa_by_hand_and_in_the_report(tmp_path):
    """Three searches, two decisions: d1 = a, a, b (agreement 1/3), d2 = a, a, a (1): observed 2/3; pooled
    shares a 5/6, b 1/6, chance 26/36; kappa = (2/3 - 13/18) / (5/18) = -0.2. All alike: chance 1, kappa None."""
    from trcnas.analysis.agreement import fleiss_kappa

    runs = [{"g": {"d1": "a", "d2": "a"}}, {"g": {"d1": "a", "d2": "a"}}, {"g": {"d1": "b", "d2": "a"}}]
    k = fleiss_kappa(runs)
    assert k["observed"] == pytest.approx(2 / 3) and k["chance"] == pytest.approx(26 / 36)
    assert k["kappa"] == pytest.approx(-0.2)
    assert fleiss_kappa(runs[:2] + [runs[0]])["kappa"] is None
    assert fleiss_kappa([{"g": {"d": "a"}}, {"g": {"d": "b"}}])["kappa"] == pytest.approx(-1.0)
    _fake_results(tmp_path, runs=3)
    rel = make_report(tmp_path)["reliability"]
    want = fleiss_kappa([_arch(i).to_dict()["choices"] for i in range(3)])
    assert rel["fleiss_kappa"] == pytest.approx(want["kappa"])
    assert rel["chance_agreement"] == pytest.approx(100.0 * want["chance"])
    assert rel["mean_agreement"] == pytest.approx(100.0 * want["observed"])


def test_report_skips_unreadable_architecture_files(tmp_path):
    _fake_results(tmp_path, runs=2)
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "architecture.yaml").write_text("choices: [\n")  # malformed YAML
    (bad / "alpha_history.csv").write_text("step\n0\n")
    s = make_report(tmp_path)
    assert s["search_runs"] == 2 and s["reliability"]["runs"] == 2


def test_analysis_finds_pairwise_choices_by_the_space_not_by_its_name():
    """A space decided per task pair under any group name (a user's, embedded in the architecture) is read as
    target x source choices; a space decided otherwise (mTEB) is not, whatever its choices look like."""
    from trcnas.analysis.loaders import pair_choices, pair_group, pair_rows
    from trcnas.analysis.style import decision_label

    own = {"format": "trcnas-space/1", "name": "mine", "group": "ctx", "per": "task_pair",
           "candidates": ["none", "global", "local"]}
    arch = {"space": "mine", "space_spec": own, "choices": {"ctx": {"semseg": {"semseg": "none", "depth": "local"}}}}
    assert pair_group(arch) == "ctx"
    assert pair_choices(arch) == {("semseg", "semseg"): "none", ("semseg", "depth"): "local"}
    shipped = {"space": "atrc", "choices": {"atrc": {"depth": {"edge": "global"}}}}
    assert pair_rows(shipped) == {"depth": {"edge": "global"}}
    mteb = {"space": "mteb", "choices": {"mteb": {"semseg": {"depth": "x"}}}}
    assert pair_group(mteb) is None and pair_choices(mteb) == {}
    assert pair_group({"space": "no-such-space", "choices": {"atrc": {}}}) is None
    assert decision_label("ctx.semseg.depth") == "SemSeg ← Depth"
    assert decision_label("mteb.scales.1") == "scale 1 (1/2)"
