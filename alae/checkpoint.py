"""The one checkpoint format: `state_dict`s plus the resolved params, loaded with
`torch.load(weights_only=True)` so a model file can never run code.

Besides the EMA networks (what evaluation, figures and the CLI use), a file written by training
holds the training state: the trained networks, both optimizers, the images seen and the RNG
states (as tensors), under "training".
"""
from __future__ import annotations

import contextlib
import fcntl
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from alae.config import Params, parse_params
from alae.devices import resolve_device
from alae.errors import CheckpointError, UserError
from alae.io import atomic_open
from alae.nn import ALAE, build_model

FORMAT = "alae-model"
# 2: model.encoder_as_reference (E's from-RGB activation and style gain as the authors'); a
# version-1 file holds an E whose weights mean something else under version 2's forward pass.
# 3: E's instance norm eps 1e-5 under model.encoder_as_reference (the authors' nn.InstanceNorm2d
# default, found by the parity check of `alae import-official`); a version-2 E normalised with 1e-8.
VERSION = 3


def atomic_save(obj: Any, path: str | Path) -> None:
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def save_model(path: str | Path, ema: ALAE, params: Params, meta: dict[str, Any],
               training: Optional[dict[str, Any]] = None) -> None:
    """`training`: the trainer's state (`Trainer.state()`): networks, optimizers, images
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


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", mmap: bool = False
                    ) -> dict:
    """The raw checkpoint dict (format checked), as `Trainer(resume=...)` takes it. `mmap`: the
    tensors stay in the file until used (on the CPU), so reading only the params costs nothing."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found")
    # A device that is not there makes torch.load fail too: it must not read as a bad file.
    device = resolve_device(str(device))
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True, mmap=mmap)
    except Exception as e:  # pickle/zip errors come in many types; all mean "not ours"
        raise CheckpointError(f"{path}: not a model file of this project ({type(e).__name__})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a model file of this project (no '{FORMAT}' marker)")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: model format version {ckpt.get('version')} is not "
                              f"{VERSION} (written by another version of this project: retrain "
                              "it, e.g. `dvc repro`)")
    return ckpt


def load_training_state(path: str | Path, device: str | torch.device = "cpu"
                        ) -> tuple[ALAE, ALAE, Params, dict]:
    """(trained model, EMA model, params, training state) of a file written by training; the
    state keeps "opt_ed", "opt_fg" (optimizer state_dicts), "images_seen" and "rng"."""
    path = Path(path)
    ckpt = load_checkpoint(path, device)
    if "training" not in ckpt:
        raise CheckpointError(f"{path}: holds no training state (only the EMA model)")
    ema, params, _ = load_model(path, device)
    state = ckpt["training"]
    try:
        model = build_model(params.model, **ckpt["shape"])
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"{path}: damaged model file ({str(e).splitlines()[0]})") from e
    return model.to(device), ema, params, state


def load_snapshots(path: str | Path) -> dict[int, torch.Tensor]:
    """The per-level sample grids training kept (uint8, by level of detail); {} if none."""
    training = load_checkpoint(path, "cpu").get("training", {})
    return {int(k): v for k, v in training.get("snapshots", {}).items()}


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[ALAE, Params, dict]:
    """The EMA model (eval mode, no grad), its params and the training metadata."""
    path = Path(path)
    ckpt = load_checkpoint(path, device)
    try:
        params = parse_params(ckpt["params"])  # validated again: cheap
        model = build_model(params.model, **ckpt["shape"])
        model.load_state_dict(ckpt["ema"])
    except (UserError, KeyError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"{path}: damaged model file ({str(e).splitlines()[0]})") from e
    model.to(device).eval().requires_grad_(False)
    return model, params, ckpt.get("meta", {})


class RunCheckpoints:
    """The resumable checkpoints of one run, in its working folder (DESIGN.md: under the repo
    root, named by the run key, not a DVC output): `ckpt-<images seen>.pt`, the newest `keep`."""

    PATTERN = "ckpt-*.pt"

    def __init__(self, folder: str | Path, keep: int = 3):
        self.folder, self.keep = Path(folder), keep

    @contextlib.contextmanager
    def exclusive(self) -> Iterator["RunCheckpoints"]:
        """Held while training: a second process on the same run (the same params and code,
        e.g. queued twice) stops at once instead of writing into the same checkpoints."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"{self.folder}: another process is training this run (same "
                                "params and code); wait for it or stop it") from None
            # Temporary files of a writer that was killed mid-write (the rename never happened).
            for stale in self.folder.glob(".ckpt-*.tmp"):
                stale.unlink(missing_ok=True)
            try:
                yield self
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def paths(self) -> list[Path]:
        """Oldest first (the zero-padded images-seen count sorts as text)."""
        return sorted(self.folder.glob(self.PATTERN))

    def save(self, ema: ALAE, params: Params, meta: dict[str, Any], training: dict[str, Any]
             ) -> Path:
        path = self.folder / f"ckpt-{int(training['images_seen']):012d}.pt"
        save_model(path, ema, params, meta, training=training)
        for old in self.paths()[:-self.keep]:
            old.unlink(missing_ok=True)
        return path

    def latest(self, params: Params, device: str | torch.device = "cpu"
               ) -> tuple[Optional[Path], Optional[dict]]:
        """The newest checkpoint that loads, and its path; a damaged newer one is named on
        stderr and passed over (writes are atomic, so this takes a disk fault or a hand edit)."""
        for path in reversed(self.paths()):
            try:
                ckpt = load_checkpoint(path, device)
            except CheckpointError as e:
                print(f"warning: {e}; trying an older checkpoint", file=sys.stderr)
                continue
            if "training" not in ckpt:
                print(f"warning: {path}: holds no training state; trying an older checkpoint",
                      file=sys.stderr)
                continue
            if ckpt["params"] != params.to_dict():
                raise CheckpointError(f"{path}: written with other params than this run's "
                                      "(its folder is named by the run key: was it copied?)")
            return path, ckpt
        return None, None

    def adopt(self, path: Path, ckpt: dict, params: Params, meta: dict[str, Any]) -> Path:
        """Another run's checkpoint `ckpt` (read from `path`), written here as this run's own:
        its state unchanged, under `params` and `meta`. The snapshot of the level it was at goes:
        a run that stops takes one of its current level, a run that goes on takes it later."""
        training = dict(ckpt["training"])
        training["snapshots"] = {k: v for k, v in training["snapshots"].items()
                                 if int(k) != int(training["lod"])}
        training["finished"] = False
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / path.name
        atomic_save({**ckpt, "params": params.to_dict(), "meta": meta, "training": training},
                    target)
        return target
