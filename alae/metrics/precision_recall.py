"""Improved precision and recall (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric
for Assessing Generative Models", sec. 2): each set's manifold is the union of balls around its
vectors, each ball's radius the distance to the vector's k-th nearest neighbour in its own set
(k = `K`, the vector itself not counted);

    precision = share of generated vectors inside the real manifold (are samples realistic?),
    recall    = share of real vectors inside the generated manifold (are modes covered?).

A poor FID with high precision and low recall means missing modes; the other way round, poor
samples. Squared Euclidean distances in float64 (what `torch.cdist` computes before its square
root, which comparisons do not need), in blocks of `BLOCK` rows so memory stays O(BLOCK · N); a
point on a ball's boundary counts as inside (`<=`). The definition is
torch-fidelity's `prc_features_to_metric` (tests/test_kid_pr.py checks it on the same features).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

K = 3          # the paper's and torch-fidelity's neighbourhood size
BLOCK = 1000   # rows of a distance block: 1000 x 10k float64 is 80 MB


def as_features(x) -> torch.Tensor:
    """Feature vectors (N, d) as a float64 tensor."""
    return torch.as_tensor(np.asarray(x, np.float64))


def _sq_dists(a: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """Squared distances |a_i|² - 2 a_i·b_j + |b_j|² by one matrix product: what `torch.cdist`
    computes before its square root, which comparisons of distances do not need."""
    return torch.addmm(b_sq, a, b.T, alpha=-2).add_((a * a).sum(1, keepdim=True))


def knn_radii(x: torch.Tensor, k: int = K) -> torch.Tensor:
    """Squared distance from each row of x to its k-th nearest other row (the (k+1)-th smallest
    counting the row itself, at distance 0): the radii² of x's manifold."""
    if len(x) <= k:
        raise ValueError(f"{len(x)} vectors have no {k}-th nearest neighbour")
    x_sq = (x * x).sum(1)
    with torch.inference_mode():
        # topk, not kthvalue (torch-fidelity's): the same element, 10x faster for a small k.
        return torch.cat([_sq_dists(block, x, x_sq).topk(k + 1, dim=1, largest=False).values[:, -1]
                          for block in x.split(BLOCK)])


def precision_recall(generated, real, k: int = K,
                     real_radii: Optional[torch.Tensor] = None) -> tuple[float, float]:
    """(precision, recall) of generated (N, d) against real (M, d) feature vectors;
    `real_radii`: `knn_radii(real, k)` when already computed (it depends on the real set only)."""
    gen, ref = as_features(generated), as_features(real)
    if gen.ndim != 2 or ref.ndim != 2 or gen.shape[1] != ref.shape[1]:
        raise ValueError(f"features must be (N, d) and (M, d), got {tuple(gen.shape)} and "
                         f"{tuple(ref.shape)}")
    ref_radii = knn_radii(ref, k) if real_radii is None else real_radii
    gen_radii = knn_radii(gen, k)
    ref_sq = (ref * ref).sum(1)
    # One pass over the generated-to-real distances serves both: rows for precision, columns
    # for recall.
    realistic, covered = [], torch.zeros(len(ref), dtype=torch.bool)
    with torch.inference_mode():
        for block, radii in zip(gen.split(BLOCK), gen_radii.split(BLOCK)):
            d = _sq_dists(block, ref, ref_sq)
            realistic.append((d <= ref_radii).any(dim=1))
            covered |= (d <= radii[:, None]).any(dim=0)
    return torch.cat(realistic).double().mean().item(), covered.double().mean().item()
