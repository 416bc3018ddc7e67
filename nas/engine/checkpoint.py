"""Checkpoints: atomic writes, weights-only loads, RNG state capture for bit-exact resumption."""

from __future__ import annotations

import io
import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import torch

from trcnas.nas.errors import UserError
from trcnas.spaces.io import atomic_write_bytes


def rng_state() -> dict:
    """Torch, NumPy, Python and CUDA generator states as tensors (loadable with weights_only=True)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(gauss)},
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": float("nan") if py_gauss is None else py_gauss},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    gauss = None if p["gauss"] != p["gauss"] else p["gauss"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), gauss))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict) -> Path:
    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, map_location="cpu", keys: tuple[str, ...] = ("model",),
                    remedy: str = "start over in a new --out, or pass --overwrite to replace it") -> dict:
    """A trcnas checkpoint, loaded weights-only. A file that is not one (truncated, corrupt, another
    program's) is one ``UserError`` saying what it is not and ``remedy``; never torch's advice to unpickle it
    unsafely."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for a broken file
        # torch.save writes a zip archive; weights_only refuses one that holds objects a checkpoint never holds
        if zipfile.is_zipfile(path) and isinstance(e, pickle.UnpicklingError):
            what = "holds Python objects that a trcnas checkpoint never holds (another program's file?)"
        else:
            what = "is not a readable PyTorch file (truncated or corrupt)"
    else:
        missing = [k for k in keys if not isinstance(state, dict) or k not in state]
        if not missing:
            return state
        what = f"is a PyTorch file but not a trcnas checkpoint (no {missing[0]!r} entry)"
    raise UserError(f"checkpoint {path} {what}; {remedy}")


def load_model_state(model: torch.nn.Module, state: dict, path: str | Path,
                     remedy: str = "start over in a new --out, or pass --overwrite to replace it") -> None:
    """``state["model"]`` into ``model``; weights of another network are one ``UserError``, not torch's
    page of missing and unexpected keys."""
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as e:
        first = str(e).splitlines()[0][:160]
        raise UserError(f"checkpoint {path} holds the weights of another network ({first}); {remedy}") from None
