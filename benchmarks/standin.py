"""A random stand-in for pytorch-fid's Inception weights file, for tests and speed measurements
only: pytorch-fid's network with default-initialised convolutions and every batch-norm's running
statistics measured on a few smooth random images (a fresh network's untouched statistics give
near-constant features, FID ~ 0 for anything). A number computed with it is not an Inception FID.

It is written under the exact name pytorch-fid trusts, so it goes only where nothing real looks:
`$TORCH_HOME/hub/checkpoints/` with TORCH_HOME set to a folder under the system's temporary
directory. Anywhere else (TORCH_HOME unset, so the real `~/.cache/torch`, or a lasting folder)
every later `fid_inception` would silently be meaningless, so it refuses.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from alae.errors import UserError
from alae.io import atomic_open
from alae.metrics.inception import fid_inception_structure, weights_path, wrap


def standin_path() -> Path:
    """Where the stand-in goes (pytorch-fid's lookup path), or UserError when that is not inside
    a TORCH_HOME under the temporary directory."""
    home = os.environ.get("TORCH_HOME")
    path = weights_path().resolve()
    temp = Path(tempfile.gettempdir()).resolve()
    if not home:
        raise UserError(f"refusing to write stand-in Inception weights to {path}: TORCH_HOME is "
                        f"not set, so that is the real torch cache; set TORCH_HOME to a "
                        f"folder under {temp}")
    home_dir = Path(home).resolve()
    if not (home_dir.is_relative_to(temp) and home_dir != temp and path.is_relative_to(home_dir)):
        raise UserError(f"refusing to write stand-in Inception weights to {path}: only a "
                        f"temporary TORCH_HOME (a folder under {temp}) may hold them")
    return path


def write_standin_weights(seed: int = 0, calibration_images: int = 4) -> Path:
    """Write the stand-in (atomically) where pytorch-fid looks, after `standin_path`'s check."""
    path = standin_path()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = fid_inception_structure()
        wrapper = wrap(net)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None          # cumulative average over the calibration pass
        low = torch.rand(calibration_images, 3, 8, 8)
        # 128 px instead of 299 (5x cheaper): statistics of the right order, which is all a
        # stand-in needs.
        images = F.interpolate(low, size=(128, 128), mode="bilinear", align_corners=False)
        wrapper.train()
        wrapper.resize_input = False
        with torch.inference_mode():
            wrapper(images)
    with atomic_open(path, "wb") as f:
        torch.save(net.state_dict(), f)
    return path
