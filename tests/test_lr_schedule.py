"""The weights' learning rate comes from torch's schedulers (PolynomialLR, ReduceLROnPlateau): the same rates,
step by step, as the closed forms the papers state, with each parameter group at its own multiple, and the same
rates after a resumption (from today's checkpoints and from those written before)."""

from __future__ import annotations

import pytest
import torch

from trcnas.nas.engine.loop import LRSchedule, make_optimizer
from trcnas.nas.schema import TrainSection

TR = TrainSection.model_validate({"optimizer": "sgd", "lr": 0.02, "momentum": 0.9, "weight_decay": 0.0,
                                  "schedule": "poly", "poly_power": 0.9, "plateau": {"factor": 0.3, "patience": 2}})


def _opt(tr=TR):
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    return make_optimizer(tr, [{"params": [a], "lr_mult": 0.01, "name": "encoder"},
                               {"params": [b], "lr_mult": 1.0, "name": "decoder"}])


def _flat(rows):
    return [x for row in rows for x in row]


def _run(opt, sched, steps, losses=None, start=0):
    lrs = []
    for step in range(start, steps):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step(step, None if losses is None else losses[step])
    return lrs


def test_poly_equals_the_closed_form_at_every_step_and_after_a_resumption():
    steps = 200
    opt = _opt()
    lrs = _run(opt, LRSchedule(TR, opt, steps, epoch_steps=10), steps)
    for step, (enc, dec) in enumerate(lrs):
        want = 0.02 * (1 - step / steps) ** 0.9
        assert dec == pytest.approx(want, rel=1e-12, abs=1e-18) and enc == pytest.approx(want * 0.01, rel=1e-12)
    # resumed at step 120 from today's checkpoint: the optimiser's groups and the scheduler's state
    opt = _opt()
    sched = LRSchedule(TR, opt, steps, epoch_steps=10)
    _run(opt, sched, 120)
    saved_opt, saved = opt.state_dict(), sched.state_dict()
    opt2 = _opt()
    sched2 = LRSchedule(TR, opt2, steps, epoch_steps=10)
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved, 120)
    assert _flat(_run(opt2, sched2, steps, start=120)) == pytest.approx(_flat(lrs[120:]), rel=1e-12)
    # from a checkpoint written before: no scheduler state, the groups at the lr of step 119
    opt3 = _opt()
    sched3 = LRSchedule(TR, opt3, steps, epoch_steps=10)
    for g, mult in zip(opt3.param_groups, (0.01, 1.0)):
        g["lr"] = 0.02 * mult * (1 - 119 / steps) ** 0.9
    sched3.load_state_dict(None, 120)
    assert _flat(_run(opt3, sched3, steps, start=120)) == pytest.approx(_flat(lrs[120:]), rel=1e-12)


def test_plateau_reduces_after_patience_epochs_without_improvement_and_resumes():
    tr = TR.model_copy(update={"optimizer": "adam", "schedule": "plateau"})
    # epochs of 2 steps: means 1.0, 0.5, then 0.6 three times (more than patience 2): x 0.3 after the fifth
    losses = [1.0, 1.0, 0.5, 0.5] + [0.6] * 6 + [0.6] * 4
    opt = _opt(tr)
    sched = LRSchedule(tr, opt, len(losses), epoch_steps=2)
    lrs = _run(opt, sched, len(losses), losses)
    dec = [d for _, d in lrs]
    assert dec[:10] == [0.02] * 10 and dec[10] == pytest.approx(0.006) and lrs[10][0] == pytest.approx(0.00006)
    assert sched.torch.best == 0.5
    # a legacy checkpoint's {scale, best, bad, losses} at step 7 (epoch 4 in progress, one bad epoch so far)
    opt2 = _opt(tr)
    sched2 = LRSchedule(tr, opt2, len(losses), epoch_steps=2)
    sched2.load_state_dict(None, 7, {"scale": 1.0, "best": 0.5, "bad": 1, "losses": [0.6]})
    assert _flat(_run(opt2, sched2, len(losses), losses, start=7)) == pytest.approx(_flat(lrs[7:]))


def test_each_group_starts_at_its_multiple_of_the_lr():
    assert [g["lr"] for g in _opt().param_groups] == [pytest.approx(0.0002), 0.02]
