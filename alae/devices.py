"""The one place where a device name from params.yaml or a CLI option becomes a torch device."""
from __future__ import annotations

import torch

from alae.errors import UserError

NAMES = "auto, cpu, cuda or cuda:N"  # what params.yaml accepts too (config.py)


def resolve_device(name: str, key: str = "device") -> torch.device:
    """`auto` is CUDA when there is one, else the CPU. A name that is no device, or a device that
    is not there, is a one-line UserError naming `key`: checked here, before anything is loaded,
    so that it is not reported later as a damaged file."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UserError(f"{key}: {name!r} is not a device ({NAMES})")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{key}: {name!r} requested but CUDA is not available here")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"{key}: {name!r} requested but there are only "
                        f"{torch.cuda.device_count()} CUDA devices here")
    return device
