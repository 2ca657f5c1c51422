"""Equalized learning-rate layers (Karras et al. 2018, sec. 4.1; ALAE sec. 4).

Weights are stored N(0, 1) / lr_mul and scaled at run time by lr_mul * gain / sqrt(fan_in), so
every layer learns at the same speed under stock `torch.optim.Adam`, and `lr_mul` slows a layer
down (F and D use 0.1) without a custom optimizer.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class EqualLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, gain: float = math.sqrt(2.0),
                 lr_mul: float = 1.0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.scale = lr_mul * gain / math.sqrt(in_features)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        return F.linear(x, self.weight * self.scale, bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]} -> {self.weight.shape[0]}, lr_mul={self.lr_mul}"


class PixelNorm(nn.Module):
    """Normalise each latent vector to unit RMS (StyleGAN's input to the mapping network)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


def mlp(sizes: list[int], lr_mul: float = 1.0, activate_last: bool = True,
        gain: float = math.sqrt(2.0)) -> nn.Sequential:
    """Equalized linear layers with leaky ReLU 0.2 between them (and after the last if asked)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(EqualLinear(a, b, gain=gain, lr_mul=lr_mul))
        if activate_last or i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)
