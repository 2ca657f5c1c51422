"""The linear probe: near 1 on separable data, near chance on shuffled labels, invariant to the
scale of each feature (it standardises), and wired into evaluate_model (skipped without labels)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from alae.config import DataConfig, EvaluateConfig
from alae.data import write_shards
from alae.metrics import evaluate_model
from alae.metrics.probe import linear_probe


def blobs(n: int, seed: int, classes: int = 4, dim: int = 20, spread: float = 6.0):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, spread, size=(classes, dim))
    y = rng.integers(0, classes, n)
    return centres[y] + rng.normal(size=(n, dim)), y


def test_separable_data_is_near_one():
    x, y = blobs(400, 0)
    tx, ty = blobs(400, 1)
    assert linear_probe(x, y, tx, ty) > 0.98


def test_shuffled_labels_are_near_chance():
    x, y = blobs(400, 0)
    tx, ty = blobs(2000, 1)
    shuffled = np.random.default_rng(5).permutation(y)
    assert abs(linear_probe(x, shuffled, tx, ty) - 0.25) < 0.07   # 4 classes: chance is 0.25


def test_standardised_so_feature_scale_does_not_matter():
    x, y = blobs(300, 0, spread=1.0)        # overlapping: accuracy well below 1
    tx, ty = blobs(300, 1, spread=1.0)
    scale = np.geomspace(1e-4, 1e4, x.shape[1])
    plain = linear_probe(x, y, tx, ty)
    assert plain < 0.99
    assert linear_probe(x * scale, y, tx * scale, ty) == pytest.approx(plain, abs=0.01)


def test_needs_two_classes():
    x, _ = blobs(50, 0)
    with pytest.raises(ValueError, match="two classes"):
        linear_probe(x, np.zeros(50), x, np.zeros(50))


class Coder(torch.nn.Module):
    """E(x) = a fixed random projection of the pixels ('project'), or all zeros ('zeros')."""

    def __init__(self, codes: str):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.latent, self.resolution, self.channels, self.codes = 8, 32, 1, codes
        self.proj = torch.randn(1024, 32, generator=torch.Generator().manual_seed(0))

    def encode(self, x):
        if self.codes == "zeros":
            return torch.zeros(len(x), 32)
        return x.flatten(1) @ self.proj


class NoFeatures:
    name, dim = "none", 1

    def to(self, device):
        return self


@pytest.mark.parametrize("codes", ["project", "zeros"])
def test_probe_metric_on_fashion_mnist(tiny_shards, codes):
    cfg = EvaluateConfig(probe_train=400, batch_size=128)
    m = evaluate_model(Coder(codes), NoFeatures(), tiny_shards, cfg, ["probe"])
    assert set(m) == {"probe_acc", "probe_acc_pixels"}
    assert 0.6 < m["probe_acc_pixels"] <= 1.0      # 10 classes, 400 train images: far from 0.1
    if codes == "zeros":
        assert m["probe_acc"] < 0.2                 # constant codes: one class for everything
    else:
        assert m["probe_acc"] > 0.5


def test_probe_is_skipped_without_labels(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(30):
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(folder / f"{i}.png")
    shards = tmp_path / "shards"
    write_shards(DataConfig(source="folder", path=str(folder), test_fraction=0.3), shards)
    m = evaluate_model(Coder("project"), NoFeatures(), shards, EvaluateConfig(), ["probe"])
    assert m == {}
    assert "probe_acc skipped: the dataset has no labels" in capsys.readouterr().err
