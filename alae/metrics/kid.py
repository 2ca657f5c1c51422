"""Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs", sec. 4 and app. D):
the unbiased estimate of the squared maximum mean discrepancy between two feature sets with the
cubic polynomial kernel

    k(x, y) = (x·y / d + 1)³,    d the feature width,

    MMD²_u = Σ_{i≠j} k(x_i, x_j) / (m(m-1)) + Σ_{i≠j} k(y_i, y_j) / (m(m-1))
             - 2 Σ_{i,j} k(x_i, y_j) / m²

averaged over `SUBSETS` random subsets of `SUBSET_SIZE` vectors from each set (and its standard
deviation over them, numpy's `std`, ddof 0). Unlike FID it has an unbiased estimator, so its
value does not drift with the sample size; it can be slightly negative when the sets match.

The subsets are drawn as torch-fidelity's `kid_features_to_metric` draws them (one
`np.random.RandomState(seed)`; per subset `choice(n_1, size, replace=False)` then
`choice(n_2, ...)`), so for the same features, size and seed the numbers are its numbers
(tests/test_kid_pr.py checks it). Computed in float64 whatever the features' dtype.
"""
from __future__ import annotations

import numpy as np

SUBSETS = 100       # torch-fidelity's and stylegan2-ada's kid50k protocol
SUBSET_SIZE = 1000  # ...capped at the smaller set's size
DEGREE, COEF0 = 3, 1.0


def subset_size(n_1: int, n_2: int) -> int:
    """The subset size used for sets of n_1 and n_2 vectors: SUBSET_SIZE, or fewer if a set has."""
    return min(SUBSET_SIZE, n_1, n_2)


def _kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    t = a @ b.T / a.shape[1] + COEF0
    return t * t * t   # (DEGREE 3) ten times faster than np.power's t ** 3, within an ulp


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """MMD²_u of two equally sized sets (m, d) with the cubic polynomial kernel."""
    m, d = x.shape
    if y.shape != (m, d):
        raise ValueError(f"subsets must have equal shapes, got {x.shape} and {y.shape}")
    kxx, kyy, kxy = (_kernel(a, b) for a, b in ((x, x), (y, y), (x, y)))
    within = kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)
    return float(within / (m * (m - 1)) - 2 * kxy.sum() / (m * m))


def kid(x: np.ndarray, y: np.ndarray, seed: int, subsets: int = SUBSETS,
        size: int | None = None) -> tuple[float, float]:
    """(mean, std) of MMD²_u over `subsets` pairs of random subsets of `size` (default
    `subset_size(len(x), len(y))`) vectors of x (N, d) and y (M, d)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"features must be (N, d) and (M, d), got {x.shape} and {y.shape}")
    size = subset_size(len(x), len(y)) if size is None else size
    if not 2 <= size <= min(len(x), len(y)):
        raise ValueError(f"KID subsets of {size} from sets of {len(x)} and {len(y)} vectors")
    rng = np.random.RandomState(seed)
    mmds = np.empty(subsets)
    for i in range(subsets):
        a = x[rng.choice(len(x), size, replace=False)]
        b = y[rng.choice(len(y), size, replace=False)]
        mmds[i] = mmd2_unbiased(a, b)
    return float(mmds.mean()), float(mmds.std())
