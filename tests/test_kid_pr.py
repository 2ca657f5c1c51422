"""KID and precision / recall: against sums written out by hand, against torch-fidelity (the
reference implementation) on the same features and the same subsets, and in `evaluate_model`
with test doubles whose answers are known (samples that are the test set)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

from alae.config import EvaluateConfig
from alae.metrics import evaluate_model, metric_names, resolve_names, run_metrics
from alae.metrics.kid import SUBSET_SIZE, kid, mmd2_unbiased, subset_size
from alae.metrics.precision_recall import K, as_features, knn_radii, precision_recall

rng = np.random.default_rng(0)


def blobs(n: int, d: int, shift: float = 0.0, scale: float = 1.0, seed: int = 0) -> np.ndarray:
    """float32 features, as extractors give them: correlated, away from the origin."""
    g = np.random.default_rng(seed)
    mix = np.random.default_rng(99).normal(size=(d, d)) / np.sqrt(d)
    return ((g.normal(size=(n, d)) * scale) @ mix + 1.0 + shift).astype(np.float32)


# ---------------------------------------------------------------- KID

def test_mmd2_is_the_sum_written_out():
    x, y = rng.normal(size=(5, 3)), rng.normal(0.5, 1.0, size=(5, 3))

    def k(a, b):
        return (a @ b / 3 + 1) ** 3

    m = 5
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m ** 2
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_kid_of_one_distribution_is_near_zero_and_of_shifted_ones_positive():
    a, b = blobs(1000, 16, seed=1), blobs(1000, 16, seed=2)

    def kid_(x, y, seed=0):
        return kid(x, y, seed=seed, subsets=25, size=400)
    same, same_std = kid_(a, b)
    shifted, _ = kid_(a, blobs(1000, 16, shift=0.3, seed=2))
    wider, _ = kid_(a, blobs(1000, 16, scale=1.3, seed=2))
    assert abs(same) < 3 * same_std / np.sqrt(25)   # unbiased: 0 within its noise
    assert shifted > 30 * abs(same) and wider > 30 * abs(same)
    assert kid_(a, b) == (same, same_std)            # deterministic for a seed
    assert kid_(a, b, seed=1)[0] != same             # the seed picks the subsets


def test_kid_subset_size_and_refusals():
    assert subset_size(10_000, 10_000) == SUBSET_SIZE and subset_size(300, 600) == 300
    with pytest.raises(ValueError, match="subsets of 50"):
        kid(blobs(40, 4), blobs(60, 4), seed=0, size=50)
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        kid(blobs(40, 4), blobs(60, 5), seed=0)


@pytest.mark.parametrize("size, subsets, seed", [(500, 20, 2020), (1000, 5, 0)])
def test_kid_matches_torch_fidelity(size, subsets, seed):
    x, y = blobs(1500, 32, seed=3), blobs(1200, 32, shift=0.05, scale=1.1, seed=4)
    mean, std = kid(x, y, seed=seed, subsets=subsets, size=size)
    # The same float32 features, widened to float64 for both, as ours computes.
    ref = kid_features_to_metric(torch.from_numpy(x).double(), torch.from_numpy(y).double(),
                                 kid_subsets=subsets, kid_subset_size=size, rng_seed=seed,
                                 verbose=False)
    assert mean > 1e-4   # a number whose relative error means something
    assert mean == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-5)
    assert std == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-5)


# ---------------------------------------------------------------- precision / recall

def test_precision_recall_by_hand():
    # Real points 0, 1, ..., 9 on a line: each one's 3rd nearest neighbour is 2 away inside
    # (1.5 would need half-steps), 3 away at the ends (0: 1, 2, 3), so the manifold is [-3, 12].
    real = np.arange(10.0)[:, None]
    far = real + 100
    assert precision_recall(far, real) == (0.0, 0.0)
    # Generated: 10 points on [0, 4.5]. All lie in the real manifold (precision 1); their own
    # radii are 1.5 (0.5 apart; 2 at the first and last two), so they cover the real 0..6.
    gen = np.arange(10.0)[:, None] / 2
    p, r = precision_recall(gen, real)
    assert p == 1.0 and r == pytest.approx(7 / 10)
    # And a generated point on a real ball's boundary counts as inside.
    assert precision_recall(np.array([[12.0], [-3.0]] * 2), real)[0] == 1.0


def test_precision_recall_of_identical_sets_is_one():
    x = blobs(500, 8, seed=5)
    assert precision_recall(x, x.copy()) == (1.0, 1.0)
    with pytest.raises(ValueError, match="nearest neighbour"):
        precision_recall(x[:3], x)


@pytest.mark.parametrize("n_gen, n_real", [(1200, 900), (600, 1500)])
def test_precision_recall_match_torch_fidelity(n_gen, n_real):
    gen, real = blobs(n_gen, 16, shift=0.4, seed=6), blobs(n_real, 16, seed=7)
    p, r = precision_recall(gen, real)
    assert 0.3 < p < 0.8 and 0.3 < r < 0.8   # far from a trivial 0 or 1
    ref = prc_features_to_metric(torch.from_numpy(gen).double(), torch.from_numpy(real).double(),
                                 prc_neighborhood=K, save_cpu_ram=False, verbose=False)
    # torch-fidelity returns float32 means; counts out of n agree exactly.
    assert p == pytest.approx(ref["precision"], rel=1e-5)
    assert r == pytest.approx(ref["recall"], rel=1e-5)
    assert round(p * n_gen) == round(ref["precision"] * n_gen)
    assert round(r * n_real) == round(ref["recall"] * n_real)
    # The real set's radii, given, change nothing (evaluate shares them between pr and rec_pr).
    assert precision_recall(gen, real, real_radii=knn_radii(as_features(real))) == (p, r)
