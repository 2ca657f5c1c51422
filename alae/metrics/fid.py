"""Fréchet distance between feature statistics accumulated batch by batch.

`FeatureStats` keeps only running sums in float64 (the sum and the sum of outer products), so a
FID over any number of images needs O(D²) memory, never all N×D features. The distance itself is
pytorch-fid's `calculate_frechet_distance`, so numbers match the reference implementation given
the same mean and covariance.

Statistics files are pytorch-fid's `.npz` (`mu`, `sigma`) plus, when this project writes them, `n`
and string fields naming the feature space and where it came from (`features`,
`featurenet_sha256`, ...), so a file from one space is never compared with another.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from alae.errors import UserError
from alae.io import atomic_open


class FeatureStats:
    """Running mean and (unbiased, like `np.cov`) covariance of feature vectors (N, D); with
    `keep`, also the vectors themselves (`features()`), for metrics that need every one (KID,
    precision / recall): 10k x 128 float32 is 5 MB."""

    def __init__(self, keep: bool = False) -> None:
        self.n = 0
        self._kept: Optional[list[torch.Tensor]] = [] if keep else None
        self._shift: Optional[torch.Tensor] = None   # (D,) first batch's mean
        self._sum: Optional[torch.Tensor] = None     # (D,)   sum of (f - shift)
        self._outer: Optional[torch.Tensor] = None   # (D, D) sum of (f - shift)(f - shift)^T
        self._fixed: Optional[tuple[np.ndarray, np.ndarray]] = None   # from_moments: (mu, sigma)

    def update(self, feats: torch.Tensor | np.ndarray) -> "FeatureStats":
        if self._fixed is not None:
            raise ValueError("statistics read from a file cannot be updated")
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
        if self._kept is not None:
            self._kept.append(torch.as_tensor(feats).detach().cpu().clone())
        c = f - self._shift
        self._sum += c.sum(0)
        self._outer += c.T @ c
        self.n += len(f)
        return self

    @classmethod
    def from_moments(cls, mu: np.ndarray, sigma: np.ndarray, n: int = 0,
                     features: Optional[np.ndarray] = None) -> "FeatureStats":
        """Fixed statistics given as mean and covariance (e.g. read from an .npz); `n` is the
        number of vectors they came from, 0 when unknown (pytorch-fid's files do not say);
        `features`: those vectors, (n, D), when they were kept."""
        mu = np.asarray(mu, dtype=np.float64)
        sigma = np.asarray(sigma, dtype=np.float64)
        if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
            raise ValueError(f"mu {mu.shape} and sigma {sigma.shape} are not (D,) and (D, D)")
        s = cls(keep=features is not None)
        s.n = int(n)
        s._fixed = (mu, sigma)
        if features is not None:
            if features.shape != (s.n, len(mu)):
                raise ValueError(f"features {features.shape} are not ({s.n}, {len(mu)})")
            s._kept = [torch.from_numpy(np.array(features))]
        return s

    def features(self) -> np.ndarray:
        """The vectors seen, (n, D), in the dtype they came in."""
        if self._kept is None:
            raise ValueError("these statistics were not asked to keep their features")
        self._need(1)
        return torch.cat(self._kept).numpy()

    @property
    def dim(self) -> int:
        if self._fixed is not None:
            return len(self._fixed[0])
        return 0 if self._shift is None else int(self._shift.shape[0])

    def mean(self) -> np.ndarray:
        if self._fixed is not None:
            return self._fixed[0].copy()
        self._need(1)
        return (self._shift + self._sum / self.n).numpy()

    def cov(self) -> np.ndarray:
        if self._fixed is not None:
            return self._fixed[1].copy()
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
    # imported here: pytorch-fid's module imports torchvision, ~2 s of start-up for every process
    from pytorch_fid.fid_score import calculate_frechet_distance

    try:
        return float(calculate_frechet_distance(a.mean(), a.cov(), b.mean(), b.cov()))
    except ValueError as e:   # pytorch-fid's "Imaginary component": sqrtm of a singular product
        few = min(a.n or a.dim + 1, b.n or b.dim + 1)
        hint = (f"; {few} vectors cannot give a full-rank {a.dim}-d covariance: use more images"
                if few <= a.dim else "")
        raise UserError(f"FID undefined here ({e}){hint}") from None


def save_stats(path: str | Path, stats: FeatureStats, **meta: str | int) -> None:
    """Atomic `.npz` with `mu`, `sigma`, `n` and the given metadata (strings or ints)."""
    fields = {k: np.asarray(v) for k, v in meta.items()}
    with atomic_open(path, "wb") as f:
        np.savez(f, mu=stats.mean(), sigma=stats.cov(), n=np.asarray(stats.n), **fields)


def load_stats(path: str | Path) -> tuple[FeatureStats, dict]:
    """(statistics, metadata) from an `.npz` with `mu` and `sigma` (pytorch-fid's or ours);
    UserError naming the file when it is missing or is not such a file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise UserError(f"{path}: statistics file not found") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not an .npz statistics file ({e})") from None
    if "mu" not in data or "sigma" not in data:
        raise UserError(f"{path}: has no 'mu' and 'sigma' arrays (keys: {', '.join(data)})")
    meta = {k: v.item() for k, v in data.items() if k not in ("mu", "sigma") and v.ndim == 0}
    try:
        stats = FeatureStats.from_moments(data["mu"], data["sigma"], int(meta.pop("n", 0)))
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    return stats, meta
