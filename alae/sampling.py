"""Samples by seed, as stylegan2-ada's `generate.py` draws them: each seed is one image whose z
(and per-pixel noise) come from a generator seeded with it alone, so image k is the same whatever
other seeds are asked for and whatever the batch size."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from alae.errors import UserError
from alae.nn import ALAE
from alae.nn.layers import ImageNoise, Noise

MAX_SEED = 2 ** 32 - 1  # numpy's RandomState range, as stylegan2-ada's seeds
MAX_COUNT = 10 ** 7
NOISE_MODES = ("const", "random")


def parse_seeds(text: str, option: str = "--seeds") -> list[int]:
    """'0-3,10,20-22' -> [0, 1, 2, 3, 10, 20, 21, 22]: ranges include both ends; a seed named
    twice is drawn once, where it first appears."""
    seeds: dict[int, None] = {}
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise UserError(f"{option} {text!r}: {part.strip()!r} is not a seed or a range "
                            "(e.g. 0-99 or 0-3,10,20-22)")
        lo, hi = int(m[1]), int(m[2] if m[2] is not None else m[1])
        if lo > hi or hi > MAX_SEED:
            raise UserError(f"{option} {text!r}: {part.strip()!r} is not a range of seeds "
                            f"from 0 to {MAX_SEED}")
        if len(seeds) + hi - lo >= MAX_COUNT:  # a typo must not fill the memory
            raise UserError(f"{option} {text!r}: more than {MAX_COUNT} seeds at once")
        seeds.update(dict.fromkeys(range(lo, hi + 1)))
    return list(seeds)


def seed_image_name(seed: int) -> str:
    return f"seed{seed:04d}.png"


@torch.no_grad()
def generate_seeds(model: ALAE, seeds: list[int], psi: Optional[float] = None,
                   cutoff: Optional[int] = None, noise: str = "random", batch_size: int = 64
                   ) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(seeds, images in [-1, 1]) per batch. Each seed's generator draws its z (on the CPU:
    the same z on every device); `const` switches G's noise off."""
    device = next(model.parameters()).device
    for i in range(0, len(seeds), batch_size):
        batch = seeds[i:i + batch_size]
        z = torch.cat([torch.randn(1, model.latent, generator=torch.Generator().manual_seed(s))
                       for s in batch]).to(device)
        yield batch, with_noise(lambda x, n: model.generate(x, psi=psi, cutoff=cutoff, noise=n),
                                 z, batch, noise)


NOISE_STREAM = 1  # SeedSequence([seed, stream]): an image's noise, apart from its z (seed itself)


def noise_seed(seed: int) -> int:
    """The seed of image `seed`'s per-pixel noise: mixed from (seed, NOISE_STREAM), so its numbers
    are not its z's (torch's CPU generator keeps only a seed's low 32 bits: `seed + 2**32`
    would be `seed` again)."""
    return int(np.random.SeedSequence([seed, NOISE_STREAM]).generate_state(1, np.uint32)[0])


def with_noise(g: Callable[[torch.Tensor, Noise], torch.Tensor], x: torch.Tensor,
                seeds: list[int], mode: str) -> torch.Tensor:
    """g(x, noise) for a batch: without noise (`const`), or with each image's noise drawn on the
    CPU from its own seed (`random`, `noise_seed`), so an image is the same on every device and
    in any batch."""
    if mode not in NOISE_MODES:
        raise UserError(f"--noise {mode!r}: not one of {', '.join(NOISE_MODES)}")
    return g(x, False if mode == "const" else ImageNoise([noise_seed(s) for s in seeds]))


def read_codes(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """The codes (N, latent) of `alae encode` and the names of their images: the lines of
    PATH.txt when it is there, else code0000, code0001, ..."""
    try:
        codes = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a codes file (.npy) ({type(e).__name__})") from None
    if codes.ndim != 2 or codes.dtype.kind != "f":
        raise UserError(f"{path}: codes are a 2-d float array (one w per row), not "
                        f"{codes.ndim}-d {codes.dtype}")
    listing = Path(f"{path}.txt")
    if not listing.is_file():
        return codes, [f"code{i:04d}" for i in range(len(codes))]
    names = listing.read_text().splitlines()
    if len(names) != len(codes):
        raise UserError(f"{listing}: names {len(names)} images, but {path} holds {len(codes)} "
                        "codes")
    return codes, names


@torch.no_grad()
def decode_codes(model: ALAE, codes: np.ndarray, noise: str = "random", batch_size: int = 64
                 ) -> Iterator[tuple[int, torch.Tensor]]:
    """(index of the batch's first code, G(w)) per batch; code i's noise is drawn from a
    generator seeded by i."""
    device = next(model.parameters()).device
    for i in range(0, len(codes), batch_size):
        w = torch.from_numpy(codes[i:i + batch_size]).float().to(device)
        yield i, with_noise(lambda x, n: model.decode(x, noise=n), w,
                             list(range(i, i + len(w))), noise)
