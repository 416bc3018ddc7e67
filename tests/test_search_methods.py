"""The search's selection methods on a hand-made supergraph whose right answer is known: one decision over
``none``, ``good`` (a linear map that can fit the target exactly) and ``bad`` (a learned constant, which cannot).
With ``good`` initialised far from the target (immature), the parameter-free candidate is tempting: the paper's
alpha-based search takes a wrong candidate; the single-path warm-up and perturbation-based selection find
``good``."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from trcnas.nas.config import load_config
from trcnas.nas.errors import UserError
from trcnas.nas.schema import SearchSection
from trcnas.nas.search.controller import ArchitectureSearch
from trcnas.nas.search.mixed import MixedOp, split_parameters
from trcnas.nas.search.oneshot import select_by_evaluation
from trcnas.nas.search.perturbation import select_by_perturbation

D = 8
TARGET = torch.randn(D, D, generator=torch.Generator().manual_seed(123)) * 0.5


class Const(nn.Module):
    def __init__(self):
        super().__init__()
        self.b = nn.Parameter(torch.zeros(D))

    def forward(self, x):
        return self.b.expand_as(x)


class Toy(nn.Module):
    def __init__(self, init_std: float):
        super().__init__()
        good = nn.Linear(D, D, bias=False)
        nn.init.normal_(good.weight, 0, init_std)
        self.mixed = MixedOp("toy", ["none", "good", "bad"], [None, good, Const()])

    def forward(self, x):
        y = self.mixed(lambda op: op(x))
        return torch.zeros_like(x) if y is None else y


def _val_loss(model, x):
    model.eval()
    with torch.no_grad():
        out = float(((model(x) - x @ TARGET.T) ** 2).mean())
    model.train()
    return out


def search(overrides: dict, seed: int, init_std: float, steps: int = 300):
    """The engine's controller (schedules, entropy, freezing, warm-up, gates) around a plain SGD loop; with
    ``selection: perturbation`` the decision is taken by the engine's selector afterwards."""
    torch.manual_seed(seed)
    model = Toy(init_std)
    cfg = SearchSection(**{"alpha_lr": 0.05, **overrides})
    ctl = ArchitectureSearch(model, cfg, seed=seed)
    weights, _ = split_parameters(model)
    opt = torch.optim.SGD(weights, lr=0.05, momentum=0.9)
    data = torch.Generator().manual_seed(seed + 1)
    for step in range(steps):
        ctl.before_step(step, steps)
        x = torch.randn(32, D, generator=data)
        loss = ((model(x) - x @ TARGET.T) ** 2).mean()
        extra, _ = ctl.extra_loss(step, steps)
        if extra is not None:
            loss = loss + extra
        opt.zero_grad()
        ctl.alpha_opt.zero_grad()
        if loss.requires_grad:  # a decision frozen to `none` leaves nothing to train
            loss.backward()
            opt.step()
            ctl.alpha_opt.step()
        ctl.after_step(step, steps)
    xv = torch.randn(256, D, generator=torch.Generator().manual_seed(9))
    if cfg.selection == "perturbation":
        select_by_perturbation([model.mixed], lambda: _val_loss(model, xv), seed)
    elif cfg.selection == "evaluation":
        select_by_evaluation([model.mixed], lambda: _val_loss(model, xv), seed)
    return model.mixed.chosen()


NO_ENTROPY = {"start": 0.0, "end": 0.0, "shape": "linear"}
METHODS = {
    "paper": {},
    "hard": {"mode": "hard"},
    "sigmoid": {"weights": "sigmoid", "entropy": NO_ENTROPY, "zero_one": 1.0},
    "paths": {"alpha_warmup": 100, "warmup": "paths"},
    "perturbation": {"selection": "perturbation"},
    "evaluation": {"selection": "evaluation"},
}


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"sigmoid"}))
def test_every_method_finds_a_mature_candidate(method):
    # (Fair DARTS' gates are not exclusive: a neutral candidate's gate can end as high as the useful one's, so
    # its argmax is not a categorical choice rule; measured, not asserted, on the benchmarks)
    assert [search(METHODS[method], s, init_std=0.1) for s in range(3)] == ["good"] * 3


def test_the_parameter_free_candidate_is_tempting_for_alpha_selection():
    # an immature `good` (large random weights) loses its weight before it has learnt: the paper's rule
    # (and its hard-sampling and Fair DARTS variants) end on a wrong candidate
    for method in ("paper", "hard", "sigmoid"):
        assert "good" not in [search(METHODS[method], s, init_std=3.0) for s in range(3)], method


@pytest.mark.parametrize("method", ["paths", "perturbation", "evaluation"])
def test_the_remedies_find_the_right_candidate_where_none_is_tempting(method):
    assert [search(METHODS[method], s, init_std=3.0) for s in range(3)] == ["good"] * 3


def test_perturbation_selection_reads_the_loss_not_alpha():
    torch.manual_seed(0)
    model = Toy(0.1)
    with torch.no_grad():
        model.mixed.ops[1].weight.copy_(TARGET / 0.2)  # good, at its mixture weight, fits the target
        model.mixed.alpha.copy_(torch.tensor([1.5, 0.5, 0.5]))  # alpha says none
    xv = torch.randn(128, D, generator=torch.Generator().manual_seed(1))
    w = model.mixed.mixture_weights()
    assert model.mixed.chosen() == "none" and w[1] < w[0]
    records = select_by_perturbation([model.mixed], lambda: _val_loss(model, xv), seed=0)
    assert model.mixed.chosen() == "good" and model.mixed.frozen
    rise = records[0]["rise"]
    assert rise["none"] == 0.0 and rise["good"] > 0.1 > abs(rise["bad"])
    assert model.mixed.mixture is None  # the eval mixture is cleared again


def test_perturbation_selection_tunes_after_every_decision_but_the_last():
    a, b, c = Toy(0.1), Toy(0.1), Toy(0.1)
    for m, name in zip((a, b, c), "abc"):
        m.mixed.name = name
    xv = torch.randn(16, D, generator=torch.Generator().manual_seed(1))
    seen = []
    records = select_by_perturbation([a.mixed, b.mixed, c.mixed], lambda: _val_loss(a, xv), seed=3,
                                     tune=lambda: seen.append(sorted(m.name for m in (a.mixed, b.mixed, c.mixed)
                                                                     if m.frozen)))
    order = [r["decision"] for r in records]
    # after the k-th decision the first k (in the order decided) are frozen; no tuning after the last
    assert seen == [sorted(order[:1]), sorted(order[:2])]


def test_perturbation_selection_takes_none_when_every_candidate_hurts():
    model = Toy(3.0)  # garbage `good`, a constant `bad` far from zero: removing either lowers the loss
    with torch.no_grad():
        model.mixed.ops[2].b.fill_(2.0)
    xv = torch.randn(64, D, generator=torch.Generator().manual_seed(1))
    records = select_by_perturbation([model.mixed], lambda: _val_loss(model, xv))
    assert model.mixed.chosen() == "none" and max(records[0]["rise"].values()) == 0.0


def test_sigmoid_gates_are_independent_and_the_zero_one_loss_pushes_them_apart():
    from trcnas.nas.search.mixed import relaxed_bernoulli, set_weighting, zero_one_loss

    model = Toy(0.1)
    set_weighting(model, "sigmoid")
    with torch.no_grad():
        model.mixed.alpha.copy_(torch.tensor([5.0, 0.0, -1.0]))
    w = model.mixed.mixture_weights()
    assert w.tolist() == pytest.approx(torch.sigmoid(torch.tensor([5.0, 0.0, -1.0])).tolist())
    # the gates of the others do not shrink when `none`'s alpha grows (a softmax's would)
    g = torch.Generator().manual_seed(0)
    a = relaxed_bernoulli(model.mixed.alpha.detach(), 1.0, g)
    b = relaxed_bernoulli(model.mixed.alpha.detach() + torch.tensor([10.0, 0, 0]), 1.0,
                          torch.Generator().manual_seed(0))
    assert torch.equal(a[1:], b[1:])
    z = zero_one_loss(model)  # over the two candidates that compute something
    assert float(z) == pytest.approx(-((0.5 - 0.5) ** 2 + (torch.sigmoid(torch.tensor(-1.0)) - 0.5) ** 2) / 2)


def test_path_warmup_trains_one_candidate_per_step_at_full_weight():
    torch.manual_seed(0)
    model = Toy(0.1)
    ctl = ArchitectureSearch(model, SearchSection(alpha_warmup=50, warmup="paths"), seed=0)
    seen = []
    for step in range(60):
        ctl.before_step(step, 60)
        sel = model.mixed.selection()
        seen.append((len(sel), sel[0][1] is None))
    assert all(s == (1, True) for s in seen[:50])  # one candidate, unweighted
    assert all(n == 2 for n, _ in seen[50:])  # then the soft mixture of the two parametric candidates


def test_evaluation_trains_single_paths_all_search_long_and_leaves_alpha_alone():
    torch.manual_seed(0)
    model = Toy(0.1)
    ctl = ArchitectureSearch(model, SearchSection(selection="evaluation"), seed=0)
    picked = []
    for step in range(90):
        ctl.before_step(step, 90)
        sel = model.mixed.selection()
        assert len(sel) == 1 and sel[0][1] is None  # one candidate at full weight, every step
        picked.append(sel[0][0])
        assert all(g["lr"] == 0.0 for g in ctl.alpha_opt.param_groups)
        ctl.after_step(step, 90)
    assert sorted(set(picked)) == [0, 1, 2] and all(abs(picked.count(i) - 30) < 15 for i in range(3))
    assert not model.mixed.frozen  # nothing freezes during the search


class Table(nn.Module):
    """Two decisions whose validation loss is a given table of their choices (no weights)."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table
        self.a = MixedOp("a", ["none", "x", "y"], [None, nn.Identity(), nn.Identity()])
        self.b = MixedOp("b", ["none", "x", "y"], [None, nn.Identity(), nn.Identity()])

    def score(self):
        return float(self.table[self.a._frozen, self.b._frozen])


@pytest.mark.parametrize("seed", range(4))
def test_evaluation_selection_descends_to_the_best_architecture(seed):
    # b's best choice depends on a's; from any start the sweeps end at the one architecture no single change
    # improves (coordinate descent is greedy: a table with two such points could end at either)
    table = torch.tensor([[5.0, 4.0, 6.0],
                          [3.0, 0.8, 0.5],
                          [4.0, 1.0, 3.5]])
    net = Table(table)
    records = select_by_evaluation([net.a, net.b], net.score, seed=seed, sweeps=4)
    assert (net.a.chosen(), net.b.chosen()) == ("x", "y") and net.a.frozen and net.b.frozen
    by = {r["decision"]: r for r in records}
    assert by["b"]["loss"] == dict(zip(["none", "x", "y"], table[1].tolist()))  # scored with a at x
    assert by["a"]["choice"] == "x" and min(by["a"]["loss"].values()) == 0.5


def test_evaluation_selection_takes_none_when_every_block_hurts():
    net = Table(torch.tensor([[1.0, 2.0, 3.0], [2.0, 3.0, 4.0], [2.5, 3.5, 4.5]]))
    select_by_evaluation([net.a, net.b], net.score, seed=0)
    assert (net.a.chosen(), net.b.chosen()) == ("none", "none")


@pytest.mark.parametrize("override,match", [
    ("search.weights=sigmoid", None),
    ("search.mode=hard", None),
])
def test_method_keys_in_config(override, match):
    cfg = load_config("synthetic-relations", [override])
    assert getattr(cfg.search, override.split(".")[1].split("=")[0]) == override.split("=")[1]


@pytest.mark.parametrize("overrides,match", [
    (["search.weights=sigmoid", "search.mode=hard"], "weights sigmoid (Fair DARTS gates) needs mode soft"),
    (["search.zero_one=1.0"], "zero_one is the loss of sigmoid gates"),
    (["search.selection=argmax"], "search.selection must be one of alpha, perturbation, evaluation"),
    (["search.selection_tune_steps=5"], "selection_tune_steps tunes between the decisions of selection perturbation"),
    (["search.alpha_data=heldout", "train.label_palette={rule: mosaic}"],
     "search.alpha_data heldout steps the alphas on full labels, but train.label_palette masks"),
    (["search.heldout_fraction=0"], "search.heldout_fraction must be greater than 0"),
])
def test_bad_method_keys_are_one_line(overrides, match):
    with pytest.raises(UserError, match=match.replace("(", r"\(").replace(")", r"\)")):
        load_config("synthetic-relations", overrides)


def test_paper_configs_keep_the_paper_method():
    for name in ("synthetic-atrc", "synthetic-mteb", "nyud-hrnet18", "pascal-hrnet18"):
        s = load_config(name).search
        paper = ("soft", "softmax", "alpha", "mixture", "train")  # single-level: alphas on the training loss
        assert (s.mode, s.weights, s.selection, s.warmup, s.alpha_data) == paper


@pytest.mark.parametrize("method", ["perturbation", "evaluation", "probes"])
def test_a_search_decided_after_training_end_to_end(tmp_path, fast_args, method):
    import json

    import yaml

    from trcnas.runners.cli import main

    out = tmp_path / method
    assert main(["search", "--local", "--config", "synthetic-relations", "--out", str(out), "--set",
                 f"search.selection={method}", "--set", "search.freeze_threshold=0.0", *fast_args]) == 0
    sel = json.loads((out / "selection.json").read_text())
    arch = yaml.safe_load((out / "architecture.yaml").read_text())
    assert sel["method"] == method and len(sel["decisions"]) == 16
    score = "rise" if method == "perturbation" else "loss"
    pick = max if method == "perturbation" else min
    for r in sel["decisions"]:
        _, t, s = r["decision"].split(".")
        assert arch["choices"]["atrc"][t][s] == r["choice"] == pick(r[score], key=r[score].get)
    # nothing froze during the search, even with a zero freeze margin
    assert all(v is None for v in arch["search"]["frozen_at_step"].values())
    key = "loss_rise_when_removed" if method == "perturbation" else "validation_loss"
    assert arch["search"]["selection"] == method
    assert set(arch["search"][key]) == {r["decision"] for r in sel["decisions"]}


def test_tuning_between_decisions_changes_the_network_the_later_ones_are_judged_in(tmp_path, fast_args):
    import json

    from trcnas.runners.cli import main

    sel = {}
    for n in (0, 2):
        out = tmp_path / f"tune{n}"
        assert main(["search", "--local", "--config", "synthetic-relations", "--out", str(out), "--set",
                     "search.selection=perturbation", "--set", f"search.selection_tune_steps={n}", *fast_args]) == 0
        sel[n] = json.loads((out / "selection.json").read_text())["decisions"]
    assert [r["decision"] for r in sel[0]] == [r["decision"] for r in sel[2]]  # the same seeded order
    assert sel[0][0] == sel[2][0]  # the first decision is judged before any tuning
    assert all(a["base_loss"] != b["base_loss"] for a, b in zip(sel[0][1:], sel[2][1:]))


def test_single_paths_are_scored_with_their_own_batch_norm_statistics():
    from trcnas.nas.engine.evaluate import batch_norm_on_batches

    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    with torch.no_grad():
        net[1].running_mean.fill_(5.0)
        net[1].running_var.fill_(9.0)
    net.eval()
    x = torch.randn(6, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in net[1].named_buffers()}
    with torch.no_grad(), batch_norm_on_batches(net):
        y = net(x)
    # each channel normalised by the batch's own statistics, not the running ones
    assert y.mean((0, 2, 3)).abs().max() < 1e-5 and (y.var((0, 2, 3), unbiased=False) - 1).abs().max() < 1e-3
    assert not net[1].training and all(torch.equal(v, before[k]) for k, v in net[1].named_buffers())
    with torch.no_grad():
        assert net(x).mean().abs() > 1.0  # outside, the running statistics again


class _Good(nn.Module):  # a linear map that can fit the target exactly, initialised near zero (immature)
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(D, D, bias=False)
        nn.init.normal_(self.lin.weight, 0, 0.01)

    def forward(self, x, idx):
        return self.lin(x)


class _Memo(nn.Module):  # a per-sample lookup (scaled to learn fast): fits the samples it trained on, no others
    def __init__(self, n: int):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(n, D))

    def forward(self, x, idx):
        return 16.0 * self.table[idx]


def _memo_search(alpha_data: str, seed: int, steps: int = 300) -> str:
    """One decision over none, a generalising linear map and a memoriser, with the engine's controller around an
    SGD loop on 32 training samples; 32 others are the held-out part (alpha_data heldout) or unused."""
    n = 64
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, D, generator=g)
    y = x @ TARGET.T
    train, held = torch.arange(n // 2), torch.arange(n // 2, n)
    model = nn.Module()
    model.mixed = MixedOp("toy", ["none", "good", "memo"], [None, _Good(), _Memo(n)])

    def loss_of(idx):
        out = model.mixed(lambda op: op(x[idx], idx))
        return ((out - y[idx]) ** 2).mean()

    ctl = ArchitectureSearch(model, SearchSection(alpha_lr=0.05, alpha_data=alpha_data), seed=seed)
    ctl.heldout_loss = lambda step: loss_of(held[torch.randint(len(held), (16,), generator=g)])
    weights, _ = split_parameters(model)
    optims = [torch.optim.SGD(weights, lr=0.05, momentum=0.9), *ctl.optimizers()]
    for step in range(steps):
        ctl.before_step(step, steps)
        loss = loss_of(train[torch.randint(len(train), (16,), generator=g)])
        extra, _ = ctl.extra_loss(step, steps)
        loss = loss if extra is None else loss + extra
        for o in optims:
            o.zero_grad()
        loss.backward()
        for o in optims:
            o.step()
        ctl.after_step(step, steps)
    return model.mixed.chosen()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_heldout_alpha_steps_leave_a_memorising_candidate_behind(seed):
    # single-level (the paper's): the alphas follow the training loss, which the memoriser lowers fastest
    assert _memo_search("train", seed) == "memo"
    # first-order DARTS: the alphas follow held-out samples, on which the memoriser knows nothing
    assert _memo_search("heldout", seed) == "good"


def test_heldout_alphas_are_not_stepped_on_the_training_loss():
    model = Toy(0.1)
    ctl = ArchitectureSearch(model, SearchSection(alpha_data="heldout"), seed=0)
    assert ctl.optimizers() == []  # the loop's optimiser step leaves the alphas alone
    with pytest.raises(RuntimeError, match="heldout_loss"):  # the search run must set it before the first step
        ctl.before_step(0, 10)
    x = torch.randn(4, D)
    ctl.heldout_loss = lambda step: ((model(x) - x @ TARGET.T) ** 2).mean()
    before = model.mixed.alpha.detach().clone()
    ctl.before_step(0, 10)
    assert not torch.equal(before, model.mixed.alpha.detach())  # one alpha step on the held-out loss
    _, log = ctl.extra_loss(0, 10)
    assert {"tau", "entropy_weight", "entropy", "alpha_loss"} <= set(log)
    # once every decision is final, no held-out batch is spent
    calls = []
    ctl.heldout_loss = lambda step: calls.append(step)
    model.mixed.freeze(1)
    ctl.before_step(1, 10)
    assert calls == [] and "alpha_loss" not in ctl.extra_loss(1, 10)[1]
