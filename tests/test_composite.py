"""CompositeTasking: palette rules, outputs, the searchable task representation block, training on mosaics,
retraining exactly the exported size."""

import json

import numpy as np
import pytest
import torch

from trcnas.nas.composite.embedding import SearchTaskEmbedding, TaskEmbedding, task_codes
from trcnas.nas.composite.outputs import AnchorOutput, class_anchors
from trcnas.nas.composite.palette import build_palette_rule, load_palette_image, save_palette_image
from trcnas.nas.config import load_config
from trcnas.nas.engine.loop import fit, prepare
from trcnas.nas.errors import UserError
from trcnas.nas.families import build_model, build_supergraph
from trcnas.nas.search.mixed import split_parameters
from trcnas.nas.tasks import DatasetInfo, build_tasks
from trcnas.runners.cli import FAST_DEV, main
from trcnas.spaces import load_architecture, load_space

TASKS = ["semseg", "depth", "normals", "edge"]


def _batch(b=4, h=64, w=48):
    torch.manual_seed(0)
    return {"image": torch.zeros(b, 3, h, w), "semseg": torch.randint(0, 9, (b, h, w))}


def test_single_rule_is_constant_per_image_and_can_fix_the_task():
    torch.manual_seed(1)
    p = build_palette_rule({"rule": "single"}, TASKS)(_batch(b=16))
    per_image = p.flatten(1)
    assert (per_image == per_image[:, :1]).all()
    assert len(per_image[:, 0].unique()) > 1  # a random task per image
    fixed = build_palette_rule({"rule": "single", "task": "normals"}, TASKS)(_batch())
    assert (fixed == 2).all()


def test_mosaic_rule_makes_four_rectangles_split_in_the_middle_half():
    torch.manual_seed(2)
    h, w = 64, 48
    p = build_palette_rule({"rule": "mosaic"}, TASKS)(_batch(b=32, h=h, w=w))
    for img in p:
        # the split point: first row / column where the image changes, else it lies on the same task
        rows = (img[1:] != img[:-1]).any(1).nonzero().flatten()
        cols = (img[:, 1:] != img[:, :-1]).any(0).nonzero().flatten()
        assert len(rows) <= 1 and len(cols) <= 1  # one horizontal and one vertical line at most
        cy = int(rows[0]) + 1 if len(rows) else None
        cx = int(cols[0]) + 1 if len(cols) else None
        if cy is not None:
            assert h // 4 <= cy <= 3 * h // 4
        if cx is not None:
            assert w // 4 <= cx <= 3 * w // 4
        # each quadrant is constant
        cy, cx = cy or h // 2, cx or w // 2
        for q in (img[:cy, :cx], img[:cy, cx:], img[cy:, :cx], img[cy:, cx:]):
            assert q.numel() == 0 or (q == q.flatten()[0]).all()
    assert len(p.unique()) == len(TASKS)


def test_semantic_rule_maps_classes_to_tasks():
    rule = build_palette_rule({"rule": "semantic", "classes": {"floor": "depth", 3: "normals"}, "default": "edge"},
                              TASKS, class_names=["void", "floor", "wall", "ceiling"])
    label = torch.tensor([[[1, 2, 3, 255]]])
    p = rule({"image": torch.zeros(1, 3, 1, 4), "semseg": label})
    assert p.tolist() == [[[1, 3, 2, 3]]]  # floor -> depth, wall -> default edge, 3 -> normals, ignore -> edge
    with pytest.raises(UserError, match="unknown class 'sofa'"):
        build_palette_rule({"rule": "semantic", "classes": {"sofa": "depth"}}, TASKS, class_names=["floor"])
    with pytest.raises(UserError, match="takes no path"):
        build_palette_rule({"rule": "semantic", "path": "x.png"}, TASKS)


def test_random_rule_draws_every_task_per_pixel():
    torch.manual_seed(3)
    p = build_palette_rule({"rule": "random"}, TASKS)(_batch(b=2, h=64, w=64))
    counts = torch.bincount(p.flatten(), minlength=4).float() / p.numel()
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.02)
    assert (p[:, 1:] != p[:, :-1]).float().mean() > 0.6  # no spatial structure


def test_palette_file_round_trip_resize_and_errors(tmp_path):
    drawn = torch.zeros(8, 8, dtype=torch.long)
    drawn[:, 4:] = 3
    drawn[6:, :] = 1
    path = save_palette_image(drawn, tmp_path / "p.png")
    assert torch.equal(load_palette_image(path, 4), drawn)
    p = build_palette_rule({"rule": "file", "path": str(path)}, TASKS)(_batch(b=2, h=16, w=16))
    assert p.shape == (2, 16, 16) and (p[:, :12, 8:] == 3).all() and (p[:, 12:] == 1).all()
    with pytest.raises(UserError, match="value 3 but the run has 2 tasks"):
        load_palette_image(path, 2)
    with pytest.raises(UserError, match="not found"):
        load_palette_image(tmp_path / "missing.png", 4)


def test_task_codes_and_anchors():
    z = task_codes(3, 20)
    assert z.shape == (3, 60) and torch.allclose(z.norm(dim=1), torch.ones(3))
    assert (z[1, 20:40] > 0).all() and (z[1, :20] == 0).all()
    a = class_anchors(9)
    assert a.shape == (9, 3) and len({tuple(x) for x in a.tolist()}) == 9
    assert torch.pdist(a).min() >= 0.5 - 1e-6  # spread over the unit cube lattice
    assert set(a.flatten().tolist()) == {0.0, 0.5, 1.0}  # the paper's range: corners and faces included


def test_inset_anchors_stay_where_the_sigmoid_has_slope_and_reach_the_network(cache_dir):
    a, inset = class_anchors(9), class_anchors(9, 0.1)
    assert torch.allclose(inset, 0.1 + 0.8 * a)  # the same lattice order, shrunk towards the centre
    s = inset.clamp(1e-6, 1 - 1e-6)
    assert (s * (1 - s)).min() >= 0.09 - 1e-6  # sigmoid slope at every anchor coordinate (0 at the paper's)
    for value, expected in ((None, a), ("0.1", inset)):
        extra = [] if value is None else [f"model.composite.anchor_inset={value}"]
        cfg = _small_cfg(cache_dir, *extra)
        net = build_model(cfg, build_tasks(cfg.data.tasks, DatasetInfo("synthetic", num_classes=9)))
        assert torch.equal(net.outputs["semseg"].anchors, expected)


def test_normals_are_the_direction_of_the_pre_sigmoid_output_as_the_reference_reads_them(cache_dir):
    from trcnas.nas.composite.outputs import build_outputs

    tasks = build_tasks(["normals"], DatasetInfo("synthetic", num_classes=9))
    raw_out, squashed = build_outputs(tasks)["normals"], build_outputs(tasks, normals="sigmoid")["normals"]
    torch.manual_seed(0)
    o = torch.randn(2, 3, 4, 4) * 3
    target = torch.nn.functional.normalize(torch.randn(2, 3, 4, 4), dim=1)
    keep = torch.ones(2, 4, 4, dtype=torch.bool)
    cos = (o * target).sum(1) / o.norm(dim=1)
    assert torch.allclose(raw_out.loss(o, target, keep), (1 - cos).mean(), atol=1e-6)  # 1 - CS(o, y)
    assert torch.allclose(raw_out.loss(5 * o, target, keep), raw_out.loss(o, target, keep), atol=1e-6)
    assert torch.allclose(raw_out.value(o), o / o.norm(dim=1, keepdim=True), atol=1e-6)
    # the other reading, kept to compare: the direction of 2 sigmoid(o) - 1, which is not scale-invariant
    s = 2 * torch.sigmoid(o) - 1
    assert torch.allclose(squashed.value(o), s / s.norm(dim=1, keepdim=True), atol=1e-6)
    assert not torch.allclose(squashed.loss(5 * o, target, keep), squashed.loss(o, target, keep), atol=1e-3)
    with pytest.raises(ValueError, match="normals must be one of"):
        build_outputs(tasks, normals="tanh")
    for value, squash in ((None, False), ("sigmoid", True)):  # the config's default is the reference's
        cfg = _small_cfg(cache_dir, *([] if value is None else [f"model.composite.normals={value}"]))
        net = build_model(cfg, build_tasks(cfg.data.tasks, DatasetInfo("synthetic", num_classes=9)))
        assert net.outputs["normals"].squash is squash


def test_composition_blocks_use_the_references_leaky_slope_and_the_embedding_its_own(cache_dir):
    from trcnas.nas.composite.blocks import TaskCompositionBlock

    for value, slope in ((None, 0.01), ("0.2", 0.2)):  # reference: nn.LeakyReLU() in the blocks, 0.2 in the FCs
        cfg = _small_cfg(cache_dir, *([] if value is None else [f"model.composite.block_slope={value}"]))
        net = build_model(cfg, build_tasks(cfg.data.tasks, DatasetInfo("synthetic", num_classes=9)))
        blocks = [m for m in net.modules() if isinstance(m, TaskCompositionBlock)]
        assert len(blocks) >= 4 and {b.slope for b in blocks} == {slope}
        assert {b.film[1].negative_slope for b in blocks} == {slope}
    blk = TaskCompositionBlock(2, 2, 3).eval()
    with torch.no_grad():
        blk.conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1).repeat(1, 1, 3, 3) / 9)
        blk.film[2].weight.zero_()  # gamma 1, beta 0
    x = torch.full((1, 2, 3, 3), -1.0)  # running stats 0 / 1: the normalised value is the conv's, -1 inside
    y = blk(x, torch.zeros(1, 3, 1, 1))
    assert torch.allclose(y[0, :, 1, 1], torch.full((2,), -0.01), atol=1e-4)
    emb = TaskEmbedding(4, 1, 8, 20)
    with torch.no_grad():
        emb.layers[0].weight.zero_()
        emb.layers[0].bias.fill_(-1.0)
    assert torch.allclose(emb(), torch.full((4, 8), -0.2))  # the embedding network keeps LeakyReLU(0.2)


def test_palette_pyramid_holds_each_tasks_share_of_its_cell_as_the_references_halving():
    from trcnas.nas.composite.blocks import palette_pyramid

    pal = build_palette_rule({"rule": "random"}, TASKS)(_batch(b=2, h=64, w=64))
    onehot = torch.nn.functional.one_hot(pal, 4).permute(0, 3, 1, 2).float()
    pyr = palette_pyramid(onehot, [(32, 32), (16, 16), (4, 4)])
    for k in (2, 4, 16):  # the reference's plain bilinear halving == the 2^j x 2^j box average
        assert torch.allclose(pyr[(64 // k, 64 // k)], torch.nn.functional.avg_pool2d(onehot, k), atol=1e-6)
    assert torch.allclose(pyr[(4, 4)].sum(1), torch.ones(2, 4, 4), atol=1e-6)  # shares sum to 1
    blurred = palette_pyramid(onehot, [(32, 32)], antialias=True)[(32, 32)]  # the old reading, kept to compare
    assert not torch.allclose(blurred, torch.nn.functional.avg_pool2d(onehot, 2), atol=0.05)


def test_voc_anchors_are_the_papers_segmentation_anchors_and_reach_the_network(cache_dir):
    from trcnas.nas.composite.outputs import voc_colours

    # CompositeTasking supplement, Table 5 (x1 x2 x3 per class): the VOC colour map with its channels reversed
    table5 = [(0, 0, 0), (0, 0, 64), (0, 0, 128), (0, 0, 192), (0, 64, 0), (0, 64, 128), (0, 128, 0), (0, 128, 64),
              (0, 128, 128), (0, 128, 192), (0, 192, 0), (0, 192, 128), (128, 0, 0), (128, 0, 64), (128, 0, 128),
              (128, 0, 192), (128, 64, 0), (128, 128, 0), (128, 128, 64), (128, 128, 128), (128, 128, 192)]
    voc = {tuple(int(v) for v in row) for row in (voc_colours(21) * 255).round().flip(1)}
    assert voc == set(table5)
    assert float(voc_colours(9).max()) == pytest.approx(128 / 255)
    assert len({tuple(r) for r in voc_colours(9).tolist()}) == 9
    assert torch.allclose(class_anchors(9, 0.1, "voc"), 0.1 + 0.8 * voc_colours(9))
    with pytest.raises(ValueError, match="anchor rule"):
        class_anchors(9, 0.0, "rainbow")
    cfg = _small_cfg(cache_dir, "model.composite.anchors=voc")
    net = build_model(cfg, build_tasks(cfg.data.tasks, DatasetInfo("synthetic", num_classes=9)))
    assert torch.equal(net.outputs["semseg"].anchors, voc_colours(9))


def test_anchor_output_decodes_the_nearest_anchor():
    info = DatasetInfo("synthetic", num_classes=9)
    out = AnchorOutput(build_tasks(["semseg"], info)["semseg"])
    o = torch.logit(out.anchors[[4, 0, 8]].T.reshape(1, 3, 1, 3).clamp(0.01, 0.99))  # sigmoid(o) near the anchor
    assert out.decode(o).argmax(1).flatten().tolist() == [4, 0, 8]


def test_search_embedding_exits_and_masks_equal_the_sliced_fixed_network():
    torch.manual_seed(0)
    d = {x.path[-1]: x for x in load_space("composite").decisions(["a", "b", "c", "d"])}
    sup = SearchTaskEmbedding(4, d["embedding_depth"], d["embedding_width"])
    sup.eval()
    sup.depth.freeze(1)  # depth 6
    sup.width.freeze(2)  # width 128
    fixed = TaskEmbedding(4, 6, 128)
    scale = (512 / 128) ** 0.5
    with torch.no_grad():
        for i, layer in enumerate(fixed.layers):
            layer.weight.copy_(sup.layers[i].weight[:128, : layer.in_features] * scale)
            layer.bias.copy_(sup.layers[i].bias[:128] * scale)
    e = sup()
    assert e.shape == (4, 512) and (e[:, 128:] == 0).all()
    assert torch.allclose(e[:, :128], fixed(), atol=1e-6)


def _small_cfg(cache_dir, *extra, config="synthetic-composite"):
    return load_config(config, [*FAST_DEV, f"data.cache_dir={cache_dir}", *extra])


@pytest.mark.parametrize("pretrained", [False, True])
def test_every_parameter_is_in_one_adam_group_with_the_papers_lr_and_the_embedding_trains(tmp_path, cache_dir,
                                                                                        pretrained):
    extra = ["train.steps=2"]
    if pretrained:
        from trcnas.nas.models.backbones import BACKBONES

        torch.save(BACKBONES.build("tiny", None).body.state_dict(), tmp_path / "tiny.pt")
        extra.append(f"model.backbone.weights={tmp_path / 'tiny.pt'}")
    cfg = _small_cfg(cache_dir, *extra)
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.weight_decay) == ("adam", 1e-3, 1e-5)
    assert cfg.train.schedule == "plateau" and cfg.train.plateau.model_dump() == {"factor": 0.3, "patience": 12}
    # the paper trains without clipping; only the embedding search clips (it diverged in 2 of 3 seeds without)
    assert cfg.train.grad_clip == 0 and cfg.search.grad_clip == 10
    ctx = prepare(cfg, tmp_path / "run", progress=False)
    model = build_model(cfg, ctx.tasks)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen = []
    orig = torch.optim.Adam

    def spy(params, **kw):
        opt = orig(params, **kw)
        seen.append(opt)
        return opt

    torch.optim.Adam = spy
    try:
        fit(ctx, model, list(model.parameters()), 2, progress=False, resume=False)
    finally:
        torch.optim.Adam = orig
    groups = seen[0].param_groups
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}  # each exactly once
    encoder = {id(p) for p in model.backbone.parameters()}
    if not pretrained:  # an encoder trained from scratch: one group, the full lr
        assert len(groups) == 1 and groups[0]["lr"] == 1e-3 and groups[0]["weight_decay"] == 1e-5
    lrs = {}
    for g in groups if pretrained else []:
        kinds = {id(p) in encoder for p in g["params"]}
        assert len(kinds) == 1  # a group is all encoder or all decoder
        lrs[kinds.pop()] = g["lr"]
        assert g["weight_decay"] == 1e-5
    # the paper: lr 1e-3 for decoder and embedding network, lr / 100 for a pretrained encoder
    assert lrs == ({True: 1e-5, False: 1e-3} if pretrained else {})
    emb = {id(p) for p in model.embedding.parameters()}
    assert any(id(p) in emb for g in groups if g["lr"] == 1e-3 for p in g["params"])
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert {n for n in before if n.startswith("embedding.")} <= changed  # the reference code's bug: not here
    # in the supergraph, weights and alphas split every parameter exactly once
    sup = build_supergraph(cfg, ctx.tasks, load_space("composite"))
    w, a = split_parameters(sup)
    assert len(a) == 2 and {id(p) for p in w + a} == {id(p) for p in sup.parameters()}
    assert any(p is sup.embedding.layers[0].weight for p in w)


def test_mosaic_quadrants_hold_distinct_tasks():
    torch.manual_seed(0)
    p = build_palette_rule({"rule": "mosaic"}, TASKS)(_batch(b=200, h=32, w=32))
    corners = torch.stack([p[:, 0, 0], p[:, 0, -1], p[:, -1, 0], p[:, -1, -1]], 1)
    assert all(len(set(row)) == 4 for row in corners.tolist())  # every image asks for all four tasks
    three = build_palette_rule({"rule": "mosaic"}, TASKS[:3])(_batch(b=100, h=32, w=32))
    assert all(len(img.unique()) == 3 for img in three)


def test_outputs_are_read_inside_the_unit_cube():
    from trcnas.nas.composite.outputs import build_outputs

    info = DatasetInfo("synthetic", num_classes=9, depth_range=(0.5, 4.0))
    outs = build_outputs(build_tasks(TASKS, info))
    raw = torch.tensor([[-60.0, 0.0, 60.0], [60.0, 60.0, 60.0], [-0.2, 0.4, 3.0]]).T.reshape(1, 3, 1, 3)
    seg = outs["semseg"]
    # far outside the cube the sigmoid saturates at a cube corner: the nearest anchor is that corner's
    inside = torch.sigmoid(raw)
    d = (inside[:, None] - seg.anchors[None, :, :, None, None]).norm(dim=2)
    assert torch.equal(seg.decode(raw).argmax(1), d.argmin(1))
    assert torch.allclose(seg.decode(raw), 1 / (d + 1e-8), rtol=1e-4)
    assert seg.eps == 1e-8
    exact = torch.logit(seg.anchors[3].clamp(1e-3, 1 - 1e-3)).view(1, 3, 1, 1)
    assert int(seg.decode(exact).argmax(1)) == 3
    n = outs["normals"].value(raw)
    assert torch.allclose(n.norm(dim=1), torch.ones(1, 3), atol=1e-5)
    assert torch.allclose(n, raw / raw.norm(dim=1, keepdim=True))  # normals: the output's direction (below)
    depth = outs["depth"].decode(raw)
    assert float(depth.min()) >= 0 and float(depth.max()) <= 1.5 * 4.0
    edge = outs["edge"].value(raw)
    assert float(edge.min()) >= 0 and float(edge.max()) <= 1
    assert torch.allclose(edge, torch.sigmoid(raw).mean(1, keepdim=True), atol=1e-5)


def test_mosaic_baselines_see_only_their_palette_pixels_labels(cache_dir):
    from trcnas.nas.engine.loop import palette_masked

    cfg = _small_cfg(cache_dir, config="synthetic-mt-mosaic")
    assert cfg.model.type == "multitask" and cfg.train.label_palette == {"rule": "mosaic"}
    assert cfg.train.optimizer == "adam" and cfg.loss_weights == load_config("synthetic-composite").loss_weights
    assert load_config("synthetic-st-mosaic").model.type == "single_task"
    tasks = build_tasks(TASKS, DatasetInfo("synthetic", num_classes=9))
    rule = build_palette_rule({"rule": "mosaic"}, TASKS)
    torch.manual_seed(0)
    b = {"image": torch.zeros(2, 3, 32, 32), "semseg": torch.randint(0, 9, (2, 32, 32)),
         "depth": torch.rand(2, 1, 32, 32) + 0.5, "normals": torch.nn.functional.normalize(torch.randn(2, 3, 32, 32)),
         "edge": (torch.rand(2, 1, 32, 32) > 0.8).float()}
    torch.manual_seed(1)
    m = palette_masked(b, rule, tasks)
    torch.manual_seed(1)
    pal = rule(b)
    for k, t in enumerate(TASKS):
        keep = pal == k
        keep_c = keep if b[t].dim() == 3 else keep[:, None].expand_as(b[t])
        assert torch.equal(m[t][keep_c], b[t][keep_c])
        ignore = tasks[t].ignore_value
        assert (m[t][~keep_c] == ignore).all()
        assert 0 < keep.float().mean() < 1


def test_task_switching_equals_pixel_conditioning_on_a_constant_palette(cache_dir):
    cfg = _small_cfg(cache_dir)
    info = DatasetInfo("synthetic", num_classes=9)
    tasks = build_tasks(TASKS, info)
    torch.manual_seed(0)
    pix = build_model(cfg, tasks).eval()
    cfg_ts = _small_cfg(cache_dir, config="synthetic-taskswitching")
    ts = build_model(cfg_ts, tasks).eval()
    ts.load_state_dict(pix.state_dict())
    assert ts.conditioning == "image" and cfg_ts.model.composite.palette == {"rule": "single"}
    with pytest.raises(UserError, match="needs one task per image"):
        build_model(_small_cfg(cache_dir, "model.composite.palette={rule: mosaic}", config="synthetic-taskswitching"),
                    tasks)
    image = torch.randn(2, 3, 64, 64)
    palette = torch.tensor([0, 2]).view(2, 1, 1).expand(2, 64, 64)
    with torch.no_grad():
        assert torch.allclose(pix(image, palette), ts(image, palette), atol=1e-5)
        # and the task matters: another palette gives another output
        assert (pix(image, palette) - pix(image, palette.flip(0))).abs().max() > 1e-4


def test_trained_on_mosaics_each_task_is_predicted_on_its_own_region(tmp_path, cache_dir):
    cfg = _small_cfg(cache_dir, "train.steps=150", "data.train_samples=32", "train.batch_size=4",
                     "model.composite.palette={rule: mosaic}")
    ctx = prepare(cfg, tmp_path, progress=False)
    torch.manual_seed(0)
    model = build_model(cfg, ctx.tasks)
    fit(ctx, model, list(model.parameters()), 150, progress=False, resume=False)
    model.eval()
    rule = build_palette_rule({"rule": "mosaic"}, TASKS)
    own = {t: [] for t in TASKS}
    other = {t: [] for t in TASKS}
    torch.manual_seed(5)
    with torch.no_grad():
        for batch in ctx.val_loader():
            palette = rule(batch)
            o = model.predict_palette(batch["image"], palette)
            for k, t in enumerate(TASKS):
                if (palette == k).any():
                    own[t].append(float(model.outputs[t].loss(o, batch[t], palette == k)))
                if (palette != k).any():
                    other[t].append(float(model.outputs[t].loss(o, batch[t], palette != k)))
    for t in TASKS:
        assert np.mean(own[t]) < np.mean(other[t]), (t, np.mean(own[t]), np.mean(other[t]))


def test_search_exports_and_retrain_builds_exactly_that_size(tmp_path, fast_args):
    s = tmp_path / "s"
    assert main(["search", "--local", "--config", "synthetic-composite", "--out", str(s), *fast_args]) == 0
    arch = load_architecture(s / "architecture.yaml")
    assert set(arch.choices["composite"]) == {"embedding_depth", "embedding_width"}
    arch.choices["composite"] = {"embedding_depth": 9, "embedding_width": 64}
    arch.save(tmp_path / "a.yaml")
    r = tmp_path / "r"
    assert main(["retrain", "--config", "synthetic-composite", "--architecture", str(tmp_path / "a.yaml"),
                 "--out", str(r), *fast_args]) == 0
    state = torch.load(r / "checkpoint.pt", weights_only=True)["model"]
    layers = sorted({k.split(".")[2] for k in state if k.startswith("embedding.layers.")}, key=int)
    assert len(layers) == 9
    assert state["embedding.layers.0.weight"].shape == (64, 80)
    assert all(state[f"embedding.layers.{i}.weight"].shape == (64, 64) for i in range(1, 9))
    assert state["top.film.0.weight"].shape[1] == 64
    m = json.loads((r / "metrics.json").read_text())
    assert m["model"] == "composite" and set(m["primary"]) == set(TASKS)
    # the space's defaults (depth 6, width 128) by name
    d = tmp_path / "d"
    assert main(["retrain", "--config", "synthetic-composite", "--architecture", "default", "--out", str(d),
                 *fast_args]) == 0
    state = torch.load(d / "checkpoint.pt", weights_only=True)["model"]
    assert sum(k.endswith(".weight") and k.startswith("embedding.layers.") for k in state) == 6
    assert state["embedding.layers.5.weight"].shape == (128, 128)
    # task editing: a drawn palette (left half semseg, right half depth) on one val image
    drawn = torch.zeros(16, 16, dtype=torch.long)
    drawn[:, 8:] = 1
    save_palette_image(drawn, tmp_path / "edit.png")
    assert main(["predict", "--run", str(d), "--palette", str(tmp_path / "edit.png"), "--index", "1",
                 "--out", str(tmp_path / "pred.npz")]) == 0
    pred = np.load(tmp_path / "pred.npz")
    assert pred["output"].shape == (3, 64, 64) and (pred["palette"][:, :32] == 0).all()
    assert (pred["semseg"][:, :32] < 9).all() and (pred["semseg"][:, 32:] == 255).all()
    assert np.isnan(pred["depth"][:, :32]).all() and np.isfinite(pred["depth"][:, 32:]).all()
    assert np.isnan(pred["normals"]).all() and np.isnan(pred["edge"]).all()  # not asked anywhere
    from PIL import Image

    png = np.asarray(Image.open(tmp_path / "pred.png"))  # sigmoid(output) as RGB: anchors' colours on semseg
    assert png.shape == (64, 64, 3)
    assert np.abs(png.astype(float) - 255 / (1 + np.exp(-pred["output"].transpose(1, 2, 0)))).max() <= 0.51


def test_batch_losses_are_masked_to_the_palette(cache_dir):
    cfg = _small_cfg(cache_dir)
    info = DatasetInfo("synthetic", num_classes=9)
    tasks = build_tasks(TASKS, info)
    torch.manual_seed(0)
    model = build_model(cfg, tasks)
    b = {"image": torch.randn(2, 3, 32, 32), "semseg": torch.randint(0, 9, (2, 32, 32)),
         "depth": torch.rand(2, 1, 32, 32) + 1,
         "normals": torch.nn.functional.normalize(torch.randn(2, 3, 32, 32), dim=1),
         "edge": (torch.rand(2, 1, 32, 32) > 0.8).float()}
    model.rule = build_palette_rule({"rule": "single", "task": "depth"}, TASKS)
    out = model.forward_batch(b)
    _, parts = model.compute_losses(out, b, tasks, cfg.loss_weights)
    assert float(parts["depth"]) > 0 and all(float(parts[t]) == 0 for t in ("semseg", "normals", "edge"))


def test_summary_counts_a_composite_forward(capsys, fast_args):
    assert main(["summary", "--config", "synthetic-composite", "--architecture", "default", "--json",
                 *fast_args]) == 0
    s = json.loads(capsys.readouterr().out)
    mods = {m["module"]: m for m in s["modules"]}
    assert mods["backbone"]["madds_G"] > 0 and mods["fuse.1"]["madds_G"] > 0
    listed = sum(m["madds_G"] for m in s["modules"])  # the palette-embedding einsums run outside the modules
    assert 0.99 * s["madds_G"] <= listed <= s["madds_G"]


@pytest.mark.parametrize("decoder", ["full", "quarter"])
def test_the_reference_decoder_reaches_full_resolution_through_an_image_skip(decoder, cache_dir):
    """decoder full (the reference's): the 3-channel output is at input resolution and the image skip and both
    extra decoder stages learn; quarter: the output is at 1/4 and there are no such modules."""
    cfg = _small_cfg(cache_dir, f"model.composite.decoder={decoder}")
    tasks = build_tasks(TASKS, DatasetInfo("synthetic", num_classes=9))
    torch.manual_seed(0)
    model = build_model(cfg, tasks).train()
    image = torch.rand(2, 3, 64, 64)
    palette = torch.randint(0, len(TASKS), (2, 64, 64))
    out = model(image, palette)
    assert out.shape == ((2, 3, 64, 64) if decoder == "full" else (2, 3, 16, 16))
    assert hasattr(model, "image_skip") == (decoder == "full")
    out.square().mean().backward()
    if decoder == "full":
        for m in (*model.image_skip, model.up_half, model.up_full):
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


def test_the_references_top_kernel_upsampling_and_film_width_are_settings_that_reach_the_network(cache_dir):
    """The reference's coarsest block is a 1x1 skip block, its decoder upsamples with align_corners=True and its
    gamma/beta networks have their own hidden width; trcnas's defaults (3, False, the block's width) are a
    measured deviation (README), each reference detail one setting away."""
    from trcnas.nas.composite.blocks import TaskCompositionBlock

    info = DatasetInfo("synthetic", num_classes=9)
    default = build_model(_small_cfg(cache_dir), build_tasks(TASKS, info))
    ref = build_model(_small_cfg(cache_dir, "model.composite.top_kernel=1", "model.composite.align_corners=true",
                                 "model.composite.film_hidden=24"), build_tasks(TASKS, info))
    assert default.top.conv.kernel_size == (3, 3) and ref.top.conv.kernel_size == (1, 1)
    for net, hidden in ((default, None), (ref, 24)):
        blocks = [m for m in net.modules() if isinstance(m, TaskCompositionBlock)]
        assert len(blocks) >= 4
        for b in blocks:
            assert b.film[0].out_channels == (hidden or b.conv.out_channels)
            assert b.film[2].out_channels == 2 * b.conv.out_channels
    ramp = torch.tensor([[0.0, 1.0], [0.0, 1.0]]).view(1, 1, 2, 2)  # 2 -> 5 pixels along the width:
    assert torch.allclose(ref._up(ramp, (5, 5))[0, 0, 2], torch.tensor([0, 0.25, 0.5, 0.75, 1]))  # corners aligned
    assert torch.allclose(default._up(ramp, (5, 5))[0, 0, 2], torch.tensor([0, 0.1, 0.5, 0.9, 1]))  # pixel centres
    ref.align_corners = False  # the flag reaches the decoder's forward
    torch.manual_seed(0)
    image, palette = torch.rand(2, 3, 64, 64), torch.randint(0, 4, (2, 64, 64))
    ref.eval()
    with torch.no_grad():
        a = ref(image, palette)
        ref.align_corners = True
        b = ref(image, palette)
    assert a.shape == b.shape and not torch.allclose(a, b)
    with pytest.raises(UserError, match="top_kernel"):
        _small_cfg(cache_dir, "model.composite.top_kernel=5")


def test_embedding_init_is_kaiming_or_the_references_pytorch_default_and_reaches_the_network(cache_dir):
    from trcnas.nas.composite.embedding import TaskEmbedding

    torch.manual_seed(0)
    kaiming, ref = TaskEmbedding(4, 6, 128, 20, "kaiming"), TaskEmbedding(4, 6, 128, 20, "torch")
    kaiming.requires_grad_(False), ref.requires_grad_(False)
    for k, r in zip(kaiming.layers, ref.layers):
        bound = 1 / k.weight.shape[1] ** 0.5
        assert float(k.bias.abs().max()) == 0.0 and float(r.bias.abs().max()) > 0.5 * bound
        assert float(r.weight.abs().max()) <= bound and float(r.bias.abs().max()) <= bound
        assert float(k.weight.std()) == pytest.approx((2 / 1.04) ** 0.5 * bound, rel=0.05)
    # Kaiming keeps the embeddings' scale through the 6 layers; PyTorch's default shrinks it (the reference's)
    assert float(ref().std()) < 0.5 * float(kaiming().std())
    with pytest.raises(ValueError, match="embedding init"):
        TaskEmbedding(4, 1, 8, 20, "xavier")
    info = DatasetInfo("synthetic", num_classes=9)
    net = build_model(_small_cfg(cache_dir, "model.composite.embedding_init=torch"), build_tasks(TASKS, info))
    assert all(float(layer.bias.detach().abs().max()) > 0 for layer in net.embedding.layers)
    with pytest.raises(UserError, match="embedding_init"):
        _small_cfg(cache_dir, "model.composite.embedding_init=xavier")
