"""The MLP ALAE of the paper's MNIST experiment (ALAE sec. 5, "MLP ALAE"; reference `EncoderFC`,
`GeneratorFC`, `MappingF`, `MappingD`).

Deliberate difference (DESIGN.md): E and G work on the stored, zero-padded 32x32 image
(C*R*R inputs) instead of resampling back to 28x28.
"""
from __future__ import annotations

import torch
from torch import nn

from alae.nn.layers import EqualLinear, PixelNorm, mlp

MAPPING_LR_MUL = 0.1  # F and D learn ten times slower (reference: mapping lr multiplier 0.1)


class MappingF(nn.Module):
    """F: z -> w. Pixel norm, then `layers` equalized linear layers with leaky ReLU 0.2."""

    def __init__(self, latent: int, layers: int):
        super().__init__()
        self.norm = PixelNorm()
        self.net = mlp([latent] * (layers + 1), lr_mul=MAPPING_LR_MUL, activate_last=True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(z))


class MappingD(nn.Module):
    """D: w -> logit. Three equalized linear layers, no activations (as the reference)."""

    def __init__(self, latent: int):
        super().__init__()
        self.net = nn.Sequential(
            EqualLinear(latent, latent, lr_mul=MAPPING_LR_MUL),
            EqualLinear(latent, latent, lr_mul=MAPPING_LR_MUL),
            EqualLinear(latent, 1, lr_mul=MAPPING_LR_MUL),
        )

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.net(w).squeeze(1)


class EncoderMLP(nn.Module):
    """E: image -> w. pixels -> hidden -> hidden -> latent, leaky ReLU after every layer."""

    def __init__(self, latent: int, hidden: int, channels: int, resolution: int):
        super().__init__()
        self.net = mlp([channels * resolution * resolution, hidden, hidden, latent],
                       activate_last=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class GeneratorMLP(nn.Module):
    """G: w -> image. latent -> hidden -> hidden -> pixels; linear output (no tanh)."""

    def __init__(self, latent: int, hidden: int, channels: int, resolution: int):
        super().__init__()
        self.shape = (channels, resolution, resolution)
        self.net = mlp([latent, hidden, hidden, channels * resolution * resolution],
                       activate_last=False)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.net(w).view(-1, *self.shape)
