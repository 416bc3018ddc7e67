import json

import numpy as np
import pytest
import torch
from PIL import Image

from trcnas.nas.data import StepBatchSampler
from trcnas.nas.data import build_dataset as _build_dataset
from trcnas.nas.data.scenes import CLASSES, PARTS, SALIENT, SceneGenerator
from trcnas.nas.data.transforms import RandomHorizontalFlip
from trcnas.nas.errors import UserError
from trcnas.nas.schema import Augment, DataSection


def build_dataset(data: dict, *args, **kwargs):
    """The package's build_dataset on a ``data`` section given as a mapping (unvalidated: these tests use
    images smaller than a config allows)."""
    augment = Augment.model_construct(**data.get("augment", {}))
    return _build_dataset(DataSection.model_construct(**{**data, "augment": augment}), *args, **kwargs)

def test_scene_is_deterministic_and_labels_consistent():
    g = SceneGenerator(64, 80)
    a, b = g.render(3, 7), g.render(3, 7)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.depth, b.depth)
    assert not np.array_equal(a.image, g.render(3, 8).image)
    assert a.image.shape == (64, 80, 3) and a.semseg.shape == (64, 80)
    assert a.depth.min() > 0
    assert np.allclose(np.linalg.norm(a.normals, axis=-1), 1, atol=1e-4)
    assert a.semseg.max() < len(CLASSES)
    salient = np.isin(a.semseg, [CLASSES.index(c) for c in SALIENT])
    assert np.array_equal(a.saliency.astype(bool), salient)
    person = a.semseg == CLASSES.index("person")
    assert (a.parts[~person] == 0).all() and (a.parts[person] > 0).all()
    assert a.parts.max() < len(PARTS)
    # one pixel wide: an edge pixel's right neighbour differs by construction, edges cover few pixels
    assert 0 < a.edge.mean() < 0.2


def test_normals_face_the_camera_and_floor_points_up():
    s = SceneGenerator(64, 64).render(0, 1)
    d = SceneGenerator(64, 64)._cam_dirs.reshape(64, 64, 3)
    assert (np.einsum("hwc,hwc->hw", s.normals, d) <= 1e-5).all()
    floor = s.semseg == CLASSES.index("floor")
    assert floor.any() and (s.normals[floor][:, 1] < -0.5).all()  # camera y points down


def test_synthetic_cache_built_once_with_partitions(tmp_path):
    cfg = {"dataset": "synthetic", "cache_dir": str(tmp_path), "seed": 1, "image_size": [32, 32],
           "train_samples": 6, "val_samples": 2, "tasks": ["semseg", "depth", "normals", "edge"]}
    ds, info = build_dataset(cfg, "train", train=False, progress=False)
    assert len(ds) == 6
    cache = next(p for p in tmp_path.iterdir() if p.name.startswith("synthetic"))
    stamp = (cache / "train_image.npy").stat().st_mtime_ns
    ds2, _ = build_dataset(cfg, "val", train=False, progress=False)
    assert len(ds2) == 2 and (cache / "train_image.npy").stat().st_mtime_ns == stamp
    assert info.normal_centroids.shape == (40, 3) and info.depth_range[0] < info.depth_range[1]
    s = ds[0]
    assert s["image"].shape == (3, 32, 32) and s["semseg"].dtype == torch.int64
    assert s["depth"].shape == (1, 32, 32) and s["normals"].shape == (3, 32, 32)
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())


def test_flip_negates_normals_x():
    n = torch.zeros(3, 2, 2)
    n[0] = torch.tensor([[1.0, 0.5], [0.2, 0.1]])
    out = RandomHorizontalFlip(p=1.0)({"normals": n}, torch.Generator())
    assert torch.equal(out["normals"][0], -n[0].flip(-1))


def test_step_sampler_resumes_the_same_batches():
    full = list(StepBatchSampler(10, 3, seed=2, total=9))
    tail = list(StepBatchSampler(10, 3, seed=2, total=9, start=4))
    assert full[4:] == tail
    assert {i for i, _ in full[0] + full[1] + full[2]} <= set(range(10))


# ---- real dataset adapters on tiny fixture trees -------------------------------------------------


def _nyud_tree(root, n=2, size=(12, 16)):
    h, w = size
    for d in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
        (root / d).mkdir(parents=True)
    ids = [f"{i:04d}" for i in range(n)]
    rng = np.random.default_rng(0)
    for i in ids:
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(rng.integers(0, 41, (h, w), dtype=np.uint8)).save(root / "segmentation" / f"{i}.png")
        np.save(root / "depth" / f"{i}.npy", rng.uniform(0.5, 9, (h, w)).astype(np.float32))
        nrm = rng.normal(size=(h, w, 3)).astype(np.float32)
        np.save(root / "normals" / f"{i}.npy", nrm / np.linalg.norm(nrm, axis=-1, keepdims=True))
        Image.fromarray((rng.random((h, w)) > 0.9).astype(np.uint8) * 255).save(root / "edge" / f"{i}.png")
    for split in ("train", "val"):
        (root / "gt_sets" / f"{split}.txt").write_text("\n".join(ids))
    return ids


def _nyud_cfg(root, tmp):
    return {"dataset": "nyud", "root": str(root), "cache_dir": str(tmp / "c"), "limit": None,
            "tasks": ["semseg", "depth", "normals", "edge"], "augment": {"scale": [0.8, 1.2]}, "crop": [8, 8]}


def test_nyud_adapter_reads_layout(tmp_path):
    root = tmp_path / "nyud"
    _nyud_tree(root)
    ds, info = build_dataset(_nyud_cfg(root, tmp_path), "train", train=True, progress=False)
    s = ds[0]
    assert s["image"].shape == (3, 8, 8) and s["normals"].shape == (3, 8, 8)
    assert s["semseg"].max() <= 255 and info.normal_centroids.shape == (40, 3)
    raw = ds.load(0)["semseg"]
    seg_file = np.asarray(Image.open(root / "segmentation" / "0000.png")).astype(np.int64)
    assert torch.equal(raw, torch.from_numpy(np.where(seg_file == 0, 255, seg_file - 1)))


def test_nyud_missing_root_corrupt_image_wrong_shape(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        build_dataset(_nyud_cfg(tmp_path / "nope", tmp_path), "train", train=False)
    root = tmp_path / "nyud"
    _nyud_tree(root)
    (root / "images" / "0001.png").write_bytes(b"not a png")
    ds, _ = build_dataset({**_nyud_cfg(root, tmp_path), "tasks": ["semseg"]}, "val", train=False)
    with pytest.raises(UserError, match="corrupt"):
        ds[1]
    np.save(root / "depth" / "0000.npy", np.ones((5, 5), np.float32))
    ds, _ = build_dataset({**_nyud_cfg(root, tmp_path), "tasks": ["depth"]}, "val", train=False)
    with pytest.raises(UserError, match="shape 5x5, expected 12x16"):
        ds[0]
    (root / "gt_sets" / "val.txt").unlink()
    with pytest.raises(UserError, match="split file"):
        build_dataset(_nyud_cfg(root, tmp_path), "val", train=False)


def test_pascal_adapter_reads_layout(tmp_path):
    from scipy.io import savemat

    root = tmp_path / "pascal"
    h, w = 10, 14
    for d in ("JPEGImages", "semseg/pascal-context", "human_parts", "normals_distill", "sal_distill",
              "pascal-context/trainval", "ImageSets/Context"):
        (root / d).mkdir(parents=True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "JPEGImages" / "a.jpg")
    Image.fromarray(rng.integers(0, 60, (h, w), dtype=np.uint8)).save(root / "semseg/pascal-context/a.png")
    savemat(root / "human_parts" / "a.mat", {"parts": rng.integers(0, 7, (h, w))})
    Image.fromarray(rng.integers(1, 255, (h, w, 3), dtype=np.uint8)).save(root / "normals_distill" / "a.png")
    Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(root / "sal_distill" / "a.png")
    lm = np.zeros((h, w), np.int64)
    lm[:, 7:] = 3
    savemat(root / "pascal-context/trainval/a.mat", {"LabelMap": lm})
    for s in ("train", "val"):
        (root / "ImageSets/Context" / f"{s}.txt").write_text("a\n")
    cfg = {"dataset": "pascal", "root": str(root), "cache_dir": str(tmp_path / "c"),
           "tasks": ["semseg", "parts", "saliency", "normals", "edge"]}
    ds, info = build_dataset(cfg, "val", train=False)
    s = ds.load(0)
    assert s["edge"][0, :, 6].all() and s["edge"][0, :, :6].sum() == 0
    assert s["parts"].shape == (h, w) and info.num_classes == 60
    json.dumps(info.edge_max_dist)


def test_bounding_box_culling_changes_no_label():
    fast, full = SceneGenerator(48, 64), SceneGenerator(48, 64)
    full._rays_near = lambda *a: None  # every primitive against every ray
    for i in range(8):
        a, b = fast.render(5, i), full.render(5, i)
        assert np.array_equal(a.semseg, b.semseg) and np.array_equal(a.parts, b.parts)
        assert np.array_equal(a.depth, b.depth) and np.array_equal(a.image, b.image)


def test_centroid_cache_is_keyed_by_root_and_survives_a_truncated_file(tmp_path):
    from trcnas.nas.data.real import centroid_cache_path

    a, b = tmp_path / "a", tmp_path / "b"
    _nyud_tree(a)
    _nyud_tree(b)
    for i in ("0000", "0001"):  # copy b: same ids, other normals (all pointing up)
        n = np.zeros((12, 16, 3), np.float32)
        n[..., 2] = 1
        np.save(b / "normals" / f"{i}.npy", n)
    cfg_a, cfg_b = _nyud_cfg(a, tmp_path), _nyud_cfg(b, tmp_path)  # one shared cache_dir
    _, info_a = build_dataset(cfg_a, "val", train=False, progress=False)
    _, info_b = build_dataset(cfg_b, "val", train=False, progress=False)
    assert not np.allclose(info_a.normal_centroids, info_b.normal_centroids)  # not a stale reuse of a's
    files = sorted((tmp_path / "c").glob("nyud-normal-centroids-*.json"))
    assert len(files) == 2
    ds_a, _ = build_dataset(cfg_a, "train", train=False, progress=False)
    path = centroid_cache_path("nyud", ds_a, cfg_a["cache_dir"])
    good = path.read_text()
    path.write_text(good[: len(good) // 2])  # a truncated file (a kill mid-write by an older version)
    _, again = build_dataset(cfg_a, "val", train=False, progress=False)
    assert np.allclose(again.normal_centroids, info_a.normal_centroids)
    assert path.read_text() == good  # recomputed and replaced
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.startswith(".")]  # no temporary left


def test_result_files_get_the_umask_mode(tmp_path):
    import os

    from trcnas.spaces.io import atomic_write_text

    old = os.umask(0o022)
    try:
        p = atomic_write_text(tmp_path / "r.json", "{}")
        assert p.stat().st_mode & 0o777 == 0o644
        os.umask(0o002)
        assert atomic_write_text(tmp_path / "s.json", "{}").stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(old)
