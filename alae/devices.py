"""The one place where a device name from params.yaml or a CLI option becomes a torch device."""
from __future__ import annotations

import torch

from alae.errors import UserError


def resolve_device(name: str, key: str = "device") -> torch.device:
    """`auto` is CUDA when there is one, else the CPU; one-line UserError (naming `key`) for
    CUDA where there is none."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{key}: {name!r} requested but CUDA is not available here")
    return device
