"""The two memoised primitives every metric is made of (alae/metrics/stats.py): a cached result
is the exact number a fresh computation gives, every input that moves a number is in the key, a
second evaluation with the same cache computes no feature statistics, and a broken cache file is
computed again instead of trusted."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from alae.config import EvaluateConfig, ModelConfig
from alae.data import eval_batches, read_manifest
from alae.metrics import evaluate_model, quick_fid
from alae.metrics.fid import FeatureStats, frechet_distance
from alae.metrics.refstats import compute_reference
from alae.metrics.stats import (CACHE_ENV, Reconstruction, StatsCache, generator_stats,
                                model_digest, split_stats)
from alae.nn import build_model

CACHED = ["fid", "kid", "pr", "rec_fid", "rec_kid", "mse", "rec_distance", "fid_floor"]


class Counting:
    """An extractor that counts the images it is given (and can be told to fail)."""

    def __init__(self, inner, fail_after: int | None = None):
        self.inner, self.images, self.fail_after = inner, 0, fail_after

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail_after is not None and self.images >= self.fail_after:
            raise RuntimeError("extractor failed")
        self.images += len(x)
        return self.inner(x)


def style_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = ModelConfig(kind="style", latent=8, mapping_layers=2, start_channels=4, max_channels=8)
    return build_model(cfg, 1, 32).eval().requires_grad_(False)


@pytest.fixture()
def extractor(tiny_classifier) -> Counting:
    return Counting(tiny_classifier)


def files(cache: StatsCache) -> set[str]:
    return {p.name for p in cache.root.glob("*.npz")}


def test_a_cached_evaluation_equals_a_fresh_one_and_computes_no_statistics(extractor, tiny_shards,
                                                                           tmp_path):
    model = style_model()
    cfg = EvaluateConfig(num_images=80, batch_size=40, seed=3)
    fresh = evaluate_model(model, extractor, tiny_shards, cfg, CACHED)
    cache = StatsCache(tmp_path / "cache")
    first = evaluate_model(model, extractor, tiny_shards, cfg, CACHED, cache=cache)
    assert first == fresh            # exactly: the cache changes no bit of any number
    assert len(files(cache)) == 4    # reference, floor, reconstructions, samples
    extractor.images = 0
    model.generate = model.reconstruct = None   # any model pass would fail now
    again = evaluate_model(model, extractor, tiny_shards, cfg, CACHED, cache=cache)
    assert again == fresh and extractor.images == 0


def test_every_input_that_moves_a_number_is_in_the_key(extractor, tiny_shards, tmp_path):
    cache = StatsCache(tmp_path / "cache")
    model = style_model()

    def split(**kw):
        args = dict(split="test", resolution=32, batch_size=50, n=100)
        args.update(kw)
        transform = args.pop("transform", None)
        return split_stats(extractor, tiny_shards, args.pop("split"), args.pop("resolution"),
                           args.pop("batch_size"), args.pop("n"), transform=transform,
                           cache=cache)

    def gen(m=model, **kw):
        args = dict(n=60, seed=0, batch_size=30)
        args.update(kw)
        return generator_stats(m, extractor, cache=cache, progress=False, **args)

    calls = [lambda: split(), lambda: split(n=99), lambda: split(split="train"),
             lambda: split(resolution=16), lambda: split(batch_size=40),
             lambda: split(transform=Reconstruction(model, 0)),
             lambda: split(transform=Reconstruction(model, 1)),
             lambda: split(transform=Reconstruction(style_model(seed=1), 0)),
             lambda: gen(), lambda: gen(n=59), lambda: gen(seed=1), lambda: gen(psi=0.7),
             lambda: gen(batch_size=20), lambda: gen(m=style_model(seed=1))]
    for i, call in enumerate(calls):
        call()
        assert len(files(cache)) == i + 1, f"call {i} shared a key with an earlier one"
    seen = extractor.images
    for call in calls:   # the same calls again: all read
        call()
    assert extractor.images == seen and len(files(cache)) == len(calls)


def test_the_model_digest_sees_weights_and_buffers():
    a, b = style_model(), style_model()
    assert model_digest(a) == model_digest(b)
    b.w_avg[0] += 1e-6    # the truncation's average w is a buffer, not a parameter
    assert model_digest(a) != model_digest(b)


def test_a_broken_cache_file_is_computed_again(extractor, tiny_shards, tmp_path, capsys):
    cache = StatsCache(tmp_path / "cache")
    good = split_stats(extractor, tiny_shards, "test", 32, 50, 100, cache=cache).stats
    (path,) = cache.root.glob("*.npz")
    path.write_bytes(b"not an npz")
    extractor.images = 0
    again = split_stats(extractor, tiny_shards, "test", 32, 50, 100, cache=cache).stats
    assert extractor.images == 100 and "unreadable cache file" in capsys.readouterr().err
    np.testing.assert_array_equal(again.cov(), good.cov())
    assert np.load(path)["n"] == 100    # replaced by a good one


def test_a_failed_pass_leaves_no_cache_file(tiny_classifier, tiny_shards, tmp_path):
    cache = StatsCache(tmp_path / "cache")
    failing = Counting(tiny_classifier, fail_after=50)
    with pytest.raises(RuntimeError, match="extractor failed"):
        split_stats(failing, tiny_shards, "test", 32, 50, 150, cache=cache)
    assert not cache.root.exists() or not any(cache.root.iterdir())


def test_kept_vectors_are_computed_when_the_cached_file_has_none(extractor, tiny_shards,
                                                                 tmp_path):
    cache = StatsCache(tmp_path / "cache")
    split_stats(extractor, tiny_shards, "test", 32, 50, 100, cache=cache)
    extractor.images = 0
    kept = split_stats(extractor, tiny_shards, "test", 32, 50, 100, keep=True, cache=cache).stats
    assert extractor.images == 100 and kept.features().shape == (100, extractor.dim)
    read = split_stats(extractor, tiny_shards, "test", 32, 50, 100, keep=True, cache=cache).stats
    np.testing.assert_array_equal(read.features(), kept.features())
    assert extractor.images == 100


def test_the_reference_and_quick_fid_are_the_primitives(extractor, tiny_shards):
    ref = compute_reference(extractor, tiny_shards, 32, batch_size=64)
    by_hand = FeatureStats()
    for x, _ in eval_batches(tiny_shards, "test", 32, 64):
        by_hand.update(extractor(x.clamp(-1, 1)))
    np.testing.assert_array_equal(ref.cov(), by_hand.cov())
    model = style_model()
    torch.manual_seed(11)
    expected_next = torch.rand(3)
    torch.manual_seed(11)
    fid = quick_fid(model, extractor, ref, n=80, seed=2, batch_size=40)
    assert torch.equal(torch.rand(3), expected_next)   # the training's RNG is not moved
    assert fid == frechet_distance(generator_stats(model, extractor, 80, 2, 40), ref)


def test_the_cache_folder_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, "off")
    assert StatsCache.default(tmp_path) is None
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "elsewhere"))
    assert StatsCache.default(tmp_path).root == tmp_path / "elsewhere"
    monkeypatch.delenv(CACHE_ENV)
    assert StatsCache.default(tmp_path).root == tmp_path / ".alae" / "cache" / "stats"
