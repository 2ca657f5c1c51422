"""StyleALAE's generator G and encoder E with progressive growing (ALAE sec. 4, fig. 3;
StyleGAN sec. 2; reference `net.py`: `DecodeBlock`, `EncodeBlock`, `ToRGB`, `FromRGB`).

Levels of detail: level `lod` works at 4 * 2**lod pixels; level 0 is 4x4. Both networks always
take an explicit `(lod, alpha)` and work at that level's resolution. While level `lod` blends
in (alpha < 1):
- G lerps the upsampled to-RGB output of level lod-1 with the new level's to-RGB output;
- E scales the newest block's w contributions by alpha and lerps its features with the
  from-RGB features of the 2x average-pooled input.
At alpha = 0 both are exactly the previous level's networks.

Their `lod` and `alpha` buffers only store the level training has reached (`train_step`
records it, the checkpoint keeps it); the networks never read them. `alae.nn.alae.ALAE` does,
when a caller gives no level: it runs that level and resizes to the final resolution.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from alae.nn.layers import (AdaIN, Blur, EqualConv2d, EqualLinear, Noise, NoiseInjection,
                            channel_stats, instance_norm)

TO_RGB_GAIN = 0.03  # reference `ToRGB`: the output layer starts nearly silent


def num_levels(resolution: int) -> int:
    """4x4 is level 0: a 32x32 model has levels 0..3."""
    return int(math.log2(resolution)) - 1


def block_channels(level: int, levels: int, start: int, maximum: int) -> int:
    """Feature maps of level `level`: start at the finest level, doubling towards 4x4, capped
    (reference: min(start * 2**(layers - 1 - i), max)). Level -1 is E's output width of level 0."""
    return min(start * 2 ** (levels - 1 - level), maximum)


def _act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


def upsample(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    return x if factor == 1 else F.interpolate(x, scale_factor=factor, mode="nearest")


def downsample(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    return x if factor == 1 else F.avg_pool2d(x, factor)


class SynthesisBlock(nn.Module):
    """One resolution of G: (upsample, 3x3 conv, blur | learned 4x4 constant), then twice
    noise, bias, leaky ReLU, instance norm, AdaIN, with a 3x3 conv between."""

    def __init__(self, in_channels: int, out_channels: int, latent: int, first: bool):
        super().__init__()
        self.first = first
        if first:
            self.const = nn.Parameter(torch.ones(1, out_channels, 4, 4))
        else:
            self.conv1 = EqualConv2d(in_channels, out_channels, 3, bias=False)
            self.blur = Blur()
        self.noise1, self.noise2 = NoiseInjection(out_channels), NoiseInjection(out_channels)
        self.bias1 = nn.Parameter(torch.zeros(out_channels))
        self.bias2 = nn.Parameter(torch.zeros(out_channels))
        self.style1, self.style2 = AdaIN(latent, out_channels), AdaIN(latent, out_channels)
        self.conv2 = EqualConv2d(out_channels, out_channels, 3, bias=False)

    def forward(self, x: Optional[torch.Tensor], w1: torch.Tensor, w2: torch.Tensor,
                noise: Noise = True) -> torch.Tensor:
        if self.first:
            x = self.const.expand(w1.shape[0], -1, -1, -1)
        else:
            x = self.blur(self.conv1.up(x))
        x = _act(self.noise1(x, noise) + self.bias1.view(1, -1, 1, 1))
        x = self.style1(instance_norm(x), w1)
        x = self.conv2(x)
        x = _act(self.noise2(x, noise) + self.bias2.view(1, -1, 1, 1))
        return self.style2(instance_norm(x), w2)


class StyleSynthesis(nn.Module):
    """G: styles -> image. `w` is (N, latent), broadcast to every style slot, or (N, num_styles,
    latent), one style per slot (two per level, coarse first: what style mixing and truncation
    act on). Output linear (no tanh), as the reference."""

    def __init__(self, latent: int, channels: int, resolution: int, start: int, maximum: int):
        super().__init__()
        self.levels = num_levels(resolution)
        self.num_styles = 2 * self.levels
        self.resolution = resolution
        width = [block_channels(i, self.levels, start, maximum) for i in range(self.levels)]
        self.blocks = nn.ModuleList(
            SynthesisBlock(width[max(i - 1, 0)], width[i], latent, first=i == 0)
            for i in range(self.levels))
        self.to_rgb = nn.ModuleList(EqualConv2d(c, channels, 1, gain=TO_RGB_GAIN) for c in width)
        self.register_buffer("lod", torch.tensor(self.levels - 1))
        self.register_buffer("alpha", torch.tensor(1.0))

    def broadcast(self, w: torch.Tensor) -> torch.Tensor:
        if w.dim() == 2:
            return w[:, None].expand(-1, self.num_styles, -1)
        if w.dim() != 3 or w.shape[1] != self.num_styles:
            raise ValueError(f"styles of shape {tuple(w.shape)}: expected (N, latent) or "
                             f"(N, {self.num_styles}, latent)")
        return w

    def forward(self, w: torch.Tensor, lod: int, alpha: float = 1.0,
                noise: Noise = True) -> torch.Tensor:
        """Images at level `lod`'s resolution (4 * 2**lod)."""
        blend = lod > 0 and alpha < 1.0
        styles = self.broadcast(w)
        x, previous = None, None
        for i in range(lod + 1):
            if blend and i == lod:
                previous = upsample(self.to_rgb[lod - 1](x))
            x = self.blocks[i](x, styles[:, 2 * i], styles[:, 2 * i + 1], noise)
        image = self.to_rgb[lod](x)
        if blend:
            image = torch.lerp(previous, image, alpha)
        return image


class EncoderBlock(nn.Module):
    """One resolution of E: 3x3 conv, leaky ReLU, statistics -> w, instance norm, blur, 3x3 conv,
    2x2 average pool, leaky ReLU, statistics -> w, instance norm. Returns the features for the
    next (coarser) block and this block's contribution to w."""

    def __init__(self, in_channels: int, out_channels: int, latent: int, style_gain: float,
                 norm_eps: float = 1e-8):
        super().__init__()
        self.norm_eps = norm_eps
        self.conv1 = EqualConv2d(in_channels, in_channels, 3)
        self.style1 = EqualLinear(2 * in_channels, latent, gain=style_gain)
        self.blur = Blur()
        self.conv2 = EqualConv2d(in_channels, out_channels, 3)  # its bias commutes with the pool
        self.style2 = EqualLinear(2 * out_channels, latent, gain=style_gain)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = _act(self.conv1(x))
        w = self.style1(channel_stats(x))
        x = self.conv2.down(self.blur(instance_norm(x, self.norm_eps)))
        x = _act(x)
        w = w + self.style2(channel_stats(x))
        return instance_norm(x, self.norm_eps), w


class StyleEncoder(nn.Module):
    """E: image -> w, the sum of every block's statistics mapped to w-space (no final dense
    layer). Blocks are indexed by level like G's, so `blocks[lod]` mirrors G's `blocks[lod]`.

    `as_reference` (model.encoder_as_reference) is the authors' E exactly, as their released
    models were trained: leaky ReLU 0.2 applied twice after from-RGB (their `FromRGB` applies it
    and `encode` again: an effective negative slope of 0.04), and the statistics -> w layers at
    the equalized-lr default gain sqrt(2), and instance norm with torch's default eps 1e-5 (their
    `nn.InstanceNorm2d`; G's is 1e-8). False: one activation, gain 1, eps 1e-8 (this project's E
    before checkpoint format 2)."""

    def __init__(self, latent: int, channels: int, resolution: int, start: int, maximum: int,
                 as_reference: bool = True):
        super().__init__()
        self.levels = num_levels(resolution)
        self.resolution = resolution
        self.as_reference = as_reference
        width = [block_channels(i, self.levels, start, maximum) for i in range(-1, self.levels)]
        gain, eps = (math.sqrt(2.0), 1e-5) if as_reference else (1.0, 1e-8)
        self.blocks = nn.ModuleList(
            EncoderBlock(width[i + 1], width[i], latent, gain, eps) for i in range(self.levels))
        self.from_rgb = nn.ModuleList(
            EqualConv2d(channels, width[i + 1], 1) for i in range(self.levels))
        self.register_buffer("lod", torch.tensor(self.levels - 1))
        self.register_buffer("alpha", torch.tensor(1.0))

    def forward(self, x: torch.Tensor, lod: int, alpha: float = 1.0) -> torch.Tensor:
        """w of images at level `lod`'s resolution (4 * 2**lod)."""
        h, w = self.blocks[lod](self._from_rgb(lod, x))
        if lod > 0 and alpha < 1.0:
            w = w * alpha
            previous = self._from_rgb(lod - 1, downsample(x))
            h = torch.lerp(previous, h, alpha)
        for i in range(lod - 1, -1, -1):
            h, contribution = self.blocks[i](h)
            w = w + contribution
        return w

    def _from_rgb(self, lod: int, x: torch.Tensor) -> torch.Tensor:
        h = _act(self.from_rgb[lod](x))
        return _act(h) if self.as_reference else h
