"""`trcnas data check` on fixture trees: the good tree passes with exit 0; each planted problem (depth in
millimetres, 16-bit PNG normals, thick edges, a split entry without files, a label of the wrong shape) is named
on its own line with exit 2."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from test_data import _nyud_tree

from trcnas.runners.cli import main


def _png16(path, arr: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG (PIL cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _plant(root, ids, problem):
    if problem == "depth-mm":
        for i in ids:
            d = np.load(root / "depth" / f"{i}.npy")
            np.save(root / "depth" / f"{i}.npy", d * 1000)
    elif problem == "normals-16bit":
        for i in ids:
            n = np.load(root / "normals" / f"{i}.npy")
            (root / "normals" / f"{i}.npy").unlink()
            _png16(root / "normals" / f"{i}.png", ((n + 1) / 2 * 65535).round().astype(np.uint16))
    elif problem == "thick-edges":
        for i in ids:
            e = np.asarray(Image.open(root / "edge" / f"{i}.png")) > 0
            Image.fromarray(ndimage.binary_dilation(e, iterations=2).astype(np.uint8) * 255).save(
                root / "edge" / f"{i}.png")
    elif problem == "missing-entry":
        (root / "gt_sets" / "train.txt").write_text("\n".join([*ids, "9999"]))
    elif problem == "wrong-shape":
        Image.fromarray(np.zeros((20, 20), np.uint8)).save(root / "segmentation" / f"{ids[0]}.png")


SAYS = {"depth-mm": "depth: values up to", "normals-16bit": "normals: stored as 16-bit values (6 16-bit PNG",
        "thick-edges": "of the edge pixels are thicker than 2 px", "missing-entry": "train sample '9999': missing file",
        "wrong-shape": "has shape 20x20, expected 40x48"}


def _check(root, capsys):
    code = main(["data", "check", "--config", "nyud-hrnet18", "--set", f"data.root={root}", "--no-progress"])
    return code, capsys.readouterr().out


def test_good_tree_is_usable(tmp_path, capsys):
    _nyud_tree(tmp_path / "nyud", n=3, size=(40, 48))
    code, out = _check(tmp_path / "nyud", capsys)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].endswith("train split 3 samples, val split 3 samples")
    assert lines[-1] == "verdict: usable (no problem found)"
    depth = next(ln for ln in lines if ln.strip().startswith("depth"))
    assert "6 read" in depth and "(metres)" in depth and "0.0 % invalid" in depth
    semseg = next(ln for ln in lines if ln.strip().startswith("semseg"))
    assert "40 classes present" in semseg
    edge = next(ln for ln in lines if ln.strip().startswith("edge"))
    assert "0 % of them thicker than 2 px" in edge


@pytest.mark.parametrize("problem", list(SAYS))
def test_each_planted_problem_is_named_and_exits_2(tmp_path, capsys, problem):
    ids = _nyud_tree(tmp_path / "nyud", n=3, size=(40, 48))
    _plant(tmp_path / "nyud", ids, problem)
    code, out = _check(tmp_path / "nyud", capsys)
    assert code == 2, out
    lines = out.splitlines()
    assert lines[-1].startswith("verdict: NOT usable (1 problem)"), out
    problems = lines[lines.index("problems (1):") + 1 : -1]
    assert len(problems) == 1 and SAYS[problem] in problems[0], (problem, problems)


def test_check_of_a_generated_dataset_or_missing_root_is_one_line(tmp_path, capsys):
    assert main(["data", "check", "--config", "synthetic-mt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is generated" in err[0]
    assert main(["data", "check", "--config", "nyud-hrnet18", "--set", f"data.root={tmp_path / 'nope'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "nope") in err[0]
