"""Data-parallel search: two gloo ranks on halves of each global batch take the same alpha (and weight)
updates as one process on the whole batch.

Both continue one checkpoint taken after the first steps: at step 0 ATRC's zero-initialised fusion makes
the alpha gradients ~1e-11, where Adam's normalised step turns float rounding (of any two runs that sum in
another order) into full steps of either sign."""

import csv
import shutil
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trcnas.nas.config import load_config, validate
from trcnas.nas.engine.distributed import GlobalBatchNorm
from trcnas.nas.engine.search import search_run
from trcnas.nas.schema import as_dict
from trcnas.runners.cli import FAST_DEV

CONFIG = "synthetic-atrc"


WARMUP, STEPS = 2, 8


def _cfg(cache_dir, *extra):
    return load_config(CONFIG, [*FAST_DEV, f"data.cache_dir={cache_dir}", f"search.steps={STEPS}",
                                f"train.checkpoint_every={WARMUP}", "train.batch_size=4", "search.alpha_lr=0.05",
                                "search.freeze_threshold=0.9", *extra])


def _rank(rank, world, port, cfg, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        search_run(validate(cfg, f"rank {rank}"), out, progress=False, resume=True)  # crossed as plain data
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alphas(path):
    rows = list(csv.DictReader(open(path)))
    keys = [k for k in rows[0] if ":" in k]
    return torch.tensor([[float(r[k]) for k in keys] for r in rows], dtype=torch.float64)


@pytest.mark.timeout(300)
def test_two_gloo_ranks_match_one_process_on_the_same_global_batch(tmp_path, cache_dir):
    cfg = _cfg(cache_dir)
    one, two = tmp_path / "one", tmp_path / "two"
    search_run(cfg, one, progress=False, resume=False, stop_after=WARMUP)  # also renders the shared data cache
    shutil.copytree(one, two)
    search_run(cfg, one, progress=False, resume=True)
    mp.start_processes(_rank, args=(2, _free_port(), as_dict(cfg), two), nprocs=2, start_method="spawn")
    a1, a2 = _alphas(one / "alpha_history.csv"), _alphas(two / "alpha_history.csv")
    assert a1.shape == a2.shape == (STEPS, a1.shape[1])
    moved = float((a1[-1] - a1[WARMUP - 1]).abs().max())
    assert moved > 1e-2  # the probabilities did move in the compared steps, so agreeing is not trivial
    diff = float((a1[WARMUP:] - a2[WARMUP:]).abs().max())
    assert diff < 1e-4, (diff, moved)
    w1 = torch.load(one / "checkpoint.pt", weights_only=True)["model"]
    w2 = torch.load(two / "checkpoint.pt", weights_only=True)["model"]
    assert w1.keys() == w2.keys()
    def worst(keys):
        return max((float((w1[k].float() - w2[k].float()).abs().max() / w1[k].float().abs().max().clamp_min(1.0)),
                    k) for k in keys)

    stats = {k for k in w1 if k.endswith(("running_mean", "running_var"))}
    assert worst(set(w1) - stats)[0] < 1e-3, worst(set(w1) - stats)
    # BN running statistics of the label contexts' prototype MLPs (BatchNorm1d over B x K prototypes) amplify
    # float reordering most (2.8e-3 of their scale after 6 steps with Xavier-initialised CP convs)
    assert worst(stats)[0] < 1e-2, worst(stats)


def test_global_batch_norm_without_a_group_is_batch_norm():
    torch.manual_seed(0)
    for bn, x in ((torch.nn.BatchNorm2d(4), torch.randn(3, 4, 5, 5)), (torch.nn.BatchNorm1d(4), torch.randn(3, 4, 7))):
        gbn = GlobalBatchNorm(4)
        assert torch.allclose(bn(x), gbn(x)) and torch.allclose(bn.running_var, gbn.running_var)
