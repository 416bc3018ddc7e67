"""Probe selection (``search.selection: probes``, nas/search/probes.py): every (pair, candidate) of an ATRC
supergraph has its own probe, trained on its message alone, and each pair takes the candidate whose probe has the
lowest validation loss."""

from __future__ import annotations

import pytest
import torch

from trcnas.nas.config import load_config
from trcnas.nas.data import label_spaces
from trcnas.nas.errors import UserError
from trcnas.nas.families import build_supergraph, resolve_space
from trcnas.nas.search.controller import ArchitectureSearch
from trcnas.nas.search.mixed import MixedOp
from trcnas.nas.search.probes import select_by_probes
from trcnas.nas.tasks import build_tasks


def _probe_net(extra=()):
    cfg = load_config("synthetic-relations", ["search.selection=probes", *extra])
    tasks = build_tasks(cfg.data.tasks, label_spaces(cfg.data))
    return cfg, tasks, build_supergraph(cfg, tasks, resolve_space(cfg))


def _grad_norm(module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_each_probe_trains_its_own_candidate_and_nothing_of_another():
    torch.manual_seed(0)
    cfg, tasks, net = _probe_net()
    atrc = net.distill
    for probe in atrc.probes.values():  # as after some training: the fusion's zero-initialised gate is open
        torch.nn.init.ones_(probe.fusion.reduce[1].weight)
    net.train()
    out = net(torch.randn(2, 3, 64, 64))
    # one prediction per (pair, candidate) of every target, at the main output's shape
    for t in tasks:
        n_cands = sum(len(atrc.pairs[f"{t}__{s}"].candidates) for s in atrc.sources[t])
        assert len(out["probes"][t]) == n_cands
        for p in out["probes"][t].values():
            assert p.shape == out["pred"][t].shape
    # the loss of one probe (red <- grain, T-label) reaches its block, its probe and the shared features, and no
    # other candidate's block or probe, and no main-path fusion
    out["probes"]["red"][("atrc.red.grain", "tlabel")].float().pow(2).mean().backward()
    mixed = atrc.pairs["red__grain"]
    for i, c in enumerate(mixed.candidates):
        if not mixed.is_none[i]:
            assert (_grad_norm(mixed.ops[i]) > 0) == (c == "tlabel"), c
    for name, probe in atrc.probes.items():
        assert (_grad_norm(probe) > 0) == (name == "red__grain__tlabel"), name
    assert _grad_norm(net.features["red"]) > 0 and _grad_norm(net.backbone) > 0
    # a T-label block reads its target's aux regions (and not its source's), as in a fixed network
    assert _grad_norm(net.aux["red"]) > 0 and _grad_norm(net.aux["grain"]) == 0
    assert all(_grad_norm(f) == 0 for f in atrc.fusion.values())
    assert all(_grad_norm(m) == 0 for k, m in atrc.pairs.items() if k != "red__grain")


def test_a_probe_supergraph_trains_every_probe_and_leaves_alpha_alone():
    torch.manual_seed(0)
    cfg, tasks, net = _probe_net()
    ctl = ArchitectureSearch(net, cfg.search, seed=0)
    before = [m.alpha.detach().clone() for m in ctl.ops]
    batch = {"image": torch.randn(2, 3, 64, 64)}
    codes = torch.Generator().manual_seed(1)
    for t in tasks:  # random joint codes: each digit differs between pixels
        batch[t] = torch.randint(0, 24, (2, 64, 64), generator=codes)
    net.train()
    ctl.before_step(0, 10)
    out = net.forward_batch(batch)
    loss, parts = net.compute_losses(out, batch, tasks, cfg.loss_weights)
    extra, _ = ctl.extra_loss(0, 10)
    (loss + extra).backward()
    for g in ctl.alpha_opt.param_groups:
        assert g["lr"] == 0.0
    ctl.alpha_opt.step()
    ctl.after_step(0, 10)
    assert all(torch.equal(b, m.alpha.detach()) for b, m in zip(before, ctl.ops))
    assert not any(m.frozen for m in ctl.ops)  # nothing freezes during a probe search
    # every probe gets its share of its target's loss: a target's probes weigh as much as its main output
    assert all(_grad_norm(p) > 0 for p in net.distill.probes.values())
    for t in tasks:
        assert f"probes_{t}" in parts
        # at the probes' own resolution, against the labels taken at every 4th pixel
        losses = [tasks[t].loss(p.float(), batch[t][:, ::4, ::4]) for p in out["probes"][t].values()]
        assert float(parts[f"probes_{t}"]) == pytest.approx(float(torch.stack(losses).mean().detach()), rel=1e-5)


def test_probe_selection_takes_the_lowest_loss_and_ties_to_the_earlier_candidate():
    ops = [MixedOp("a", ["none", "global", "local"], [None, torch.nn.Identity(), torch.nn.Identity()]),
           MixedOp("b", ["none", "global"], [None, torch.nn.Identity()]),
           MixedOp("c", ["none", "local"], [None, torch.nn.Identity()])]
    ops[2].freeze(1)  # already decided: left as it is
    losses = {("a", "none"): 0.5, ("a", "global"): 0.7, ("a", "local"): 0.4,
              ("b", "none"): 0.3, ("b", "global"): 0.3}
    rec = select_by_probes(ops, losses)
    assert [m.chosen() for m in ops] == ["local", "none", "local"]
    assert [r["decision"] for r in rec] == ["a", "b"] and rec[0]["loss"] == {"none": 0.5, "global": 0.7, "local": 0.4}
    with pytest.raises(ValueError, match="no probe loss for candidates"):
        select_by_probes([MixedOp("d", ["none", "global"], [None, torch.nn.Identity()])], {("d", "none"): 0.1})


@pytest.mark.parametrize("overrides,match", [
    (["search.selection=probes", "search.alpha_data=heldout"], "selection probes leaves alpha out of the search"),
    (["search.selection=probes", "model.type=mteb"], "search.selection probes gives each"),
])
def test_bad_probe_configs_are_one_line(overrides, match):
    with pytest.raises(UserError, match=match):
        load_config("synthetic-relations", overrides)
