"""Exponential moving average of all four networks, with a half-life counted in images
(reference: beta = 0.5 ** (batch / 10k)); evaluation, figures and the CLI use the EMA copy.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def make_ema(model: nn.Module) -> nn.Module:
    ema = copy.deepcopy(model).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, batch: int, half_life_kimg: float) -> None:
    beta = 0.5 ** (batch / (half_life_kimg * 1000)) if half_life_kimg > 0 else 0.0
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
