"""xTAM / mTEB: identity at initialisation, the derived downscale, the placement/fusion supergraph, and
retraining exactly the exported placement."""

import pytest
import torch
import yaml

from nas.config import load_config
from nas.models import build_model
from nas.models.mteb import MTEBNet
from nas.models.xtam import MTEB, Directional, Fusion, downscale_for
from nas.search.mixed import mixed_ops
from nas.tasks import DatasetInfo, build_tasks
from runners.cli import FAST_DEV, main
from spaces import load_architecture
from spaces.architecture import from_dict
from spaces.errors import SpecError

TASKS = ["semseg", "depth", "normals", "edge"]


def _tasks():
    return build_tasks(TASKS, DatasetInfo("synthetic", num_classes=9))


def _cfg(*extra):
    return load_config("synthetic-mteb", [*FAST_DEV, *extra])


@pytest.mark.parametrize("fusion", ["add", "concat", "prod"])
def test_mteb_at_initialisation_returns_its_input(fusion):
    torch.manual_seed(0)
    block = MTEB(TASKS, 16, 8, 8, fusions=[fusion]).train()
    feats = {t: torch.randn(2, 16, 12, 10) for t in TASKS}
    delta = block(feats, Fusion(fusion))
    for t in TASKS:
        assert torch.equal(feats[t] + delta[t], feats[t])
    assert all((d.alpha == 0).all() for d in block.directional.values())
    # one SGD step on a loss that wants the features changed moves it away from identity
    loss = sum(((feats[t] + delta[t]) - 1).pow(2).mean() for t in TASKS)
    loss.backward()
    with torch.no_grad():
        for p in block.parameters():
            if p.grad is not None:
                p -= 0.5 * p.grad
    delta = block(feats, Fusion(fusion))
    assert max(float(d.detach().abs().max()) for d in delta.values()) > 1e-3


def test_network_with_mtebs_at_init_predicts_like_the_plain_decoder():
    tasks, cfg = _tasks(), _cfg()
    torch.manual_seed(0)
    plain = build_model(cfg, tasks, architecture=from_dict(
        {"format": "trcnas-architecture/1", "space": "mteb", "tasks": TASKS,
         "choices": {"mteb": {"scales": [], "fusion": "add"}}})).eval()
    full = MTEBNet(plain.backbone, tasks, 32, [1, 2, 3, 4], "concat").eval()
    missing, unexpected = full.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("blocks.", "inter_heads.")) for k in missing)
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = plain(image), full(image)
    assert set(b["inter"]) == {1, 2, 3, 4} and a["inter"] == {}
    for t in TASKS:
        assert torch.allclose(a["pred"][t], b["pred"][t], atol=1e-6)


def test_downscale_is_derived_from_the_feature_size():
    assert [downscale_for(s, s, 256) for s in (4, 8, 16, 32, 64)] == [1, 1, 1, 2, 4]
    assert downscale_for(30, 60, 256) == 4  # 15 x 30 = 450 > 256 at s = 2
    assert downscale_for(16, 16, 64) == 2
    d = Directional(8, 4, 4, max_query_tokens=16).eval()
    d.alpha.data.fill_(1.0)
    f_t, f_s = torch.randn(1, 8, 16, 16), torch.randn(1, 8, 16, 16)
    out = d(f_t, f_s)
    assert out.shape == (1, 8, 16, 16)  # [alpha * xtask, self], upsampled back
    f_s2 = f_s.clone()
    f_s2[..., :4, :4] += 3.0
    assert not torch.allclose(d.xtask(f_t, f_s), d.xtask(f_t, f_s2))


def test_supergraph_decisions_shared_fusion_and_frozen_placement():
    tasks, cfg = _tasks(), _cfg()
    from spaces import load_space

    torch.manual_seed(0)
    net = build_model(cfg, tasks, kind="mteb_search", space=load_space("mteb"))
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
    with pytest.raises(SpecError, match="list of elements"):
        from_dict({**base, "choices": {"mteb": {"scales": [5], "fusion": "add"}}})
    with pytest.raises(SpecError, match="not one of"):
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
        if want_concat:
            assert state["blocks.2.concat.semseg.weight"].shape == (32, 64, 1, 1)
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
