"""The one checkpoint format: `state_dict`s plus the resolved params, loaded with
`torch.load(weights_only=True)` so a model file can never run code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from alae.config import Params, params_from_dict
from alae.errors import CheckpointError, UserError
from alae.io import atomic_open
from alae.nn import ALAE, build_model

FORMAT = "alae-model"
VERSION = 1


def atomic_save(obj: Any, path: str | Path) -> None:
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def save_model(path: str | Path, ema: ALAE, params: Params, meta: dict[str, Any]) -> None:
    atomic_save({
        "format": FORMAT,
        "version": VERSION,
        "params": params.to_dict(),
        "shape": {"channels": ema.channels, "resolution": ema.resolution},
        "ema": ema.state_dict(),
        "meta": meta,
    }, path)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[ALAE, Params, dict]:
    """The EMA model (eval mode, no grad), its params and the training metadata."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # pickle/zip errors come in many types; all mean "not ours"
        raise CheckpointError(f"{path}: not a model file of this project ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a model file of this project (no '{FORMAT}' marker)")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: model format version {ckpt.get('version')} is not {VERSION}")
    try:
        params = params_from_dict(ckpt["params"])
        model = build_model(params.model, **ckpt["shape"])
        model.load_state_dict(ckpt["ema"])
    except (UserError, KeyError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"{path}: damaged model file ({str(e).splitlines()[0]})") from None
    model.to(device).eval().requires_grad_(False)
    return model, params, ckpt.get("meta", {})
