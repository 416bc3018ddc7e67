"""The planted-relations benchmark (nas/data/relations.py): each planted type ties a target's label to its source
the way the type says and no other way; the matrix is config, checked with one error line; samples are a
function of (seed, index, matrix); the shipped config trains, searches and retrains."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trcnas.nas.config import load_config
from trcnas.nas.data.relations import (
    LAYERS,
    TYPES,
    Layers,
    RelationGenerator,
    build_cache,
    check_relations,
    relation_bits,
)
from trcnas.runners.cli import main

SIZE = (64, 64)


def _matrix(typ: str, target="red", source="green") -> dict:
    m = {t: {s: "none" for s in LAYERS} for t in LAYERS}
    m[target][source] = typ
    return m


def _disc(cy, cx, r, size=SIZE) -> np.ndarray:
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _layers(**masks) -> Layers:
    empty = np.zeros(SIZE, bool)
    return Layers({n: masks.get(n, empty).copy() for n in LAYERS}, {n: False for n in LAYERS})


def _target(gen: RelationGenerator, lay: Layers, target="red") -> np.ndarray:
    return gen.labels(lay)[target]


def test_shipped_matrix_uses_every_type_at_least_twice():
    cfg = load_config("synthetic-relations")
    rel = check_relations(cfg.data.relations, cfg.data.tasks)
    counts = {t: sum(v == t for row in rel.values() for v in row.values()) for t in TYPES}
    assert all(n >= 2 for n in counts.values()), counts
    assert len(rel) * len(cfg.data.tasks) == 16


def test_none_never_changes_the_target():
    gen = RelationGenerator(list(LAYERS), _matrix("none"), SIZE)
    rng = np.random.default_rng(0)
    base = gen.layers(0, 3)
    before = gen.labels(base)["red"]
    for _ in range(5):  # any change of the source: its blobs anywhere, its brightness
        base.masks["green"] = rng.random(SIZE) < rng.uniform(0, 0.6)
        base.bright["green"] = not base.bright["green"]
        assert np.array_equal(gen.labels(base)["red"], before)
    assert relation_bits(gen.relations, "red") == []


def test_global_flips_with_a_change_anywhere():
    gen = RelationGenerator(list(LAYERS), _matrix("global"), SIZE)
    red = _disc(10, 10, 6)
    # the source's coverage just under the median: one far-away pixel more or less decides the whole image
    n = int(np.floor(gen.coverage_median * SIZE[0] * SIZE[1]))
    green = np.zeros(SIZE, bool)
    green.flat[np.arange(n)] = True
    lay = _layers(red=red, green=green)
    assert (_target(gen, lay) // 3 == 0).all()
    lay.masks["green"][-1, -1] = True  # one pixel in the opposite corner, far from the target's blob
    flipped = _target(gen, lay)
    assert (flipped // 3 == 1).all() and np.array_equal(flipped % 3, _target(gen, _layers(red=red)) % 3)


def test_local_changes_only_within_the_radius():
    gen = RelationGenerator(list(LAYERS), _matrix("local"), SIZE, radius=10)
    lay = _layers(red=_disc(32, 32, 8), green=_disc(12, 12, 4))
    before = _target(gen, lay)
    lay.masks["green"] |= _disc(50, 50, 3)  # a new source blob
    after = _target(gen, lay)
    changed = before != after
    dist = np.hypot(*np.mgrid[0 : SIZE[0], 0 : SIZE[1]] - np.array([50, 50])[:, None, None])
    assert changed.any() and (dist[changed] <= 3 + 10 + 1).all()  # only within the radius of the change
    assert not changed[dist > 14].any()
    # the ring is the bit: inside the source's blob, beyond the radius and on the target's base digit it is 0
    assert (after[_disc(50, 50, 3)] // 3 == 0).all()


def test_tlabel_reads_the_source_only_inside_the_target_regions():
    gen = RelationGenerator(list(LAYERS), _matrix("tlabel"), SIZE)
    red = _disc(20, 20, 8)
    lay = _layers(red=red, green=_disc(50, 50, 6))
    before = _target(gen, lay)
    assert (before // 3 == 0).all()
    lay.masks["green"] |= _disc(55, 10, 5)  # more source outside the target's blob: nothing changes
    lay.bright["green"] = True  # and the source's brightness is not what T-label reads
    assert np.array_equal(_target(gen, lay), before)
    lay.masks["green"] |= _disc(20, 20, 4)  # the source covers part of the target's blob
    after = _target(gen, lay)
    assert ((after // 3 == 1) == red).all()  # the bit is on over the whole target region, off elsewhere


def test_slabel_reads_the_class_of_the_source_regions():
    gen = RelationGenerator(list(LAYERS), _matrix("slabel"), SIZE)
    red = _disc(20, 20, 8)
    lay = _layers(red=red, green=_disc(50, 50, 6))
    before = _target(gen, lay)
    lay.masks["green"] = _disc(10, 50, 9)  # where the source's blobs are does not matter
    assert np.array_equal(_target(gen, lay), before)
    lay.bright["green"] = True  # their label class (bright) does, on the target's own blobs
    after = _target(gen, lay)
    assert ((after // 3 == 1) == red).all()
    assert np.array_equal(gen.labels(lay)["green"] % 3, 2 * lay.masks["green"])  # the source's label says so


def test_labels_hold_one_bit_per_planted_pair_in_task_order():
    cfg = load_config("synthetic-relations")
    gen = RelationGenerator(cfg.data.tasks, cfg.data.relations, SIZE)
    lay = gen.layers(0, 5)
    labels = gen.labels(lay)
    for t in cfg.data.tasks:
        bits = relation_bits(gen.relations, t)
        assert labels[t].max() < 3 * 2 ** len(bits)
        for k, s in enumerate(bits):
            want = gen.bit(gen.relations[t][s], lay, t, s)
            assert np.array_equal((labels[t] // 3 >> k) & 1, want.astype(np.uint8))


def test_deterministic_per_seed_and_index(tmp_path):
    cfg = load_config("synthetic-relations")
    gen = RelationGenerator(cfg.data.tasks, cfg.data.relations, SIZE)
    a, b, c = gen.render(0, 7), gen.render(0, 7), gen.render(1, 7)
    assert np.array_equal(a[0], b[0]) and all(np.array_equal(a[1][t], b[1][t]) for t in a[1])
    assert not np.array_equal(a[0], c[0])
    args = (0, SIZE, 6, 3, cfg.data.tasks, cfg.data.relations)
    one, two = build_cache(tmp_path / "a", *args, progress=False), build_cache(tmp_path / "b", *args, progress=False)
    for f in sorted(p.name for p in one.glob("*.npy")):
        assert np.array_equal(np.load(one / f), np.load(two / f)), f
    val0 = np.load(one / "val_image.npy")[0]
    assert np.array_equal(val0, (gen.render(0, 6)[0] * 255 + 0.5).astype(np.uint8))  # val follows train's indices
    other = dict(cfg.data.relations, red={**cfg.data.relations["red"], "red": "global"})
    assert build_cache(tmp_path / "a", 0, SIZE, 6, 3, cfg.data.tasks, other, progress=False) != one


@pytest.mark.parametrize("override,match", [
    ("data.relations.red.green=telepathy", "data.relations.red.green: unknown relation type 'telepathy'"),
    ("data.relations.red.purple=local", "data.relations.red.purple: 'purple' is not one of data.tasks"),
    ("data.relations.red.red=tlabel", "data.relations.red.red: a self pair can plant none, global, local"),
    ("data.relations={_delete_: true, red: {red: none}}", "data.relations.red.green is missing"),  # replaced whole
    ("data.tasks=[red, semseg]", "'semseg' is not a task of the relations dataset"),
    ("data.also_right={global: [telepathy]}", "data.also_right.global: unknown relation type 'telepathy' in its list"),
    ("data.also_right={far: [local]}", "data.also_right.far: unknown relation type 'far'"),
])
def test_bad_matrix_is_one_error_line(capsys, tmp_path, override, match):
    code = main(["train", "--config", "synthetic-relations", "--set", override, "--out", str(tmp_path / "o"),
                 "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and match in err[0], err
    assert not (tmp_path / "o").exists()


def test_a_matrix_for_another_dataset_is_refused(capsys):
    code = main(["train", "--config", "synthetic-atrc", "--set", "data.relations={semseg: {semseg: none}}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "data.relations belongs to the relations dataset" in err[0]


def test_shipped_config_trains_searches_and_retrains(tmp_path, fast_args):
    out = tmp_path / "s"
    assert main(["search", "--local", "--config", "synthetic-relations", "--out", str(out), *fast_args]) == 0
    arch = out / "architecture.yaml"
    assert arch.is_file()
    # the report scores the search against the planted matrix its config names
    import yaml

    assert main(["report", str(out)]) == 0
    rep = json.loads((out / "figures" / "report.json").read_text())["recovery"]
    chosen = yaml.safe_load(arch.read_text())["choices"]["atrc"]
    shipped = load_config("synthetic-relations").data
    planted, also = shipped.relations, shipped.also_right or {}
    exact = sum(chosen[t][s] == planted[t][s] for t in planted for s in planted)
    right = sum(chosen[t][s] == planted[t][s] or chosen[t][s] in also.get(planted[t][s], [])
                for t in planted for s in planted)
    assert rep["recovered"] == right and rep["exact"] == exact and rep["pairs"] == 16
    assert rep["per_search_run"] == {".": right}
    assert len(rep["wrong_pairs"]) == 16 - right and (out / "figures" / "planted_vs_chosen.png").stat().st_size > 0
    assert main(["retrain", "--config", "synthetic-relations", "--architecture", str(arch),
                 "--out", str(tmp_path / "r"), *fast_args]) == 0
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    # report.md opens with the recovered count and the matrix figure; no Delta_m without single-task baselines
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "fig")]) == 0
    md = (tmp_path / "fig" / "report.md").read_text()
    assert f"**{right} of 16 pairs recovered** ({exact} the planted type itself" in md
    assert "![planted vs chosen](planted_vs_chosen.png)" in md
    assert (tmp_path / "fig" / "planted_vs_chosen.png").is_file()
    assert "Δm is not computed: the config has no single-task `baselines`." in md and "`r/metrics.json`" in md
    assert json.loads((tmp_path / "fig" / "report.json").read_text())["recovery"]["recovered"] == right
    cfg = load_config("synthetic-relations")
    for t in cfg.data.tasks:
        bits = relation_bits(check_relations(cfg.data.relations, cfg.data.tasks), t)
        keys = {"iou_base", *(f"iou_{s}" for s in bits)}
        assert keys <= set(m["metrics"][t]) and 0 <= m["metrics"][t]["digit_mIoU"] <= 100
        assert m["metrics"][t]["digit_mIoU"] == pytest.approx(np.mean([m["metrics"][t][k] for k in keys]))
    assert main(["train", "--config", "synthetic-relations", "--out", str(tmp_path / "t"), *fast_args]) == 0
    assert (tmp_path / "t" / "metrics.json").is_file()


def test_digit_meter_scores_each_digit_of_the_joint_code():
    import torch

    from trcnas.nas.metrics import DigitMeter

    meter = DigitMeter([("base", 3), ("green", 2)])
    # codes base + 3 * bit: target (2, bit 1) predicted as (2, bit 0) on one pixel, right elsewhere
    target = torch.tensor([[0, 5, 5, 1, 3]])
    pred = torch.tensor([[0, 5, 2, 1, 3]])
    meter.update(pred, target)
    out = meter.compute()
    assert out["iou_base"] == pytest.approx(100.0)  # every base digit right
    # bit: target [0, 1, 1, 0, 1], predicted [0, 1, 0, 0, 1]: IoU(0) = 2/3, IoU(1) = 2/3
    assert out["iou_green"] == pytest.approx(100 * 2 / 3)
    assert out["digit_mIoU"] == pytest.approx((100 + 100 * 2 / 3) / 2)
    assert out["pixel_acc"] == pytest.approx(80.0)


def test_proof_expands_every_pair_and_judges_by_two_standard_deviations(tmp_path, fast_args):
    import pandas as pd
    import yaml

    from trcnas.analysis.planted import classes, proof_rows, recovery

    spec = {"name": "p", "config": "synthetic-relations", "seeds": [0, 1], "expand": "planted_pairs",
            "variants": [{"name": "planted", "architecture": "planted"}]}
    p = tmp_path / "proof.yaml"
    p.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    assert main(["compare", str(p), "--out", str(out), "--only", "planted", "red__green__local",
                 *fast_args]) == 0
    saved = yaml.safe_load((out / "comparison.yaml").read_text())
    names = [v["name"] for v in saved["variants"]]
    # 12 cross pairs x 4 other candidates + 4 self pairs x 3 (no S-label on a self pair) + the planted one
    assert len(names) == 1 + 12 * 4 + 4 * 3 and "red__green__local" in names and "red__red__slabel" not in names
    alt = next(v for v in saved["variants"] if v["name"] == "red__green__local")
    planted = next(v for v in saved["variants"] if v["name"] == "planted")["architecture"]["atrc"]
    assert alt["architecture"]["atrc"]["red"]["green"] == "local" and planted["red"]["green"] == "global"
    assert {k: v for k, v in alt["architecture"]["atrc"].items() if k != "red"} == \
        {k: v for k, v in planted.items() if k != "red"}
    arch = yaml.safe_load((out / "red__green__local" / "seed1" / "architecture.yaml").read_text())
    assert arch["choices"]["atrc"]["red"]["green"] == "local"
    rows = pd.read_csv(out / "proof.csv")
    assert len(rows) == 60 and (rows["status"] == "pending").sum() == 59
    done = rows[rows["status"] != "pending"]
    assert list(zip(done["target"], done["source"], done["alternative"])) == [("red", "green", "local")]
    # the verdict is the rule on the runs' own metrics: margin against 2x red's seed-to-seed std pooled over the
    # networks with two seeds (here both: sum of squared deviations over 2 degrees of freedom)
    vals = {v: [json.loads((out / v / f"seed{s}" / "metrics.json").read_text())["primary"]["red"] for s in (0, 1)]
            for v in ("planted", "red__green__local")}
    pooled = np.sqrt(sum(((np.array(x) - np.mean(x)) ** 2).sum() for x in vals.values()) / 2)
    margin = np.mean(vals["planted"]) - np.mean(vals["red__green__local"])
    assert done["margin"].iloc[0] == pytest.approx(margin) and done["sd"].iloc[0] == pytest.approx(pooled)
    assert done["pair_sd"].iloc[0] == pytest.approx(max(np.std(x, ddof=1) for x in vals.values()))
    assert bool(done["separated"].iloc[0]) == bool(margin > 2 * pooled)
    # the score counts a pair's types the proof could not tell apart as one class
    same = classes(proof_rows(out, saved))
    assert same[("red", "green")] == ({"global"} if margin > 2 * pooled else {"global", "local"})
    chosen = {t: dict(r) for t, r in planted.items()}
    chosen["red"]["green"], chosen["blue"]["blue"] = "local", "none"
    score = recovery(chosen, planted, same)
    assert score["pairs"] == 16 and score["recovered"] == (14 if margin > 2 * pooled else 15)
    assert "blue<-blue: none (planted global)" in score["wrong"]
    # a search's decisions beside the merit the proof measured (report --proof): the proof of the same matrix only
    search = tmp_path / "search"
    assert main(["search", "--local", "--config", "synthetic-relations", "--out", str(search), *fast_args]) == 0
    assert main(["report", str(search), "--proof", str(out)]) == 0
    table = pd.read_csv(search / "figures" / "decisions_vs_merit.csv")
    assert len(table) == 16
    rg = table[(table["target"] == "red") & (table["source"] == "green")].iloc[0]
    merit = {"global": np.mean(vals["planted"]), "local": np.mean(vals["red__green__local"])}
    assert rg["merit_planted"] == pytest.approx(merit["global"])
    assert rg["merit_chosen"] == pytest.approx(merit[rg["chosen"]]) if rg["chosen"] in merit else \
        np.isnan(rg["merit_chosen"])
    assert rg["best_by_merit"] == max(merit, key=merit.get)
    rep = json.loads((search / "figures" / "report.json").read_text())["merit"]
    assert rep["right"] == int(table["right"].sum()) and len(rep["wrong"]) == 16 - rep["right"]
    assert (search / "figures" / "trajectories_vs_merit.png").stat().st_size > 0
    other = tmp_path / "other"
    assert main(["search", "--local", "--config", "synthetic-relations", "--set", "data.relations.red.green=local",
                 "--out", str(other), *fast_args]) == 0
    assert main(["report", str(other), "--proof", str(out)]) == 2


def test_compare_runs_a_subset_of_seeds_now(tmp_path, capsys, fast_args):
    import yaml

    spec = {"name": "s", "config": "synthetic-relations", "seeds": [0, 1],
            "variants": [{"name": "planted", "architecture": "planted"}]}
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    assert main(["compare", str(p), "--out", str(out), "--seeds", "7", *fast_args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seeds [7]: the file's seeds are [0, 1]" in err[0]
    assert main(["compare", str(p), "--out", str(out), "--seeds", "1", *fast_args]) == 0
    assert (out / "planted" / "seed1" / "metrics.json").is_file() and not (out / "planted" / "seed0").exists()
    arch = yaml.safe_load((out / "planted" / "seed1" / "architecture.yaml").read_text())
    assert arch["choices"]["atrc"] == load_config("synthetic-relations").data.relations


def test_each_planted_variant_reads_its_own_matrix():
    from trcnas.runners.compare import expand_planted_pairs, load_comparison, variant_config

    spec = load_comparison({"name": "m", "config": "synthetic-relations", "variants": [
        {"name": "shipped", "architecture": "planted"},
        {"name": "moved", "architecture": "planted", "set": ["data.relations.red.green=local"]}]})
    out = expand_planted_pairs(spec, lambda v: variant_config(spec, v, 0), "m")
    arch = {v["name"]: v["architecture"]["atrc"] for v in out["variants"]}
    assert arch["shipped"]["red"]["green"] == "global" and arch["moved"]["red"]["green"] == "local"
    assert len(out["variants"]) == 2  # no expansion without `expand`


def test_type_classes_keep_what_the_proof_did_not_separate_on_most_pairs_of_a_type():
    import pandas as pd

    from trcnas.analysis.planted import pair_classes, recovery, type_classes

    def row(t, s, planted, alt, status):
        return {"target": t, "source": s, "planted": planted, "alternative": alt, "status": status}

    rows = pd.DataFrame([
        row("a", "b", "global", "slabel", "not separated"), row("a", "b", "global", "none", "separated"),
        row("b", "a", "global", "slabel", "not separated"), row("b", "a", "global", "none", "separated"),
        row("c", "a", "global", "slabel", "separated"), row("c", "a", "global", "none", "pending"),
        row("a", "c", "tlabel", "global", "not separated"), row("b", "c", "tlabel", "global", "separated"),
        row("c", "b", "tlabel", "global", "separated"), row("a", "a", "none", "local", "not separated"),
    ])
    # by default an alternative joins only where the proof never separated it (the pending row does not count):
    # slabel was separated on 1 of 3 global pairs, none on every one, global on 2 of 3 T-label pairs
    assert type_classes(rows) == {"global": [], "tlabel": [], "none": ["local"]}
    assert type_classes(rows, share=0.5) == {"global": ["slabel"], "tlabel": [], "none": ["local"]}
    assert type_classes(rows, share=1 / 3) == {"global": ["slabel"], "tlabel": ["global"], "none": ["local"]}
    planted = {"a": {"a": "none", "b": "global"}, "b": {"a": "global", "b": "local"}}
    same = pair_classes(planted, type_classes(rows, share=0.5))
    assert same == {("a", "a"): {"local"}, ("a", "b"): {"slabel"}, ("b", "a"): {"slabel"}, ("b", "b"): set()}
    chosen = {"a": {"a": "local", "b": "slabel"}, "b": {"a": "none", "b": "local"}}
    score = recovery(chosen, planted, same)
    assert (score["recovered"], score["exact"], score["wrong"]) == (3, 1, ["b<-a: none (planted global)"])


def test_the_score_classes_change_no_run_a_matrix_change_does(tmp_path, capsys, fast_args):
    """data.also_right only scores a search: a run resumes after it changed; a changed matrix is another run."""
    out = tmp_path / "run"
    args = ["train", "--config", "synthetic-relations", "--out", str(out), *fast_args]
    assert main(args) == 0
    assert main([*args, "--set", "data.also_right={global: [slabel, tlabel]}"]) == 0
    capsys.readouterr()
    assert main([*args, "--set", "data.relations.red.green=local"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.relations" in err[0] and "--overwrite" in err[0]


def test_decisions_vs_merit_by_hand():
    import pandas as pd

    from trcnas.analysis.planted import decisions_vs_merit

    history = pd.DataFrame({"step": [0, 1, 2, 3],
                            "atrc.a.b:none": [0.5, 0.2, 0.6, 0.7], "atrc.a.b:global": [0.5, 0.8, 0.4, 0.3],
                            "atrc.b.a:none": [0.5, 0.5, 0.5, 0.5], "atrc.b.a:local": [0.4, 0.6, 0.6, 0.6]})
    events = pd.DataFrame({"step": [3], "decision": ["atrc.a.b"], "choice": ["none"]})
    planted = {"a": {"b": "global"}, "b": {"a": "local"}}
    chosen = {"a": {"b": "none"}, "b": {"a": "local"}}
    merit = {("a", "b"): {"global": 90.0, "none": 85.0}, ("b", "a"): {"local": 80.0, "none": 81.0}}
    t = decisions_vs_merit(history, events, chosen, planted, merit, {("b", "a"): {"none"}}).set_index("target")
    ab, ba = t.loc["a"], t.loc["b"]
    # none led a <- b from step 2 on (global led at step 1), was frozen at 3, ranks second, 5 points below global
    assert (ab["chosen_leads_from"], ab["frozen_at"], ab["chosen_rank"], ab["merit_gap"]) == (2, 3, 2, 5.0)
    assert not ab["right"] and ab["best_by_merit"] == "global" and ab["planted_probability_end"] == 0.3
    # local led b <- a from step 1; ranks second by merit but is the planted type
    assert ba["right"] and ba["chosen_leads_from"] == 1 and ba["chosen_rank"] == 2 and np.isnan(ba["frozen_at"])


def test_a_search_study_is_scored_by_the_classes_of_today(tmp_path, fast_args):
    """The classes change as the proof gains seeds: a comparison's summary scores its finished searches by the
    config's data.also_right of today, not by the one each run stored."""
    import pandas as pd
    import yaml

    spec = {"name": "s", "config": "synthetic-relations", "seeds": [0],
            "variants": [{"name": "paper", "architecture": "search", "retrain": False}]}
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    none = "data.also_right={_delete_: true}"
    assert main(["compare", str(p), "--out", str(out), "--set", none, *fast_args]) == 0
    row = pd.read_csv(out / "runs.csv").iloc[0]
    assert row["recovered"] == row["exact"] and row["pairs"] == 16
    anything = "data.also_right={" + ", ".join(f"{t}: [none, global, local, tlabel, slabel]" for t in
                                               ("none", "global", "local", "tlabel", "slabel")) + "}"
    assert main(["compare", str(p), "--out", str(out), "--set", anything, *fast_args]) == 0
    again = pd.read_csv(out / "runs.csv").iloc[0]
    assert again["recovered"] == 16 and again["exact"] == row["exact"]
    assert "seed 0: 16 (" in (out / "summary.md").read_text()
