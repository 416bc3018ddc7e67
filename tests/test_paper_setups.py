"""The paper setups (NYUD-v2 / PASCAL-Context with HRNet18 / HRNet48) at the paper's own resolution: any input
size through the backbone, the ATRC paper's Table 1 cost by command, padded crops and batches that the label
contexts and the metrics ignore, and fast-dev runs of every shipped real-data config on fixture trees whose
images have the paper's size. The full-crop runs are marked slow (CI runs them)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_data import _nyud_tree  # the NYUD fixture layout, here at the paper's crop size

from trcnas.nas.config import load_config
from trcnas.nas.families import build_model, build_supergraph, resolve_space
from trcnas.nas.genotype import from_genotype
from trcnas.nas.tasks import DatasetInfo, build_tasks
from trcnas.runners.cli import main

# ATRC Table 1 (NYUD-v2, HRNet18, 425x560): params (M), MAdds (G)
PAPER_TABLE1 = {"multitask": (4.52, 17.59), "fixed:global": (4.73, 21.43), "fixed:local": (4.73, 22.19),
                "fixed:tlabel": (5.06, 25.91), "fixed:slabel": (5.06, 25.91)}


def _pascal_tree(root, sizes=((375, 500), (333, 500))):
    from scipy.io import savemat

    for d in ("JPEGImages", "semseg/pascal-context", "human_parts", "normals_distill", "sal_distill",
              "pascal-context/trainval", "ImageSets/Context"):
        (root / d).mkdir(parents=True)
    rng = np.random.default_rng(1)
    names = []
    for i, (h, w) in enumerate(sizes):
        n = f"im{i}"
        names.append(n)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{n}.jpg")
        Image.fromarray(rng.integers(0, 60, (h, w), dtype=np.uint8)).save(root / "semseg/pascal-context" / f"{n}.png")
        savemat(root / "human_parts" / f"{n}.mat", {"parts": rng.integers(0, 7, (h, w))})
        Image.fromarray(rng.integers(1, 255, (h, w, 3), dtype=np.uint8)).save(root / "normals_distill" / f"{n}.png")
        Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(root / "sal_distill" / f"{n}.png")
        lm = np.zeros((h, w), np.int64)
        lm[:, w // 2 :] = 3
        savemat(root / "pascal-context/trainval" / f"{n}.mat", {"LabelMap": lm})
    for s in ("train", "val"):
        (root / "ImageSets/Context" / f"{s}.txt").write_text("\n".join(names) + "\n")


def _mixed_genotype(tasks):
    """Every context type at least once (codes 0..4 = none, global, local, tlabel, slabel)."""
    return from_genotype({"data": {t: {s: (3 if t == s else (i + 2 * j) % 5) for j, s in enumerate(tasks)}
                                   for i, t in enumerate(tasks)}})


def _paper_model(config, kind, **kw):
    """``kind``: multitask, atrc (a fixed architecture) or search (the supergraph of the config's space)."""
    cfg = load_config(config, [f"model.type={'multitask' if kind == 'multitask' else 'atrc'}"])
    tasks = build_tasks(cfg.data.tasks, DatasetInfo(cfg.data.dataset))
    if kind == "search":
        return build_supergraph(cfg, tasks, resolve_space(cfg))
    return build_model(cfg, tasks, **kw)


def _forward_backward(model, size, batch=1):
    model.train()
    h, w = size
    out = model(torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(0)))
    for t, p in out["pred"].items():
        assert p.shape[0] == batch and p.shape[-2:] == (-(-h // 4), -(-w // 4)), (t, p.shape)
    loss = sum(p.float().mean() for p in out["pred"].values()) + sum(a.float().mean() for a in out["aux"].values())
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(torch.isfinite(g).all() for g in grads if g is not None)
    assert sum(g is not None for g in grads) > 0.9 * len(grads)


@pytest.mark.parametrize("size", [(425, 560), (97, 131), (64, 64)])
def test_hrnet18_backbone_takes_any_size(size):
    from trcnas.nas.models.backbones import BACKBONES

    b = BACKBONES.build("hrnet18", None).eval()
    with torch.no_grad():
        y = b(torch.randn(1, 3, *size))
    assert y.shape == (1, 270, -(-size[0] // 4), -(-size[1] // 4))


def test_hrnet_fusion_equals_timm_where_timm_works():
    """At sizes divisible by 32 the size-agnostic fusion only swaps timm's nearest upsampling for the bilinear
    one of the official HRNet: with nearest restored the outputs are identical to timm's."""
    import timm
    from torch import nn

    from trcnas.nas.models.backbones import BACKBONES

    ours = BACKBONES.build("hrnet18", None).body.eval()
    ref = timm.create_model("hrnet_w18_small_v2", features_only=True, feature_location="").eval()
    ref.load_state_dict(ours.state_dict())
    for m in ours.modules():
        if isinstance(m, nn.Upsample):
            m.mode, m.align_corners = "nearest", None
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(ours(x), ref(x)):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("arch", list(PAPER_TABLE1))
def test_table1_cost_by_command(arch, capsys):
    """`trcnas summary` of the paper's Table 1 rows at 425x560 with HRNet18: params within 1 %, MAdds within 3 %."""
    argv = ["summary", "--config", "nyud-hrnet18", "--json"] + ([] if arch == "multitask" else ["--architecture", arch])
    assert main(argv) == 0
    s = json.loads(capsys.readouterr().out)
    params, madds = PAPER_TABLE1[arch]
    assert s["input"] == [425, 560]
    assert abs(s["params_M"] - params) / params < 0.01, (arch, s["params_M"])
    assert abs(s["madds_G"] - madds) / madds < 0.03, (arch, s["madds_G"])


def test_local_attention_counts_the_methods_madds():
    from trcnas.nas.engine.summary import model_summary
    from trcnas.nas.models.context import LocalContext

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ctx = LocalContext(16, 8)

        def forward_image(self, x):
            f = torch.zeros(1, 16, 20, 30)
            return self.ctx(f, f)

        def forward(self, x):
            return self.forward_image(x)

    s = model_summary(Wrap(), (20, 30))
    convs = 20 * 30 * (16 * 8 + 8 * 8) * 2 + 20 * 30 * 16 * 8  # query and key (two 1x1 each), value
    attn = 20 * 30 * 81 * (8 + 8)  # q.k and weights.v over the 9x9 window
    assert s["madds_G"] * 1e9 == pytest.approx(convs + attn, rel=1e-6)


def test_label_context_softmax_ignores_padding():
    """Changing the aux logits or features on padded pixels changes nothing in a label context's message."""
    from trcnas.nas.models.atrc import ATRCModule

    torch.manual_seed(0)
    tasks = ["semseg", "depth"]
    cands = {t: {s: "tlabel" if t == s else "slabel" for s in tasks} for t in tasks}
    m = ATRCModule(tasks, 8, cands, search=False).eval()
    feats = {t: torch.randn(1, 8, 12, 16) for t in tasks}
    aux = {t: torch.randn(1, 5, 12, 16) for t in tasks}
    valid = torch.ones(1, 1, 12, 16, dtype=torch.bool)
    valid[..., 9:, :] = False
    valid[..., :, 13:] = False
    def messages(aux_, valid_=None):
        got = {}

        def keep(key):
            def hook(msg):
                got[key] = msg
                return msg
            return hook

        with torch.no_grad():
            m(feats, aux_, hooks={(t, s): keep((t, s)) for t in tasks for s in tasks}, valid=valid_)
        return got

    a = messages(aux, valid)
    aux2 = {t: torch.where(valid, v, v + 50 * torch.randn_like(v)) for t, v in aux.items()}
    b = messages(aux2, valid)
    c = messages(aux2)
    assert len(a) == 4
    for k in a:
        torch.testing.assert_close(a[k], b[k])
        assert not torch.allclose(a[k], c[k])


def test_pad_collate_pads_labels_with_ignore_and_marks_valid():
    from trcnas.nas.data.transforms import pad_collate

    s1 = {"image": torch.ones(3, 4, 5), "semseg": torch.zeros(4, 5, dtype=torch.long),
          "depth": torch.ones(1, 4, 5), "index": torch.tensor(0)}
    s2 = {"image": torch.ones(3, 6, 3), "semseg": torch.zeros(6, 3, dtype=torch.long),
          "depth": torch.ones(1, 6, 3), "index": torch.tensor(1)}
    b = pad_collate([s1, s2])
    assert b["image"].shape == (2, 3, 6, 5) and b["valid"].shape == (2, 1, 6, 5)
    assert b["valid"][0, 0, :4, :5].all() and not b["valid"][0, 0, 4:].any() and not b["valid"][1, 0, :, 3:].any()
    assert (b["semseg"][0, 4:] == 255).all() and (b["depth"][1, :, :, 3:] == 0).all()
    assert "valid" not in pad_collate([s1, s1])


def test_edge_meter_uses_each_images_own_extent():
    """A padded image scores exactly as the unpadded one (diagonal, NMS border and counts of its own size)."""
    from trcnas.nas.metrics import EdgeMeter

    gt = np.zeros((40, 60), np.float32)
    gt[20, 10:50] = 1
    a, b = EdgeMeter(from_logits=False), EdgeMeter(from_logits=False)
    a.update(torch.from_numpy(gt)[None, None], torch.from_numpy(gt)[None, None])
    pad_p = np.zeros((50, 80), np.float32)
    pad_t = np.full((50, 80), 255, np.float32)
    pad_p[:40, :60], pad_t[:40, :60] = gt, gt
    b.update(torch.from_numpy(pad_p)[None, None], torch.from_numpy(pad_t)[None, None])
    np.testing.assert_array_equal(a.counts(), b.counts())


@pytest.mark.slow
@pytest.mark.parametrize("config", ["nyud-hrnet18", "nyud-hrnet48", "pascal-hrnet18"])
def test_paper_crop_forward_backward_every_network(config):
    """Batch 1 at the config's own crop: the multi-task baseline, ATRC with every context type, and the search
    supergraph all run forward and backward."""
    cfg = load_config(config)
    size = tuple(cfg.data.crop)
    tasks_names = list(cfg.data.tasks)
    for kind, kw in (("multitask", {}), ("atrc", {"architecture": _mixed_genotype(tasks_names)}), ("search", {})):
        model = _paper_model(config, kind, **kw)
        _forward_backward(model, size)


@pytest.mark.slow
@pytest.mark.parametrize("config, commands", [("nyud-hrnet18", ("train", "search", "retrain")),
                                              ("nyud-hrnet48", ("train",)), ("pascal-hrnet18", ("train",))])
def test_fast_dev_run_of_paper_configs_at_their_crop(config, commands, tmp_path):
    """Every paper config trains at its crop (PASCAL's images are smaller than the crop: padded, masked) and
    evaluates on full images (PASCAL's of unequal sizes in one batch); HRNet18 NYUD also searches and retrains
    (the supergraph of the other two runs forward and backward at full crop in the test above)."""
    root = tmp_path / "data"
    if config.startswith("pascal"):
        _pascal_tree(root)
    else:
        _nyud_tree(root, size=(425, 560))
    common = ["--config", config, "--fast-dev-run", "--no-progress", "--set", f"data.root={root}",
              "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "data.num_workers=0",
              "--set", "train.batch_size=1", "--set", "train.eval_batch_size=2"]
    assert main(["train", *common, "--out", str(tmp_path / "train")]) == 0
    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert set(metrics["metrics"]) == set(load_config(config).data.tasks)
    if "search" not in commands:
        return
    assert main(["search", "--local", *common, "--out", str(tmp_path / "search")]) == 0
    arch = tmp_path / "search" / "architecture.yaml"
    assert arch.is_file()
    assert main(["retrain", *common, "--architecture", str(arch), "--out", str(tmp_path / "retrain")]) == 0
    assert (tmp_path / "retrain" / "metrics.json").is_file()


@pytest.mark.parametrize("value, says", [("[16,560]", "at least 32"), ("[425]", "[height, width]"),
                                         ("[425.5,560]", "[height, width]")])
def test_sizes_that_cannot_work_are_one_error_line(value, says, capsys):
    assert main(["summary", "--config", "nyud-hrnet18", "--set", f"data.crop={value}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "data.crop" in err[0] and says in err[0]
