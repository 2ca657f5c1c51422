"""The progressive-growing schedule as a pure function of images seen (ALAE sec. 4; reference
`lod_driver.py`, counted in images instead of epochs: DESIGN.md).

Every level lasts `transition_kimg + stabilize_kimg`. Level 0 (4x4) trains stable throughout;
each later level first blends in over `transition_kimg` with the reference's cosine ramp
alpha = sin(pi t - pi/2) / 2 + 1/2, t in [0, 1], then trains stable. The last level goes on
until training ends. Batch size and learning rate come from per-level tables.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from alae.config import Params, table_entry
from alae.nn import Level


class Phase(NamedTuple):
    lod: int          # level of detail: resolution 4 * 2**lod
    alpha: float      # blend of the newest level, 1 outside transitions
    batch_size: int   # global batch size
    lr: float         # learning rate of both optimizers

    @property
    def level(self) -> Level:
        return Level(self.lod, self.alpha)


@dataclass(frozen=True)
class Schedule:
    levels: int                         # number of levels (1 for a model that does not grow)
    transition: int                     # images per transition
    stabilize: int                      # images per stable phase
    batch_size: int | tuple[int, ...]   # per-level tables (see alae.config.table_entry)
    lr: float
    lr_multiplier: float | tuple[float, ...]

    @classmethod
    def from_params(cls, params: Params, levels: int) -> "Schedule":
        t = params.train
        return cls(levels=levels, transition=round(t.transition_kimg * 1000),
                   stabilize=round(t.stabilize_kimg * 1000), batch_size=t.batch_size,
                   lr=params.lr, lr_multiplier=t.lr_multiplier)

    def level_start(self, lod: int) -> int:
        """Images seen when level `lod` begins (its transition, for lod > 0)."""
        return lod * (self.transition + self.stabilize)

    def __call__(self, images_seen: int) -> Phase:
        lod, alpha = self.levels - 1, 1.0
        span = self.transition + self.stabilize
        if span > 0:
            lod = min(images_seen // span, self.levels - 1)
        into = images_seen - self.level_start(lod)
        if lod > 0 and into < self.transition:
            t = into / self.transition
            alpha = math.sin(math.pi * t - math.pi / 2) / 2 + 0.5
        return Phase(lod=lod, alpha=alpha, batch_size=int(table_entry(self.batch_size, lod)),
                     lr=self.lr * float(table_entry(self.lr_multiplier, lod)))
