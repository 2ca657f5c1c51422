"""What the metrics draw, image by image, so that no number depends on `evaluate.batch_size`.

Image (or PPL sample) i of a purpose gets its latent and its share of G's per-pixel noise from
CPU generators seeded with `base + i`, where `base` mixes (evaluate.seed, purpose, stream)
through numpy's SeedSequence. So an image's draws do not depend on the batch it is computed in,
the batch size, the device, or how many images are asked for (the first n images of a 10k run
are those of an n run). Purposes keep the draws of different metrics apart (the samples of FID,
the noise of reconstructions, PPL's pairs), streams keep an image's latent apart from its noise.

Consecutive seeds within a stream, as stylegan2-ada's `generate.py --seeds` draws: torch's CPU
generator keeps only the low 32 bits of a seed, so distinct bits must be there, and `base + i`
(mod 2**32) gives each image of a stream its own seed.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from alae.nn.layers import ImageNoise

PURPOSES = {"samples": 0, "reconstructions": 1, "ppl": 2}
LATENT, NOISE = 0, 1   # streams


def image_seeds(seed: int, purpose: str, stream: int, indices: Sequence[int]) -> list[int]:
    """The generator seed of each image index, for one (seed, purpose, stream)."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose {purpose!r} is not one of {', '.join(PURPOSES)}")
    if seed < 0:
        raise ValueError(f"seed {seed} is negative")
    base = int(np.random.SeedSequence([seed, PURPOSES[purpose], stream])
               .generate_state(1, np.uint32)[0])
    return [(base + int(i)) % 2 ** 32 for i in indices]


def image_generators(seed: int, purpose: str, stream: int,
                     indices: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in image_seeds(seed, purpose, stream, indices)]


def latents(seed: int, purpose: str, indices: Sequence[int], latent: int) -> torch.Tensor:
    """z ~ N(0, I), (len(indices), latent) float32 on the CPU, row k drawn for image indices[k]."""
    out = torch.empty(len(indices), latent)
    for row, g in zip(out, image_generators(seed, purpose, LATENT, indices)):
        row.normal_(generator=g)
    return out


def noise(seed: int, purpose: str, indices: Sequence[int]) -> ImageNoise:
    """G's per-pixel noise for one forward pass over images `indices` (a fresh object per pass)."""
    return ImageNoise(image_seeds(seed, purpose, NOISE, indices))
