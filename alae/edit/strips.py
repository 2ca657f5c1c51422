"""Editing real images along a direction in W (`alae edit`): encode, move the chosen style
slots along the direction, decode; one strip per image.

A strength is in standard deviations of the training codes' projection on the direction (the
directions file stores their covariance), so +1 moves a code as far as the codes themselves
typically differ along it, whatever the direction's origin.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from alae.errors import UserError
from alae.figures import grid, slot_resolutions, style_ranges, titled
from alae.nn import ALAE
from alae.sampling import with_noise

MAX_STRENGTH = 3.0
LAYERS = ("coarse", "middle", "fine", "all")


def edit_slots(model: ALAE, layers: str) -> range:
    """The style slots `layers` names: every slot for `all` (an MLP's one code), else a
    StyleALAE's coarse, middle or fine block (alae.figures.style_ranges)."""
    if layers == "all":
        return range(model.num_styles)
    if not model.progressive:
        raise UserError(f"--layers {layers}: style slots are a StyleALAE's; StyleALAE only "
                        "(an MLP model edits its one code: --layers all)")
    ranges = style_ranges(model)
    if layers not in ranges:
        raise UserError(f"--layers {layers}: a {model.resolution}x{model.resolution} model has "
                        f"only {', '.join(ranges)} styles (or all)")
    return ranges[layers]


def check_strength(strength: float) -> None:
    if not -MAX_STRENGTH <= strength <= MAX_STRENGTH:
        raise UserError(f"--strength {strength:g}: out of range "
                        f"{-MAX_STRENGTH:g}..{MAX_STRENGTH:g} (standard deviations of the "
                        "training codes along the direction)")


def moved_styles(model: ALAE, w: torch.Tensor, step: torch.Tensor, slots: range) -> torch.Tensor:
    """Codes w (N, latent) moved by `step` (latent,) on `slots`: per-slot styles (N, S, latent)
    for a StyleALAE, codes (N, latent) for an MLP (its one slot)."""
    if not model.progressive:
        return w + step
    styles = w[:, None].repeat(1, model.num_styles, 1)
    styles[:, slots.start:slots.stop] += step
    return styles


@torch.no_grad()
def edit_images(model: ALAE, x: torch.Tensor, vector: np.ndarray, std: float,
                strengths: np.ndarray, slots: range, noise: str = "random") -> torch.Tensor:
    """(N, T, C, H, W): image n decoded from E(x_n) + strengths[t] * std * vector on `slots`.
    Each image keeps one per-pixel noise along its strip (drawn from its own seed, or none),
    so that only the direction changes from column to column."""
    w = model.encode(x)
    v = torch.as_tensor(vector, dtype=w.dtype, device=w.device) * std
    columns = []
    for s in strengths:
        styles = moved_styles(model, w, float(s) * v, slots)
        seeds = list(range(len(x)))
        columns.append(with_noise(lambda c, n: model.decode(c, noise=n), styles, seeds, noise))
    return torch.stack(columns, dim=1)


def strip_figure(model: ALAE, x: torch.Tensor, edited: torch.Tensor, labels: list[str],
                 title: list[str], scale: int = 2) -> Image.Image:
    """One row per image: the input, then its edits; titled."""
    rows = [torch.cat([xi[None], ei]) for xi, ei in zip(x, edited)]
    return titled(grid(rows, labels, scale), title)


def strip_title(name: str, std: float, strengths: np.ndarray, layers: str, slots: range,
                model: ALAE, noise: str) -> list[str]:
    where = (f"style slots {slots.start}-{slots.stop - 1}, {slot_resolutions(model, slots)}"
             if model.progressive else "the code")
    shown = ", ".join(f"{s:+.2g}" for s in strengths)
    return [f"{name}: input, then strength {shown} std (1 std = {std:.3g} in W)",
            f"layers {layers} ({where}); noise {noise}"]


def row_label(name: str, width: int = 11) -> str:
    """A file name that fits the grid's label margin."""
    return name if len(name) <= width else name[:width - 1] + "~"

