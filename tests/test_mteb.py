"""xTAM / mTEB: the paper's fusion without a gate, gradients from the first steps, scale numbering, averaged
intermediate losses, the derived downscale, the placement/fusion supergraph, and
retraining exactly the exported placement."""

import pytest
import torch
import yaml

from trcnas.nas.config import load_config
from trcnas.nas.families import build_model, build_supergraph
from trcnas.nas.models.mteb import MTEBNet
from trcnas.nas.models.xtam import MTEB, Directional, Fusion, downscale_for
from trcnas.nas.search.mixed import mixed_ops
from trcnas.nas.tasks import DatasetInfo, build_tasks
from trcnas.runners.cli import FAST_DEV, main
from trcnas.spaces import load_architecture, load_space
from trcnas.spaces.architecture import from_dict
from trcnas.spaces.errors import UserError

TASKS = ["semseg", "depth", "normals", "edge"]


def _tasks():
    return build_tasks(TASKS, DatasetInfo("synthetic", num_classes=9))


def _cfg(*extra):
    return load_config("synthetic-mteb", [*FAST_DEV, *extra])


@pytest.mark.parametrize("fusion", ["add", "concat", "prod"])
def test_mteb_fuses_as_the_paper_with_no_gate(fusion):
    torch.manual_seed(0)
    block = MTEB(TASKS, 16, 8, 8, fusions=[fusion]).eval()
    feats = {t: torch.randn(2, 16, 12, 10) for t in TASKS}
    with torch.no_grad():
        delta = block(feats, Fusion(fusion))
        for t in TASKS:
            r = torch.cat([block.directional[f"{t}__{s}"](feats[t], feats[s]) for s in block.sources(t)], 1)
            assert r.shape == (2, 3 * 16, 12, 10)  # one projected directional feature (C channels) per source
            post = block.post[t][fusion]
            f = feats[t]
            want = post(torch.cat([f, r], 1)) if fusion == "concat" else f + post(r) if fusion == "add" \
                else f * post(r)
            assert torch.allclose(feats[t] + delta[t], want, atol=1e-5)
            assert float(delta[t].abs().max()) > 1e-2  # not an identity at initialisation
            assert isinstance(post[1], torch.nn.BatchNorm2d) and isinstance(post[2], torch.nn.ReLU)
    assert all((d.alpha == 0).all() for d in block.directional.values())
    zero = [n for n, p in block.named_parameters() if (p == 0).all()]
    assert all(n.endswith(("alpha", "bias")) for n in zero)  # alpha is the only zero-initialised weight
    assert not hasattr(block, "gate")


def test_every_mteb_parameter_learns_from_the_first_steps_of_the_shipped_search():
    from trcnas.nas.data import build_dataset
    from trcnas.nas.losses import compute_losses

    tasks, cfg = _tasks(), _cfg()
    torch.manual_seed(0)
    net = build_supergraph(cfg, tasks, load_space("mteb")).train()
    ds, _ = build_dataset(cfg.data, "train", train=False, progress=False)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    total, _ = compute_losses(net(batch["image"]), batch, tasks, cfg.loss_weights)
    total.backward()
    blocks = {k: op.ops[1] for k, op in net.blocks.items()}
    assert set(blocks) == {"1", "2", "3", "4"}
    qkv = (".q.", ".k.", ".v.")
    for k, block in blocks.items():
        for n, p in block.named_parameters():
            if any(q in f".{n}" for q in qkv):
                # behind alpha = 0 (the paper's init): no gradient at the very first backward, by construction
                assert p.grad is None or float(p.grad.abs().max()) == 0.0, n
            else:
                assert p.grad is not None and float(p.grad.abs().max()) > 0, f"scale {k}: {n}"
    for op in mixed_ops(net):
        if op.name.startswith("mteb.scales"):
            assert float(op.alpha.grad.abs().max()) > 1e-6, op.name
    # one step later alpha is off zero, and the attention projections learn too
    with torch.no_grad():
        for p in net.parameters():
            if p.grad is not None:
                p -= 1e-3 * p.grad.sign()
    net.zero_grad()
    total, _ = compute_losses(net(batch["image"]), batch, tasks, cfg.loss_weights)
    total.backward()
    for k, block in blocks.items():
        for n, p in block.named_parameters():
            assert p.grad is not None and float(p.grad.abs().max()) > 0, f"step 2, scale {k}: {n}"


def test_scales_are_named_by_their_downsamplings_and_default_is_the_finest():
    tasks, cfg = _tasks(), _cfg()
    torch.manual_seed(0)
    plain = build_model(cfg, tasks, architecture=from_dict(
        {"format": "trcnas-architecture/1", "space": "mteb", "tasks": TASKS,
         "choices": {"mteb": {"scales": [], "fusion": "add"}}})).eval()
    assert plain.scales == [5, 4, 3, 2, 1]
    full = MTEBNet(plain.backbone, tasks, 32, [1, 2, 3, 4, 5], "add").eval()
    image = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        out = full(image)
    for k, preds in out["inter"].items():
        assert preds["semseg"].shape[-2:] == (96 // 2**k, 160 // 2**k), k
    assert out["pred"]["depth"].shape[-2:] == (48, 80)  # heads read scale 1 (input / 2)
    default = build_model(cfg, tasks)
    assert default.placed_scales() == [1]  # the paper's best: one block at the finest scale, before the heads
    from trcnas.nas.errors import UserError

    with pytest.raises(UserError, match=r"decodes scales 1\.\.5"):
        MTEBNet(plain.backbone, tasks, 32, [6], "add")
    with pytest.raises(UserError, match="finest_scale"):
        MTEBNet(plain.backbone, tasks, 32, [2], "add", finest_scale=3)


def test_intermediate_losses_are_averaged_over_the_placed_scales():
    from trcnas.nas.losses import compute_losses

    tasks = build_tasks(["depth"], DatasetInfo("synthetic", num_classes=9))
    batch = {"image": torch.zeros(1, 3, 8, 8), "depth": torch.ones(1, 1, 8, 8)}

    def out(*inter):
        return {"pred": {"depth": torch.zeros(1, 1, 8, 8)}, "aux": {},
                "inter": {k: {"depth": torch.full((1, 1, 4, 4), v)} for k, v in inter}}

    final, _ = compute_losses(out(), batch, tasks, {"depth": 2.0})
    one, _ = compute_losses(out((1, 0.5)), batch, tasks, {"depth": 2.0})
    two, parts = compute_losses(out((1, 0.5), (3, 3.0)), batch, tasks, {"depth": 2.0})
    l1, l3 = float(parts["inter1_depth"]), float(parts["inter3_depth"])
    assert float(one) == pytest.approx(float(final) + 2.0 * l1)
    assert float(two) == pytest.approx(float(final) + 2.0 * (l1 + l3) / 2)


def test_downscale_is_derived_from_the_feature_size():
    assert [downscale_for(s, s, 256) for s in (4, 8, 16, 32, 64)] == [1, 1, 1, 2, 4]
    assert downscale_for(30, 60, 256) == 4  # 15 x 30 = 450 > 256 at s = 2
    assert downscale_for(16, 16, 64) == 2
    d = Directional(8, 4, 4, max_query_tokens=16).eval()
    d.alpha.data.fill_(1.0)
    f_t, f_s = torch.randn(1, 8, 16, 16), torch.randn(1, 8, 16, 16)
    assert d.features(f_t, f_s).shape == (1, 8, 16, 16)  # [alpha * xtask, self] (2 x 4), upsampled back
    assert d(f_t, f_s).shape == (1, 8, 16, 16)  # its per-pair projection back to C
    f_s2 = f_s.clone()
    f_s2[..., :4, :4] += 3.0
    assert not torch.allclose(d.xtask(f_t, d.extract(f_s)), d.xtask(f_t, d.extract(f_s2)))


def test_supergraph_decisions_shared_fusion_and_frozen_placement():
    tasks, cfg = _tasks(), _cfg()

    torch.manual_seed(0)
    net = build_supergraph(cfg, tasks, load_space("mteb"))
    assert [m.name for m in mixed_ops(net)] == [f"mteb.scales.{k}" for k in (1, 2, 3, 4)] + ["mteb.fusion"]
    image = torch.randn(2, 3, 64, 64)
    for m in mixed_ops(net):
        m.mode = "hard"
    net.train()
    calls = []
    fusion = net.fusion
    orig = fusion.apply

    def spy(sel, fn):
        calls.append(tuple(i for i, _ in sel))
        return orig(sel, fn)

    fusion.apply = spy
    for k in (1, 2, 3, 4):
        net.blocks[str(k)].freeze(1)  # on
    net(image)
    assert len(calls) == 4 * len(TASKS) and len(set(calls)) == 1 and len(calls[0]) == 1  # one sample per forward
    net.blocks["2"].freeze(0)  # off
    net.blocks["4"].freeze(0)
    out = net(image)
    assert set(out["inter"]) == {1, 3}
    assert net.blocks["2"].last_computed == ["off"]


def test_architecture_file_of_the_mteb_space_is_validated():
    base = {"format": "trcnas-architecture/1", "space": "mteb", "tasks": TASKS}
    ok = from_dict({**base, "choices": {"mteb": {"scales": [1, 3], "fusion": "prod"}}})
    assert ok.group == "mteb"
    with pytest.raises(UserError, match="list of elements"):
        from_dict({**base, "choices": {"mteb": {"scales": [5], "fusion": "add"}}})
    with pytest.raises(UserError, match="not one of"):
        from_dict({**base, "choices": {"mteb": {"scales": [1], "fusion": "sum"}}})


def test_search_exports_placement_and_retrain_builds_exactly_it(tmp_path, fast_args):
    s = tmp_path / "s"
    assert main(["search", "--local", "--config", "synthetic-mteb", "--out", str(s), *fast_args]) == 0
    data = yaml.safe_load((s / "architecture.yaml").read_text())
    assert set(data["choices"]["mteb"]) == {"scales", "fusion"}
    assert set(data["choices"]["mteb"]["scales"]) <= {1, 2, 3, 4}
    arch = load_architecture(s / "architecture.yaml")
    for choice, want_concat in (({"scales": [2, 4], "fusion": "concat"}, True),
                                ({"scales": [1], "fusion": "prod"}, False)):
        arch.choices["mteb"] = choice
        arch.save(tmp_path / "a.yaml")
        r = tmp_path / f"r-{choice['fusion']}"
        assert main(["retrain", "--config", "synthetic-mteb", "--architecture", str(tmp_path / "a.yaml"),
                     "--out", str(r), *fast_args]) == 0
        state = torch.load(r / "checkpoint.pt", weights_only=True)["model"]
        assert {k.split(".")[1] for k in state if k.startswith("blocks.")} == {str(k) for k in choice["scales"]}
        assert {k.split(".")[1] for k in state if k.startswith("inter_heads.")} == {str(k) for k in choice["scales"]}
        concat = [k for k in state if ".concat." in k]
        assert bool(concat) == want_concat
        k0 = choice["scales"][0]
        if want_concat:  # P reads [f, 3 projected directional features]
            assert state[f"blocks.{k0}.post.semseg.concat.0.weight"].shape == (32, 128, 1, 1)
        else:
            assert state[f"blocks.{k0}.post.semseg.prod.0.weight"].shape == (32, 96, 1, 1)
        assert state[f"blocks.{choice['scales'][0]}.directional.semseg__depth.alpha"].shape == (16,)


def test_permutation_importance_of_directional_features(tmp_path, fast_args):
    r = tmp_path / "r"
    assert main(["retrain", "--config", "synthetic-mteb", "--architecture", "default", "--out", str(r),
                 *fast_args]) == 0
    assert main(["importance", "--run", str(r), "--repeats", "2", "--no-progress"]) == 0
    import pandas as pd

    imp = pd.read_csv(r / "importance.csv")
    assert len(imp) == 4 * 3  # scale 1 only: every ordered pair of distinct tasks
    assert set(imp["context"]) == {"mTEB scale 1"}
    assert {(t, s) for t, s in zip(imp["target"], imp["source"])} == {(t, s) for t in TASKS for s in TASKS if s != t}
    reps = pd.read_csv(r / "importance_repeats.csv")
    assert len(reps) == 24 and reps["drop_delta_m"].notna().all()


def test_fixed_off_is_the_plain_decoder_and_fixed_on_places_every_scale():
    from trcnas.nas.engine.train import load_run_architecture

    tasks, cfg = _tasks(), _cfg()
    off = load_run_architecture(cfg, "fixed:off")
    assert off.choices["mteb"]["scales"] == []
    assert build_model(cfg, tasks, architecture=off).placed_scales() == []
    on = load_run_architecture(cfg, "fixed:on")
    assert build_model(cfg, tasks, architecture=on).placed_scales() == [1, 2, 3, 4]
