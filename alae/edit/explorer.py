"""What the latent explorer's page does with a model (`alae explore`, the page in explore.py):
take an image in as the model does, reconstruct it, move it along directions, mix its styles
with a second image's, and sample by seed and psi. No web code here, so each action can be
timed and tested on its own.

Every decode of an image uses the per-pixel noise of seed 0 (`with_noise`), so the
reconstruction, its edits and its mixes differ only by what was changed."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from alae.edit.directions import Directions
from alae.edit.strips import MAX_STRENGTH, edit_slots, moved_styles
from alae.errors import UserError
from alae.figures import mix_styles, style_ranges
from alae.images import CONVERSIONS, load_usable, to_image
from alae.nn import ALAE
from alae.sampling import MAX_SEED, generate_seeds, with_noise

SHOWN = 256        # pixels a side each image is shown at (nearest neighbour: small ones stay sharp)
SLIDER_STEP = 0.1  # of a direction's strength, in standard deviations
CUTOFF = 8         # styles truncated by psi: `alae generate`'s --cutoff default


def shown(x: torch.Tensor) -> Image.Image:
    """One image (1, C, H, W) in [-1, 1] as a picture at least SHOWN pixels a side."""
    img = to_image(x[0])
    if img.width < SHOWN:
        scale = SHOWN // img.width
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


@dataclass
class Explorer:
    model: ALAE
    directions: Optional[Directions] = None
    noise: str = "random"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def names(self) -> list[str]:
        return list(self.directions.names) if self.directions is not None else []

    @property
    def blocks(self) -> list[str]:
        """The style blocks a second image's styles can be mixed in from (StyleALAE only)."""
        return list(style_ranges(self.model)) if self.model.progressive else []

    def take(self, path: str | Path) -> tuple[np.ndarray, str]:
        """An image file as the model takes it ((C, H, W) in [-1, 1]) and a note saying what
        was done to it (converted to the model's channels, cropped, upscaled); a UserError
        naming the file when it is no image."""
        kind = next(k for k, c in CONVERSIONS.items() if c == self.model.channels)
        loaded = load_usable([Path(path)], self.model.resolution, self.model.channels, kind)
        notes = [f"converted to {kind}"] if loaded.converted else []
        notes += [w.split(": ", 1)[-1] for w in loaded.warnings]
        return loaded.images[0].numpy(), "; ".join(notes)

    def _batch(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.float32, device=self.device)[None]

    def _decode(self, styles: torch.Tensor) -> torch.Tensor:
        return with_noise(lambda c, n: self.model.decode(c, noise=n), styles, [0], self.noise)

    @torch.no_grad()
    def reconstruct(self, x: np.ndarray) -> Image.Image:
        return shown(self._decode(self.model.encode(self._batch(x))))

    @torch.no_grad()
    def edit(self, x: np.ndarray, strengths: Sequence[float], layers: str,
             pair: Optional[tuple[str, str, float]] = None) -> Image.Image:
        """G of E(x) moved by strengths[i] standard deviations along direction i, and by
        pair = (A, B, s) s standard deviations along the A->B direction (the unit difference
        of the two, as `alae edit --direction 'A->B'`), on the style slots of `layers` (the
        edit strips' convention, alae/edit/strips.py)."""
        if self.directions is None:
            raise UserError("no directions loaded (start with --directions FILE)")
        pair_strength = pair[2] if pair is not None else 0.0
        if any(abs(s) > MAX_STRENGTH for s in (*strengths, pair_strength)):
            raise UserError(f"strengths are -{MAX_STRENGTH:g}..{MAX_STRENGTH:g} std")
        w = self.model.encode(self._batch(x))
        step = np.zeros(self.model.latent)
        for s, v, std in zip(strengths, self.directions.vectors, self.directions.std):
            step += s * std * v
        if pair_strength:
            _, v, std = self.directions.resolve(f"{pair[0]}->{pair[1]}")
            step += pair_strength * std * v
        step = torch.as_tensor(step, dtype=w.dtype, device=w.device)
        return shown(self._decode(moved_styles(self.model, w, step, edit_slots(self.model,
                                                                               layers))))

    @torch.no_grad()
    def mix(self, x: np.ndarray, other: np.ndarray, block: str) -> Image.Image:
        """G of E(x) with E(other)'s styles in `block` (coarse, middle or fine)."""
        if not self.model.progressive:
            raise UserError("style mixing is StyleALAE only (an MLP model has one code)")
        ranges = style_ranges(self.model)
        if block not in ranges:
            raise UserError(f"{block}: this model has {', '.join(ranges)} styles")
        w, w_other = self.model.encode(self._batch(x)), self.model.encode(self._batch(other))
        return shown(self._decode(mix_styles(self.model, w, w_other, ranges[block])))

    def sample(self, seed: int, psi: float) -> Image.Image:
        """The image of `alae generate --seeds SEED --psi PSI` (psi 1: no truncation)."""
        if not 0 <= seed <= MAX_SEED or seed != int(seed):
            raise UserError(f"seed {seed}: a whole number from 0 to {MAX_SEED}")
        if not 0 <= psi <= 1:
            raise UserError(f"psi {psi}: from 0 to 1")
        _, images = next(generate_seeds(self.model, [int(seed)], None if psi == 1 else psi,
                                        CUTOFF, self.noise))
        return shown(images)
