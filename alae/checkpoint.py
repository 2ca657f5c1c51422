"""The one checkpoint format: `state_dict`s plus the resolved params, loaded with
`torch.load(weights_only=True)` so a model file can never run code.

Besides the EMA networks (what evaluation, figures and the CLI use), a file written by training
holds the training state: the trained networks, both optimizers, the images seen and the RNG
states (as tensors), under "training".
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

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


def save_model(path: str | Path, ema: ALAE, params: Params, meta: dict[str, Any],
               training: Optional[dict[str, Any]] = None) -> None:
    """`training`: the trainer's state (`TrainResult.state()`): networks, optimizers, images
    seen, RNG states."""
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "params": params.to_dict(),
        "shape": {"channels": ema.channels, "resolution": ema.resolution},
        "ema": ema.state_dict(),
        "meta": meta,
    }
    if training is not None:
        ckpt["training"] = training
    atomic_save(ckpt, path)


def _load(path: Path, device: str | torch.device) -> dict:
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
    return ckpt


def load_training_state(path: str | Path, device: str | torch.device = "cpu"
                        ) -> tuple[ALAE, ALAE, Params, dict]:
    """(trained model, EMA model, params, training state) of a file written by training; the
    state keeps "opt_ed", "opt_fg" (optimizer state_dicts), "images_seen" and "rng"."""
    path = Path(path)
    ckpt = _load(path, device)
    if "training" not in ckpt:
        raise CheckpointError(f"{path}: holds no training state (only the EMA model)")
    ema, params, _ = load_model(path, device)
    state = ckpt["training"]
    try:
        model = build_model(params.model, **ckpt["shape"])
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"{path}: damaged model file ({str(e).splitlines()[0]})") from None
    return model.to(device), ema, params, state


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[ALAE, Params, dict]:
    """The EMA model (eval mode, no grad), its params and the training metadata."""
    path = Path(path)
    ckpt = _load(path, device)
    try:
        params = params_from_dict(ckpt["params"])
        model = build_model(params.model, **ckpt["shape"])
        model.load_state_dict(ckpt["ema"])
    except (UserError, KeyError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"{path}: damaged model file ({str(e).splitlines()[0]})") from None
    model.to(device).eval().requires_grad_(False)
    return model, params, ckpt.get("meta", {})
