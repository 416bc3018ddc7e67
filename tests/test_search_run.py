import csv
import json

import pytest
import torch
import yaml

from trcnas.nas.config import load_config
from trcnas.nas.engine.search import search_run
from trcnas.nas.engine.train import train_run
from trcnas.runners.cli import FAST_DEV, main
from trcnas.spaces import load_architecture


def _cfg(cache_dir, *extra):
    return load_config("synthetic-atrc", [*FAST_DEV, f"data.cache_dir={cache_dir}", "search.steps=6",
                                          "train.checkpoint_every=2", *extra])


def test_search_cli_writes_architecture_and_logs(tmp_path, fast_args):
    out = tmp_path / "s"
    assert main(["search", "--local", "--out", str(out), *fast_args]) == 0
    arch = load_architecture(out / "architecture.yaml")
    assert arch.tasks == ["semseg", "depth", "normals", "edge"]
    assert arch.space_spec is None  # a shipped space is named, not embedded
    assert set(arch.search["probabilities"]) == {f"atrc.{t}.{s}" for t in arch.tasks for s in arch.tasks}
    rows = list(csv.DictReader((out / "alpha_history.csv").open()))
    assert len(rows) == 3  # every step
    assert {"tau", "entropy_weight", "atrc.semseg.depth:global"} <= set(rows[0])
    assert float(rows[0]["tau"]) == 1.0 and float(rows[-1]["tau"]) == 0.05
    assert (out / "freeze_events.csv").read_text().startswith("step,decision,choice")
    m = json.loads((out / "metrics.json").read_text())
    assert m["decisions"] == 16 and set(m["primary"]) == set(arch.tasks)
    # retrain the exported architecture (its config comes from the search dir)
    r = tmp_path / "r"
    assert main(["retrain", "--architecture", str(out / "architecture.yaml"), "--out", str(r), *fast_args]) == 0
    rm = json.loads((r / "metrics.json").read_text())
    assert rm["model"] == "atrc" and rm["architecture"]["choices"] == arch.choices


def test_interrupted_search_resumes_bit_for_bit(tmp_path, cache_dir):
    cfg = _cfg(cache_dir)
    full = search_run(cfg, tmp_path / "full", progress=False)
    part = search_run(cfg, tmp_path / "resumed", progress=False, stop_after=3)
    assert part == {"step": 3, "finished": False}
    resumed = search_run(cfg, tmp_path / "resumed", progress=False)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert full["metrics"] == resumed["metrics"]
    assert (tmp_path / "full" / "alpha_history.csv").read_text() == \
        (tmp_path / "resumed" / "alpha_history.csv").read_text()


def test_heldout_alpha_steps_resume_bit_for_bit_and_the_weights_never_see_the_held_out_samples(tmp_path, cache_dir):
    from trcnas.nas.data import split_off

    cfg = _cfg(cache_dir, "search.alpha_data=heldout", "search.alpha_warmup=1")
    full = search_run(cfg, tmp_path / "full", progress=False)
    assert search_run(cfg, tmp_path / "resumed", progress=False, stop_after=3) == {"step": 3, "finished": False}
    resumed = search_run(cfg, tmp_path / "resumed", progress=False)
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert full["metrics"] == resumed["metrics"]
    assert (tmp_path / "full" / "alpha_history.csv").read_text() == \
        (tmp_path / "resumed" / "alpha_history.csv").read_text()
    rows = list(csv.DictReader((tmp_path / "full" / "train_curve.csv").open()))
    # no alpha step in the warm-up (step 0); after it every step logs the held-out objective
    assert rows[0]["alpha_loss"] == "" and all(float(r["alpha_loss"]) > 0 for r in rows[1:])
    hist = list(csv.DictReader((tmp_path / "full" / "alpha_history.csv").open()))
    key = "atrc.semseg.depth:global"  # after step 0 (warm-up) the alphas are where they began; step 1 moves them
    assert float(hist[0][key]) == pytest.approx(0.2) and float(hist[1][key]) != pytest.approx(0.2, abs=1e-6)
    # the split: disjoint, covering, keyed by the dataset's own indices (with the epoch for augmentation)
    data = list(range(10, 30))
    rest, held = split_off(data, 0.25, seed=0)
    assert len(held) == 5 and sorted([*rest, *held]) == data and not set(rest) & set(held)
    assert split_off(data, 0.25, seed=0)[1].indices == held.indices != split_off(data, 0.25, seed=1)[1].indices
    assert held[2] == data[held.indices[2]]

    class Keys(list):  # a dataset that returns the key it is read with
        def __getitem__(self, key):
            return key

    assert split_off(Keys(data), 0.25, seed=0)[1][(2, 7)] == (held.indices[2], 7)


def test_search_freezes_with_low_threshold_and_hard_mode(tmp_path, cache_dir):
    cfg = _cfg(cache_dir, "search.freeze_threshold=0.0", "search.mode=hard")
    out = search_run(cfg, tmp_path / "s", progress=False)
    assert out["frozen"] == 16  # margin >= 0 freezes everything after the first step
    events = list(csv.DictReader((tmp_path / "s" / "freeze_events.csv").open()))
    assert len(events) == 16 and all(e["step"] == "0" for e in events)
    arch = yaml.safe_load((tmp_path / "s" / "architecture.yaml").read_text())
    assert all(v == 0 for v in arch["search"]["frozen_at_step"].values())


def test_retrain_with_architecture_trains_fixed_network(tmp_path, cache_dir):
    cfg = _cfg(cache_dir)
    search_run(cfg, tmp_path / "s", progress=False)
    out = train_run(cfg, tmp_path / "r", architecture=str(tmp_path / "s" / "architecture.yaml"), progress=False)
    assert out["model"] == "atrc" and out["steps"] == 3


def test_alpha_warmup_trains_weights_only(tmp_path, cache_dir):
    cfg = _cfg(cache_dir, "search.alpha_warmup=3", "search.freeze_threshold=0.0", "search.alpha_lr=0.1")
    search_run(cfg, tmp_path, progress=False, resume=False)
    rows = list(csv.DictReader((tmp_path / "alpha_history.csv").open()))
    probs = [[float(v) for k, v in r.items() if ":" in k] for r in rows]
    assert all(p == probs[0] for p in probs[:3])  # uniform: no alpha step during the warm-up
    assert probs[3] != probs[0]
    events = list(csv.DictReader((tmp_path / "freeze_events.csv").open()))
    assert events and min(int(e["step"]) for e in events) == 3  # threshold 0 freezes at the first chance


def test_weight_optimiser_choice():
    from trcnas.nas.engine.loop import make_optimizer
    from trcnas.nas.errors import UserError
    from trcnas.nas.schema import TrainSection

    p = [torch.nn.Parameter(torch.zeros(2))]
    tr = TrainSection(optimizer="adam", lr=1e-3, momentum=0.9, weight_decay=1e-5)
    assert isinstance(make_optimizer(tr, p), torch.optim.Adam)
    assert isinstance(make_optimizer(tr.model_copy(update={"optimizer": "sgd"}), p), torch.optim.SGD)
    with pytest.raises(UserError, match="train.optimizer must be one of sgd, adam"):
        make_optimizer(tr.model_copy(update={"optimizer": "lion"}), p)


def test_a_user_space_architecture_retrains_without_its_space_file(tmp_path, fast_args):
    space = tmp_path / "my-space.yaml"
    space.write_text("format: trcnas-space/1\nname: local-or-none\ngroup: atrc\nper: task_pair\n"
                     "candidates: [none, local]\n")
    out = tmp_path / "s"
    assert main(["search", "--local", "--out", str(out), *fast_args, "--set", f"search.space={space}"]) == 0
    arch = load_architecture(out / "architecture.yaml")
    assert arch.space == "local-or-none" and arch.space_spec["candidates"] == ["none", "local"]
    space.unlink()  # the architecture file alone must be enough
    r = tmp_path / "r"
    assert main(["retrain", "--architecture", str(out / "architecture.yaml"), "--out", str(r), *fast_args]) == 0
    rm = json.loads((r / "metrics.json").read_text())
    assert {c for row in rm["architecture"]["choices"]["atrc"].values() for c in row.values()} <= {"none", "local"}


@pytest.mark.parametrize("search_clip, expected", [(None, 10.0), ("0.5", 0.5), ("0", None)])
def test_search_grad_clip_overrides_the_training_clip_in_the_search_only(tmp_path, cache_dir, monkeypatch,
                                                                         search_clip, expected):
    seen, clip = [], torch.nn.utils.clip_grad_norm_

    def recording(params, max_norm, *a, **k):
        seen.append(max_norm)
        return clip(params, max_norm, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording)
    extra = [] if search_clip is None else [f"search.grad_clip={search_clip}"]
    cfg = _cfg(cache_dir, "train.grad_clip=10", *extra)
    search_run(cfg, tmp_path / "s", progress=False)
    assert seen == ([] if expected is None else [expected] * cfg.search.steps)
    seen.clear()  # the retrain (train.steps) keeps train.grad_clip whatever the search used
    train_run(load_config("synthetic-mt", [*FAST_DEV, f"data.cache_dir={cache_dir}", "train.grad_clip=10",
                                           "train.steps=2", *extra]), tmp_path / "t", progress=False)
    assert seen == [10.0, 10.0]


# a search whose 16 decisions freeze one after another (steps 1-16 of 20) on the fast-dev data
_FREEZING = ("search.steps=20", "search.alpha_lr=1.0", "search.freeze_threshold=0.1", "train.checkpoint_every=4")


def test_stop_when_frozen_ends_at_the_last_freeze_with_the_full_searchs_architecture(tmp_path, cache_dir):
    full = search_run(_cfg(cache_dir, *_FREEZING, "search.stop_when_frozen=false"), tmp_path / "full",
                      progress=False)
    cfg = _cfg(cache_dir, *_FREEZING, "search.stop_when_frozen=true")
    stop = search_run(cfg, tmp_path / "stop", progress=False)
    frozen_at = full["architecture"]["search"]["frozen_at_step"]
    assert full["steps"] == 20 and not full["stopped_when_frozen"] and full["frozen"] == 16
    assert len(set(frozen_at.values())) > 4  # decisions froze at many different steps
    # frozen is final: the same choices, frozen at the same steps, and the search ends after the last freeze
    assert stop["architecture"]["choices"] == full["architecture"]["choices"]
    assert stop["architecture"]["search"]["frozen_at_step"] == frozen_at
    assert stop["steps"] == max(frozen_at.values()) + 1 < 20 and stop["stopped_when_frozen"]
    # up to there it is the same search, step for step
    hist = {k: (tmp_path / k / "alpha_history.csv").read_text().splitlines() for k in ("full", "stop")}
    assert len(hist["stop"]) == stop["steps"] + 1 and hist["stop"] == hist["full"][:len(hist["stop"])]
    # interrupted before the last freeze, it resumes to the same end; a finished one does not train on
    part = search_run(cfg, tmp_path / "resumed", progress=False, stop_after=6)
    assert part == {"step": 6, "finished": False}
    resumed = search_run(cfg, tmp_path / "resumed", progress=False)
    again = search_run(cfg, tmp_path / "resumed", progress=False)
    a = torch.load(tmp_path / "stop" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == stop["steps"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert resumed["metrics"] == again["metrics"] == stop["metrics"] and again["steps"] == stop["steps"]


def test_searches_ranked_by_their_metrics_run_all_steps(tmp_path, cache_dir, caplog, monkeypatch):
    from trcnas.runners import compare
    from trcnas.runners.hpo import comparable_searches

    on = _cfg(cache_dir, "search.stop_when_frozen=true")
    assert comparable_searches(on).search.stop_when_frozen is False  # objective delta_m of the search
    assert "search.stop_when_frozen is off" in caplog.text  # a note in the log
    for kept in (["hpo.retrain=true"], ["hpo.objectives=[params_M]", "hpo.directions=[minimize]"]):
        kept_cfg = comparable_searches(_cfg(cache_dir, "search.stop_when_frozen=true", *kept))
        assert kept_cfg.search.stop_when_frozen is True
    # a comparison's search without retrain is the run: its metrics are compared, so it runs all its steps
    seen = []
    monkeypatch.setattr("trcnas.runners.compare.search_run", lambda c, *a, **k: seen.append(c))
    monkeypatch.setattr("trcnas.runners.compare.train_run", lambda *a, **k: None)
    for retrain in (False, True):
        compare._run_variant(on, {"name": "v", "architecture": "search", "retrain": retrain},
                             tmp_path / str(retrain), progress=False)
    assert [c.search.stop_when_frozen for c in seen] == [False, True]
