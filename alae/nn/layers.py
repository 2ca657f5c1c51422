"""Equalized learning-rate layers (Karras et al. 2018, sec. 4.1; ALAE sec. 4).

Weights are stored N(0, 1) / lr_mul and scaled at run time by lr_mul * gain / sqrt(fan_in), so
every layer learns at the same speed under stock `torch.optim.Adam`, and `lr_mul` slows a layer
down (F and D use 0.1) without a custom optimizer.
"""
from __future__ import annotations

import math
from typing import Protocol, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn


class NoiseSource(Protocol):
    """Anything that draws G's noise planes of a shape (N, 1, H, W): `ImageNoise` (per-image
    seeds, metrics) or the training step's rank-aware draw (`alae.train.steps`)."""

    def draw(self, shape: Sequence[int], device=None, dtype=None) -> torch.Tensor: ...


class ImageNoise:
    """G's per-pixel noise drawn image by image: image k's planes, in the order G's layers ask
    for them, come from a CPU generator seeded with `seeds[k]` alone. An image then gets the
    same noise whatever batch it sits in, whatever the batch size and on any device (what
    metrics need). The generators advance as layers draw: use a fresh object per forward pass
    (two objects with the same seeds give two passes the same noise)."""

    def __init__(self, seeds: Sequence[int]):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def draw(self, shape: Sequence[int], device=None, dtype=None) -> torch.Tensor:
        if shape[0] != len(self.generators):
            raise ValueError(f"noise for {shape[0]} images asked of seeds for "
                             f"{len(self.generators)}")
        n = torch.empty(tuple(shape))
        for plane, g in zip(n, self.generators):
            plane.normal_(generator=g)
        return n.to(device=device, dtype=dtype)


# G's per-pixel noise: True draws it from the global RNG, a generator draws it from that
# generator alone (samples watched during training, which must not move the training's stream),
# a NoiseSource as it says (ImageNoise: image by image from per-image seeds, for metrics; the
# training step's source: this rank's slice of the global batch's draw), False adds none.
Noise = Union[bool, torch.Generator, NoiseSource]


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


class EqualConv2d(nn.Module):
    """Square-kernel convolution with the same run-time weight scaling as `EqualLinear`
    (fan_in = in_channels * kernel^2); 'same' padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int,
                 gain: float = math.sqrt(2.0), lr_mul: float = 1.0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = lr_mul * gain / math.sqrt(in_channels * kernel * kernel)
        self.lr_mul = lr_mul
        self.padding = kernel // 2

    fused = True  # up() and down() as one strided convolution (set per model: fused_resample)

    def _bias(self) -> torch.Tensor | None:
        return self.bias * self.lr_mul if self.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self._bias(), padding=self.padding)

    def up(self, x: torch.Tensor) -> torch.Tensor:
        """This convolution of the 2x nearest-upsampled x. Fused: one stride-2 transposed
        convolution with a 4x4 kernel, the same sums in 4/9 of the multiply-adds."""
        if not self.fused:
            return self(F.interpolate(x, scale_factor=2, mode="nearest"))
        kernel = _sum_shifts(self.weight.flip(-1, -2) * self.scale).transpose(0, 1)
        return F.conv_transpose2d(x, kernel, self._bias(), stride=2, padding=1)

    def down(self, x: torch.Tensor) -> torch.Tensor:
        """This convolution, then 2x2 average pooling. Fused: one stride-2 convolution with a
        4x4 kernel, the same sums in 4/9 of the multiply-adds (the bias commutes with the pool)."""
        if not self.fused:
            return F.avg_pool2d(self(x), 2)
        kernel = _sum_shifts(self.weight * (self.scale / 4))
        return F.conv2d(x, kernel, self._bias(), stride=2, padding=1)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i} -> {o}, kernel={k}, lr_mul={self.lr_mul}"


def _sum_shifts(weight: torch.Tensor) -> torch.Tensor:
    """(O, I, 3, 3) -> (O, I, 4, 4): the sum of the kernel placed at the four corners of a 4x4
    window. A 3x3 'same' convolution followed by 2x2 average pooling reads each output's 4x4
    input window with exactly these weights (/4); nearest 2x upsampling followed by it is the
    transpose of that pattern (StyleGAN's fused up/down-scaling, there used only above 128 px)."""
    if weight.shape[-2:] != (3, 3):
        raise ValueError(f"fused resampling needs a 3x3 kernel, not {tuple(weight.shape[-2:])}")
    w = F.pad(weight, (1, 1, 1, 1))
    return w[..., 1:, 1:] + w[..., :-1, 1:] + w[..., 1:, :-1] + w[..., :-1, :-1]


class Blur(nn.Module):
    """Depthwise [1, 2, 1] x [1, 2, 1] / 16 low-pass filter (StyleGAN, reference `Blur`): it
    smooths the blockiness of nearest upsampling and the aliasing of pooling."""

    def __init__(self):
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (k[:, None] * k[None, :] / 16)[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        return F.conv2d(x, self.kernel.expand(c, 1, 3, 3), padding=1, groups=c)


class NoiseInjection(nn.Module):
    """Adds per-pixel N(0, 1) noise, shared by all channels, times a learned per-channel weight
    that starts at 0 (StyleGAN sec. 2; the reference initialises it to zero)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, noise: Noise = True) -> torch.Tensor:
        if noise is False:
            return x
        return x + self.weight.view(1, -1, 1, 1) * pixel_noise(x, noise)


def pixel_noise(x: torch.Tensor, noise: Noise) -> torch.Tensor:
    """One N(0, 1) plane per image of x (N, 1, H, W), drawn as `noise` says (not False)."""
    shape = (x.shape[0], 1, x.shape[2], x.shape[3])
    if isinstance(noise, torch.Generator):
        return torch.randn(shape, generator=noise, device=x.device, dtype=x.dtype)
    if noise is True:
        return torch.randn(shape, device=x.device, dtype=x.dtype)
    return noise.draw(shape, x.device, x.dtype)


def instance_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero mean and unit variance per sample and channel over H x W (no affine)."""
    x = x - x.mean(dim=(2, 3), keepdim=True)
    return x * torch.rsqrt(x.pow(2).mean(dim=(2, 3), keepdim=True) + eps)


def channel_stats(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-channel mean and standard deviation over H x W, (N, 2C): the instance-norm statistics
    that StyleALAE's encoder maps into w (ALAE sec. 4, eq. 11)."""
    mean = x.mean(dim=(2, 3))
    std = (x - mean[..., None, None]).pow(2).mean(dim=(2, 3)).add(eps).sqrt()
    return torch.cat([mean, std], dim=1)


class AdaIN(nn.Module):
    """Style modulation of instance-normalised features: x * (1 + gamma(w)) + beta(w), gamma and
    beta from one equalized linear layer with gain 1 (reference `StyleMod`). The `1 +` makes the
    zero-initialised biases an identity at the start."""

    def __init__(self, latent: int, channels: int):
        super().__init__()
        self.style = EqualLinear(latent, 2 * channels, gain=1.0)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.style(w)[..., None, None].chunk(2, dim=1)
        return x * (1 + gamma) + beta
