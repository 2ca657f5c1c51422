"""Projection of real images into W by optimisation (`alae project`), starting from the
encoder's answer E(x): the encoder's amortised inversion against per-image optimisation, the
question ALAE sec. 6 leaves open.

As StyleGAN2's projector (Karras et al. 2020, sec. 5 and appendix D): Adam on w (one code, or one
per style slot: W+, `w_plus`) and on G's per-pixel noise planes, with their regulariser that
keeps the noise free of image content (the squared autocorrelation of each plane at shift 1,
over a pyramid down to 8x8) and each plane renormalised to zero mean and unit variance after
each step. Unlike theirs, the start is E(x), not the average w, and there is no noise added to w.

Distances, per image (all images of a batch are optimised together, but independently):
- `classifier`: the squared L2 between unit-normalised featurenet features (LPIPS's form on one
  layer, as `ppl_*_classifier`) plus the pixel MSE (images in [-1, 1]);
- `lpips`: LPIPS-VGG16 of the `lpips` package; missing package or weights: one error line,
  never a fall back to the other distance.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from alae.errors import UserError
from alae.metrics.features import resize
from alae.metrics.ppl import LpipsDistance, lpips_missing
from alae.nn import ALAE
from alae.nn.layers import ImageNoise
from alae.sampling import noise_seed

NOISE_REGULARIZE = 1e5   # StyleGAN2 projector's weight
LR = 0.01
DISTANCES = ("classifier", "lpips")


class LearnedNoise(ImageNoise):
    """G's per-pixel noise as tensors an optimiser moves: on the first pass each plane is drawn
    as `ImageNoise` draws it (image k's from seeds[k]: the start is `--noise random`'s image),
    then kept; `rewind()` before each pass hands them out again in G's order."""

    def __init__(self, seeds: list[int]):
        super().__init__(seeds)
        self.planes: list[torch.Tensor] = []
        self.cursor = 0

    def draw(self, shape, device=None, dtype=None) -> torch.Tensor:
        if self.cursor == len(self.planes):
            self.planes.append(super().draw(shape, device, dtype).requires_grad_(True))
        plane = self.planes[self.cursor]
        self.cursor += 1
        return plane

    def rewind(self) -> "LearnedNoise":
        self.cursor = 0
        return self

    @torch.no_grad()
    def renormalise(self) -> None:
        for p in self.planes:
            p.sub_(p.mean(dim=(1, 2, 3), keepdim=True))
            p.div_(p.square().mean(dim=(1, 2, 3), keepdim=True).sqrt())

    def regulariser(self) -> torch.Tensor:
        """Per image (N,): StyleGAN2's sum over planes and their 2x pyramids down to 8x8 of the
        squared mean products with the plane shifted by one pixel, across and down."""
        total = 0
        for p in self.planes:
            while True:
                total = total + (p * p.roll(1, dims=3)).mean(dim=(1, 2, 3)).square()
                total = total + (p * p.roll(1, dims=2)).mean(dim=(1, 2, 3)).square()
                if p.shape[-1] <= 8:
                    break
                p = F.avg_pool2d(p, 2)
        return total


@dataclass
class Parts:
    """A distance per image (N,) and what it is made of, each (N,)."""
    total: torch.Tensor
    terms: dict[str, torch.Tensor]


class ClassifierPixelDistance:
    """Featurenet feature distance plus pixel MSE, with gradients."""

    def __init__(self, net, sha256: str):
        self.net = net.eval().requires_grad_(False)
        self.name = "classifier"
        self.description = f"classifier features + pixel MSE (featurenet sha256 {sha256[:12]})"

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> Parts:
        def feats(x: torch.Tensor) -> torch.Tensor:
            return F.normalize(self.net.features(resize(x, self.net.resolution)), dim=1)
        features = (feats(a) - feats(b)).square().sum(1)
        mse = (a - b).square().mean(dim=(1, 2, 3))
        return Parts(features + mse, {"features": features, "pixel_mse": mse})


class LpipsPixelDistance:
    """LPIPS-VGG16 (as `ppl_*_lpips`) with gradients; the pixel MSE is reported beside it."""

    def __init__(self, device: torch.device):
        self.net = LpipsDistance(device).net
        self.name = "lpips"
        self.description = "LPIPS-VGG16"

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> Parts:
        def prep(x: torch.Tensor) -> torch.Tensor:
            if x.shape[-1] > 256:
                x = F.interpolate(x, size=(256, 256), mode="area")
            return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        d = self.net(prep(a), prep(b)).flatten()
        return Parts(d, {"lpips": d, "pixel_mse": (a - b).square().mean(dim=(1, 2, 3))})


def load_distance(name: str, featurenet: Optional[str | Path], channels: int,
                  device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], Parts]:
    if name == "lpips":
        missing = lpips_missing()
        if missing:
            raise UserError(f"--distance lpips: {missing} (no other distance is used instead)")
        return LpipsPixelDistance(device)
    if name != "classifier":
        raise UserError(f"--distance {name!r}: one of {', '.join(DISTANCES)}")
    from alae.featurenet import load_featurenet

    net, sha256 = load_featurenet(featurenet, device)
    if net.channels != channels:
        raise UserError(f"--featurenet {featurenet}: takes {net.channels}-channel images, the "
                        f"model makes {channels}-channel ones")
    return ClassifierPixelDistance(net, sha256)


@dataclass
class Projected:
    w: torch.Tensor                 # (N, latent), or (N, S, latent) in W+
    noise: list[torch.Tensor]       # G's noise planes, (N, 1, H, W) each, G's order
    images: torch.Tensor            # G(w, noise)
    start: torch.Tensor             # G(E(x)) with the start noise: the encoder's answer
    before: dict[str, torch.Tensor]  # distance terms (N,) at E(x) with the start noise
    after: dict[str, torch.Tensor]   # and after the last step


def project(model: ALAE, x: torch.Tensor, distance: Callable, steps: int,
            w_plus: bool = False, lr: float = LR, first_seed: int = 0,
            on_step: Callable[[], None] = lambda: None) -> Projected:
    """Optimise codes (and noise) so that G reproduces x (N, C, H, W); image k's start noise
    is drawn from `noise_seed(first_seed + k)`, as `alae decode --noise random` draws code k's."""
    if w_plus and not model.progressive:
        raise UserError("--w-plus: one code per style slot is a StyleALAE's; StyleALAE only")
    with torch.no_grad():
        w = model.encode(x)
    if w_plus:
        w = w[:, None].repeat(1, model.num_styles, 1)
    w = w.clone().requires_grad_(True)
    noise = LearnedNoise([noise_seed(first_seed + k) for k in range(len(x))])

    def measure() -> tuple[Parts, torch.Tensor]:
        image = model.decode(w, noise=noise.rewind())  # an MLP's G has no noise
        return distance(image, x), image

    with torch.no_grad():
        start, start_images = measure()  # also draws the noise planes, for Adam to hold
    before = {"distance": start.total, **start.terms}
    opt = torch.optim.Adam([w, *noise.planes], lr=lr)
    for _ in range(steps):
        parts, _ = measure()
        loss = parts.total.sum()
        if noise.planes:
            loss = loss + NOISE_REGULARIZE * noise.regulariser().sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        noise.renormalise()
        on_step()
    with torch.no_grad():
        end, images = measure()
    after = {"distance": end.total, **end.terms}
    return Projected(w.detach(), [p.detach() for p in noise.planes], images, start_images,
                     before, after)
