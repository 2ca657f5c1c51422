"""Pixels: the networks see floats in [-1, 1], files and snapshots hold 8-bit values u, and
u / 127.5 - 1 maps one to the other (the reference's scaling). The data loader does the same
mapping through a float64-built lookup table (alae/data/loader.py), which differs from this
float32 arithmetic in the last bit for half the values: both are kept as they are."""
from __future__ import annotations

import torch


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Floats in [-1, 1] -> uint8 of the same shape; out-of-range values are clipped."""
    return x.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)


def from_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 (or floats holding 0..255) -> float32 in [-1, 1]."""
    return x.float() / 127.5 - 1.0
