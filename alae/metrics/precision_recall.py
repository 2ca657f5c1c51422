"""Improved precision and recall (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric
for Assessing Generative Models", sec. 2): each set's manifold is the union of balls around its
vectors, each ball's radius the distance to the vector's k-th nearest neighbour in its own set
(k = `K`, the vector itself not counted);

    precision = share of generated vectors inside the real manifold (are samples realistic?),
    recall    = share of real vectors inside the generated manifold (are modes covered?).

A poor FID with high precision and low recall means missing modes; the other way round, poor
samples. Euclidean distances by `torch.cdist` in float64, blocks of `BLOCK` rows so memory stays
O(BLOCK · N); a point on a ball's boundary counts as inside (`<=`). The definition is
torch-fidelity's `prc_features_to_metric` (tests/test_kid_pr.py checks it on the same features).
"""
from __future__ import annotations

import numpy as np
import torch

K = 3          # the paper's and torch-fidelity's neighbourhood size
BLOCK = 1000   # rows of a distance block: 1000 x 10k float64 is 80 MB


def _as_tensor(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, np.float64))


def knn_radii(x: torch.Tensor, k: int = K) -> torch.Tensor:
    """Distance from each row of x to its k-th nearest other row (the (k+1)-th smallest distance
    counting the row itself, which is 0)."""
    if len(x) <= k:
        raise ValueError(f"{len(x)} vectors have no {k}-th nearest neighbour")
    return torch.cat([torch.cdist(block, x).kthvalue(k + 1, dim=1).values
                      for block in x.split(BLOCK)])


def coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """Share of `points` inside at least one ball (centres[j], radii[j])."""
    inside = [(torch.cdist(block, centres) <= radii).any(dim=1) for block in points.split(BLOCK)]
    return torch.cat(inside).double().mean().item()


def precision_recall(generated, real, k: int = K) -> tuple[float, float]:
    """(precision, recall) of generated (N, d) against real (M, d) feature vectors."""
    gen, ref = _as_tensor(generated), _as_tensor(real)
    if gen.ndim != 2 or ref.ndim != 2 or gen.shape[1] != ref.shape[1]:
        raise ValueError(f"features must be (N, d) and (M, d), got {tuple(gen.shape)} and "
                         f"{tuple(ref.shape)}")
    with torch.inference_mode():
        precision = coverage(gen, ref, knn_radii(ref, k))
        recall = coverage(ref, gen, knn_radii(gen, k))
    return precision, recall
