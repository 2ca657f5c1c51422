"""Metrics of a trained model, computed in memory in batches (no PNG round trip), by name.

Each metric is a function registered with `@register(name)` that takes an `Evaluation` and returns
`{key: float}`; keys of feature-space metrics carry the space's name (DESIGN.md, "Metrics, honestly
labelled"): `fid_classifier`, `rec_fid_classifier`, `fid_floor_classifier`.

What is compared with what (all at the model's resolution, test images area-downsampled to it
by the loader when it is lower than the stored one; every image clamped to [-1, 1]):
- reference statistics: the whole test split, in stored order;
- `fid`: `num_images` generated images, z ~ N(0, I) from a generator seeded with `evaluate.seed`
  (the model's own per-pixel noise is seeded too), against the reference;
- `rec_fid`: reconstructions G(E(x)) of the first min(`num_images`, test count) test images,
  against the reference; `mse`: their mean squared error per pixel, in [-1, 1] units;
- `fid_floor`: the first min(`num_images`, train count) train images against the reference: what
  the real data scores at the same sample sizes as `fid`, i.e. the best `fid` can be.
Provenance (which featurenet file) is not a number: `provenance(extractor)` gives it as strings.
"""
from __future__ import annotations

import sys
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import torch
from tqdm import tqdm

from alae.config import EvaluateConfig
from alae.data import eval_batches, read_manifest
from alae.metrics.fid import FeatureStats, frechet_distance

Metric = Callable[["Evaluation"], dict[str, float]]
_METRICS: dict[str, Metric] = {}


def register(name: str) -> Callable[[Metric], Metric]:
    def add(fn: Metric) -> Metric:
        if name in _METRICS:
            raise ValueError(f"metric {name!r} is already registered")
        _METRICS[name] = fn
        return fn
    return add


def metric_names() -> list[str]:
    return list(_METRICS)


def _bar(it: Iterable, desc: str, total: Optional[int] = None) -> Iterator:
    return iter(tqdm(it, desc=f"evaluate: {desc}", total=total, file=sys.stderr, unit="batch"))


class Evaluation:
    """One model, one extractor, one shard folder: the passes metrics share, each run at most once
    (the test split is read once for the reference, the reconstructions and the MSE together)."""

    def __init__(self, model: torch.nn.Module, extractor, shards_dir: str | Path,
                 cfg: EvaluateConfig, reconstructions: bool = True):
        self.model, self.extractor, self.shards_dir, self.cfg = model, extractor, shards_dir, cfg
        self.space = extractor.name
        self.device = next(model.parameters()).device
        self.resolution = int(model.resolution)
        counts = read_manifest(shards_dir)["counts"]
        self.n_test, self.n_train = int(counts["test"]), int(counts["train"])
        self.n_gen = cfg.num_images
        self.n_rec = min(cfg.num_images, self.n_test)
        self.n_floor = min(cfg.num_images, self.n_train)
        self._with_rec = reconstructions
        extractor.to(self.device)

    def _batches(self, split: str, limit: Optional[int] = None):
        n = self.n_test if split == "test" else self.n_train
        n = n if limit is None else min(n, limit)
        return eval_batches(self.shards_dir, split, self.resolution, self.cfg.batch_size, limit), n

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.extractor(x.clamp(-1, 1))

    @cached_property
    def _test_pass(self) -> tuple[FeatureStats, FeatureStats, float]:
        """(reference stats, reconstruction stats, MSE) from one read of the test split."""
        real, rec = FeatureStats(), FeatureStats()
        sq_err, pixels, seen = 0.0, 0, 0
        batches, n = self._batches("test")
        with torch.no_grad():
            desc = "test split" + (" + reconstructions" if self._with_rec else "")
            for x, _ in _bar(batches, desc, -(-n // self.cfg.batch_size)):
                x = x.to(self.device)
                real.update(self._features(x))
                take = min(len(x), self.n_rec - seen) if self._with_rec else 0
                if take > 0:
                    xr = self.model.reconstruct(x[:take]).clamp(-1, 1)
                    rec.update(self._features(xr))
                    sq_err += (xr.double() - x[:take].double()).pow(2).sum().item()
                    pixels += xr.numel()
                    seen += take
        return real, rec, (sq_err / pixels if pixels else float("nan"))

    @property
    def reference(self) -> FeatureStats:
        return self._test_pass[0]

    @property
    def reconstructed(self) -> tuple[FeatureStats, float]:
        if not self._with_rec:
            raise RuntimeError("this Evaluation was built without reconstructions")
        return self._test_pass[1], self._test_pass[2]

    @cached_property
    def generated(self) -> FeatureStats:
        stats = FeatureStats()
        # All z drawn at once, so the samples do not depend on the batch size.
        z = torch.randn(self.n_gen, int(self.model.latent),
                        generator=torch.Generator().manual_seed(self.cfg.seed))
        cuda = [self.device] if self.device.type == "cuda" else []
        # The generator's per-pixel noise draws from the global RNG: seed it, and restore it after.
        with torch.no_grad(), torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.cfg.seed)
            chunks = z.split(self.cfg.batch_size)
            for zb in _bar(chunks, "generated", len(chunks)):
                stats.update(self._features(self.model.generate(zb.to(self.device))))
        return stats

    @cached_property
    def train_subset(self) -> FeatureStats:
        stats = FeatureStats()
        batches, n = self._batches("train", self.n_floor)
        with torch.no_grad():
            for x, _ in _bar(batches, "train subset", -(-n // self.cfg.batch_size)):
                stats.update(self._features(x.to(self.device)))
        return stats


@register("fid")
def _fid(ev: Evaluation) -> dict[str, float]:
    return {f"fid_{ev.space}": frechet_distance(ev.generated, ev.reference)}


@register("rec_fid")
def _rec_fid(ev: Evaluation) -> dict[str, float]:
    return {f"rec_fid_{ev.space}": frechet_distance(ev.reconstructed[0], ev.reference)}


@register("fid_floor")
def _fid_floor(ev: Evaluation) -> dict[str, float]:
    return {f"fid_floor_{ev.space}": frechet_distance(ev.train_subset, ev.reference)}


@register("mse")
def _mse(ev: Evaluation) -> dict[str, float]:
    return {"mse": ev.reconstructed[1]}


def evaluate_model(model: torch.nn.Module, extractor, shards_dir: str | Path, cfg: EvaluateConfig,
                   metrics: Optional[Iterable[str]] = None) -> dict[str, float]:
    """Run the named metrics (default: all registered) and merge their `{key: float}` results.

    Deterministic for a given cfg.seed, model, extractor and shards. Call `provenance(extractor)`
    for the strings (featurenet hash) that belong beside these numbers.
    """
    wanted = list(metrics) if metrics is not None else metric_names()
    unknown = [m for m in wanted if m not in _METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(_METRICS)}")
    ev = Evaluation(model, extractor, shards_dir, cfg,
                    reconstructions=bool({"rec_fid", "mse"} & set(wanted)))
    out: dict[str, float] = {}
    for name in wanted:
        out.update(_METRICS[name](ev))
    return out


def provenance(extractor) -> dict[str, str]:
    """Strings identifying the feature space, for MLflow tags: never mixed into the metrics."""
    return {"features": extractor.name, **extractor.provenance()}
