"""Fréchet distance between feature statistics accumulated batch by batch.

`FeatureStats` keeps only running sums in float64 (the sum and the sum of outer products), so a
FID over any number of images needs O(D²) memory, never all N×D features. The distance itself is
pytorch-fid's `calculate_frechet_distance`, so numbers match the reference implementation given
the same mean and covariance.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from pytorch_fid.fid_score import calculate_frechet_distance


class FeatureStats:
    """Running mean and (unbiased, like `np.cov`) covariance of feature vectors (N, D)."""

    def __init__(self) -> None:
        self.n = 0
        self._shift: Optional[torch.Tensor] = None   # (D,) first batch's mean
        self._sum: Optional[torch.Tensor] = None     # (D,)   sum of (f - shift)
        self._outer: Optional[torch.Tensor] = None   # (D, D) sum of (f - shift)(f - shift)^T

    def update(self, feats: torch.Tensor | np.ndarray) -> "FeatureStats":
        f = torch.as_tensor(feats).detach().to("cpu", torch.float64)
        if f.ndim != 2:
            raise ValueError(f"features must be (N, D), got shape {tuple(f.shape)}")
        if len(f) == 0:
            return self
        if self._shift is None:
            # Summing around a point near the mean keeps sum(x x^T) - n·mu mu^T from cancelling
            # catastrophically when features sit far from the origin.
            self._shift = f.mean(0)
            d = f.shape[1]
            self._sum = torch.zeros(d, dtype=torch.float64)
            self._outer = torch.zeros(d, d, dtype=torch.float64)
        elif f.shape[1] != self._shift.shape[0]:
            raise ValueError(f"feature width {f.shape[1]} != {self._shift.shape[0]} seen before")
        c = f - self._shift
        self._sum += c.sum(0)
        self._outer += c.T @ c
        self.n += len(f)
        return self

    @property
    def dim(self) -> int:
        return 0 if self._shift is None else int(self._shift.shape[0])

    def mean(self) -> np.ndarray:
        self._need(1)
        return (self._shift + self._sum / self.n).numpy()

    def cov(self) -> np.ndarray:
        self._need(2)
        m = self._sum / self.n
        cov = (self._outer - self.n * torch.outer(m, m)) / (self.n - 1)
        return ((cov + cov.T) / 2).numpy()   # exactly symmetric, as sqrtm prefers

    def _need(self, k: int) -> None:
        if self.n < k:
            raise ValueError(f"need at least {k} feature vectors, have {self.n}")


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """FID between two feature sets: ||mu_a - mu_b||² + Tr(S_a + S_b - 2 (S_a S_b)^½)."""
    if a.dim != b.dim:
        raise ValueError(f"feature widths differ: {a.dim} vs {b.dim}")
    return float(calculate_frechet_distance(a.mean(), a.cov(), b.mean(), b.cov()))
