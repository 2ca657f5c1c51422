"""Metrics of a trained model, computed in memory in batches (no PNG round trip), by name.

Each metric is a function registered with `@register(name, uses=..., protocol=...)` that takes an
`Evaluation` and returns `{key: float}`; `uses` names the shared feature sets it reads (so one
pass computes them for every metric that asked), `protocol` what else fixes its numbers (sample
sizes, subsets, k), which `run_metrics` returns beside them. Keys carry the space their numbers
are in (DESIGN.md, "Metrics, honestly labelled"): `fid_classifier` or `fid_inception`,
`ppl_full_classifier` or `ppl_full_lpips`.

What is compared with what (all at the model's resolution, test images area-downsampled to it
by the loader when it is lower than the stored one; every image clamped to [-1, 1]):
- reference statistics: the whole test split, in stored order (given precomputed, from the
  `refstats` stage, or computed here);
- `fid`: `num_images` generated images against the reference; image i's z ~ N(0, I) and G's
  per-pixel noise are drawn from seeds of (`evaluate.seed`, i) alone (alae/metrics/draws.py), so
  no number depends on `evaluate.batch_size`;
- `rec_fid`: reconstructions G(E(x)) of the first min(`num_images`, test count) test images
  (G's noise per test image, as above), against the reference; `mse`: their mean squared error
  per pixel, in [-1, 1] units;
- `kid`, `pr`: KID (mean and std over subsets, alae/metrics/kid.py) and precision / recall
  (k-NN manifolds, alae/metrics/precision_recall.py) of the same generated images against the
  features of every test image; `rec_kid`, `rec_pr` (not run by default): the same for the
  reconstructions;
- `fid_floor`: the first min(`num_images`, train count) train images against the reference: what
  the real data scores at the same sample sizes as `fid`, i.e. the best `fid` can be;
- `ppl_full`, `ppl_end`: perceptual path length in W space over `ppl_samples` pairs
  (alae/metrics/ppl.py), with the distance `evaluate.ppl_distance` (classifier or lpips);
- `probe`: `probe_acc`, a linear SVM on E(x) of the first `probe_train` train images scored on
  every test image, and `probe_acc_pixels`, the same on pixels (alae/metrics/probe.py); skipped,
  with a note, when the data has no labels.
Provenance (which featurenet file, which metrics protocol) is not a number: `provenance(extractor)`
gives it as strings.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np
import torch
from tqdm import tqdm

from alae.config import EvaluateConfig
from alae.data import eval_batches, read_manifest
from alae.metrics import draws, kid, precision_recall
from alae.metrics.features import resize
from alae.metrics.fid import FeatureStats, frechet_distance
from alae.metrics.ppl import EPSILON, PathDistance, load_distance, perceptual_path_length
from alae.metrics.probe import C as PROBE_C
from alae.metrics.probe import PIXEL_RESOLUTION, linear_probe

# What the numbers mean for one model and params (how images are drawn, sample sizes, distances):
# bump it with any change that moves a number, so that numbers from before and after are never
# compared silently. Every run carries it (MLflow tag `alae.metrics_protocol`, `metrics_protocol`
# in metrics/eval.json).
#   1: z drawn at once from evaluate.seed; G's noise from the global RNG, batch after batch
#      (so samples, rec_fid, mse and PPL depended on evaluate.batch_size)
#   2: z, G's noise and PPL's pairs per image from (evaluate.seed, index): alae/metrics/draws.py
METRICS_PROTOCOL = 2

# What a metric reads from an Evaluation (each the name of the Evaluation's attribute that holds
# it); each is computed at most once per Evaluation, and only when a metric asked for names it
# (`register(..., uses=...)`):
GENERATED = "generated"          # features of num_images samples
REFERENCE = "reference"          # test-split mean and covariance, given or computed
TEST = "test"                    # features of every test image
RECONSTRUCTED = "reconstructed"  # features of the reconstructions (and `mse`, their error)
TRAIN = "train_subset"           # features of the data floor's train images
PROBE = "probe_data"             # codes, pixels and labels for the probe
PPL = "ppl_distance"             # the PPL distance
SHARED = (GENERATED, REFERENCE, TEST, RECONSTRUCTED, TRAIN, PROBE, PPL)


@dataclass(frozen=True)
class Metric:
    """A registered metric: `fn(ev) -> {key: float}`, what it reads, and `protocol(ev)`, what
    fixes its numbers beyond the model and the feature space (sample sizes, subsets, k)."""
    name: str
    fn: Callable[["Evaluation"], dict[str, float]]
    uses: frozenset[str]
    protocol: Callable[["Evaluation"], dict[str, Any]]
    default: bool   # run by the evaluate stage (else only when asked for by name)


_METRICS: dict[str, Metric] = {}
# Names `alae metrics --metrics` accepts for several registered metrics at once.
GROUPS = {"ppl": ("ppl_full", "ppl_end")}


def register(name: str, uses: Iterable[str] = (),
             protocol: Optional[Callable[["Evaluation"], dict[str, Any]]] = None,
             default: bool = True) -> Callable[[Callable], Callable]:
    """Register `fn(ev) -> {key: float}` as metric `name`, reading the shared sets `uses`;
    `default`: part of the evaluate stage's (and `evaluate_model`'s) default list."""
    uses = frozenset(uses)

    def add(fn: Callable[["Evaluation"], dict[str, float]]) -> Callable:
        if name in _METRICS:
            raise ValueError(f"metric {name!r} is already registered")
        if uses - set(SHARED):
            raise ValueError(f"metric {name!r} uses {sorted(uses - set(SHARED))}; an "
                             f"Evaluation shares {', '.join(SHARED)}")
        _METRICS[name] = Metric(name, fn, uses, protocol or (lambda ev: {}), default)
        return fn
    return add


def metric_names() -> list[str]:
    """Every registered metric."""
    return list(_METRICS)


def default_metrics() -> list[str]:
    """The metrics the evaluate stage runs."""
    return [name for name, m in _METRICS.items() if m.default]


def metric_uses(names: Iterable[str]) -> frozenset[str]:
    """What the named (registered) metrics read, together."""
    return frozenset().union(*(_METRICS[n].uses for n in names))


def resolve_names(names: Iterable[str]) -> list[str]:
    """Registered metric names, groups (`ppl`) expanded, in order, each once; ValueError naming
    the known ones for any other name."""
    names, out = list(names), []
    unknown = [n for n in names if n not in _METRICS and n not in GROUPS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; known: "
                         f"{', '.join([*_METRICS, *GROUPS])}")
    for n in names:
        out += [m for m in GROUPS.get(n, (n,)) if m not in out]
    return out


def note(message: str) -> None:
    """A line on stderr for what a run skipped or chose (never a number)."""
    print(f"evaluate: {message}", file=sys.stderr)


def _bar(it: Iterable, desc: str, total: Optional[int] = None) -> Iterator:
    return iter(tqdm(it, desc=f"evaluate: {desc}", total=total, file=sys.stderr, unit="batch"))


class _Probe:
    """Codes, pixels and labels of one split for the linear probe."""

    def __init__(self) -> None:
        self.codes: list[np.ndarray] = []
        self.pixels: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []

    def add(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        self.codes.append(model.encode(x).float().cpu().numpy())
        small = resize(x, min(PIXEL_RESOLUTION, x.shape[-1]))
        self.pixels.append(small.flatten(1).float().cpu().numpy())
        self.labels.append(y.numpy())

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(np.concatenate(a) for a in (self.codes, self.pixels, self.labels))


@dataclass
class _TestPass:
    real: Optional[FeatureStats]   # every test image (features kept when TEST is used)
    reconstructed: FeatureStats
    mse: float
    probe: Optional[_Probe]


class Evaluation:
    """One model, one extractor, one shard folder: the passes metrics share, each run at most once
    (the test split is read once for the reference and test features, the reconstructions, the MSE
    and the probe's test codes; the train split once for the data floor and the probe's train
    codes). Feature sets keep their vectors (`FeatureStats.features()`) for KID and P/R.

    `needs` names the metrics that will be asked for, so a pass computes only what they use.
    `reference`: precomputed test-split statistics in the extractor's space (refstats stage).
    `ppl_distance`: the PPL distance; None loads `cfg.ppl_distance` (`load_distance`).
    """

    def __init__(self, model: torch.nn.Module, extractor, shards_dir: str | Path,
                 cfg: EvaluateConfig, needs: Optional[Iterable[str]] = None,
                 reference: Optional[FeatureStats] = None,
                 ppl_distance: Optional[PathDistance] = None):
        self.model, self.extractor, self.shards_dir, self.cfg = model, extractor, shards_dir, cfg
        self.space = extractor.name
        self.device = next(model.parameters()).device
        self.resolution = int(model.resolution)
        manifest = read_manifest(shards_dir)
        counts = manifest["counts"]
        self.labelled = manifest.get("label_names") is not None
        self.n_test, self.n_train = int(counts["test"]), int(counts["train"])
        self.n_gen = cfg.num_images
        self.n_rec = min(cfg.num_images, self.n_test)
        self.n_floor = min(cfg.num_images, self.n_train)
        self.n_probe = min(cfg.probe_train, self.n_train)
        names = default_metrics() if needs is None else resolve_names(needs)
        self.uses = metric_uses(names)
        self._with_probe = PROBE in self.uses and self.labelled
        self._given_reference = reference
        if reference is not None and reference.dim != extractor.dim:
            raise ValueError(f"reference statistics are {reference.dim}-d, "
                             f"the {self.space} space is {extractor.dim}-d")
        if ppl_distance is None and PPL in self.uses:
            ppl_distance = load_distance(cfg.ppl_distance,
                                         extractor if self.space == "classifier" else None,
                                         self.device)
        self.ppl_distance = ppl_distance
        extractor.to(self.device)

    def _need(self, what: str) -> None:
        if what not in self.uses:
            raise RuntimeError(f"this Evaluation was built without {what!r}: no metric asked for "
                               "it uses it")

    def _batches(self, split: str, limit: Optional[int] = None):
        n = self.n_test if split == "test" else self.n_train
        n = n if limit is None else min(n, limit)
        return eval_batches(self.shards_dir, split, self.resolution, self.cfg.batch_size, n), n

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.extractor(x.clamp(-1, 1))

    @cached_property
    def _test_pass(self) -> _TestPass:
        """One read of the test split (only as far as needed)."""
        want_real = TEST in self.uses or (self._given_reference is None and REFERENCE in self.uses)
        real = FeatureStats(keep=TEST in self.uses) if want_real else None
        rec = FeatureStats(keep=True)
        probe = _Probe() if self._with_probe else None
        sq_err, pixels, seen = 0.0, 0, 0
        n_rec = self.n_rec if RECONSTRUCTED in self.uses else 0
        batches, n = self._batches("test", None if (want_real or probe) else n_rec)
        parts = [p for p, on in (("test features", want_real), ("reconstructions", n_rec),
                                 ("probe codes", probe)) if on]
        cuda = [self.device] if self.device.type == "cuda" else []
        # G's per-pixel noise in the reconstructions: per test image (alae/metrics/draws.py), so
        # rec_fid and mse are the same for any batch size and whatever the process drew before
        # (the global RNG is forked and seeded only for models that ignore `noise`).
        with torch.inference_mode(), torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.cfg.seed + 1)
            for x, y in _bar(batches, "test split: " + ", ".join(parts),
                             -(-n // self.cfg.batch_size)):
                x = x.to(self.device)
                if real is not None:
                    real.update(self._features(x))
                if probe is not None:
                    probe.add(self.model, x, y)
                take = min(len(x), n_rec - seen)
                if take > 0:
                    noise = draws.noise(self.cfg.seed, "reconstructions",
                                        range(seen, seen + take))
                    xr = self.model.reconstruct(x[:take], noise=noise).clamp(-1, 1)
                    rec.update(self._features(xr))
                    sq_err += (xr.double() - x[:take].double()).pow(2).sum().item()
                    pixels += xr.numel()
                    seen += take
        return _TestPass(real, rec, sq_err / pixels if pixels else float("nan"), probe)

    @property
    def reference(self) -> FeatureStats:
        """Test-split statistics for FID: the given ones, else computed here."""
        self._need(REFERENCE)
        given = self._given_reference
        return given if given is not None else self._test_pass.real

    @property
    def test(self) -> FeatureStats:
        """Every test image's features (`.features()`), computed here even when `reference` is
        given (a statistics file holds no vectors)."""
        self._need(TEST)
        return self._test_pass.real

    @cached_property
    def test_radii(self) -> torch.Tensor:
        """The test images' k-NN radii in feature space, for precision / recall of the samples
        and of the reconstructions alike."""
        return precision_recall.knn_radii(precision_recall.as_features(self.test.features()))

    @property
    def reconstructed(self) -> FeatureStats:
        """Features of the reconstructions of the first n_rec test images."""
        self._need(RECONSTRUCTED)
        return self._test_pass.reconstructed

    @property
    def mse(self) -> float:
        self._need(RECONSTRUCTED)
        return self._test_pass.mse

    @cached_property
    def generated(self) -> FeatureStats:
        self._need(GENERATED)
        stats = FeatureStats(keep=True)
        seed, latent, bs = self.cfg.seed, int(self.model.latent), self.cfg.batch_size
        cuda = [self.device] if self.device.type == "cuda" else []
        # z and G's noise per image (alae/metrics/draws.py). The global RNG is forked and seeded
        # only for models that ignore `noise` and draw from it anyway.
        with torch.inference_mode(), torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            starts = range(0, self.n_gen, bs)
            for s in _bar(starts, "generated", len(starts)):
                images = range(s, min(s + bs, self.n_gen))
                z = draws.latents(seed, "samples", images, latent).to(self.device)
                x = self.model.generate(z, noise=draws.noise(seed, "samples", images))
                stats.update(self._features(x))
        return stats

    @cached_property
    def _train_pass(self) -> tuple[Optional[FeatureStats], Optional[_Probe]]:
        """(stats of the first n_floor train images, probe train codes of the first n_probe),
        from one read of the train split."""
        n_floor = self.n_floor if TRAIN in self.uses else 0
        n_probe = self.n_probe if self._with_probe else 0
        stats = FeatureStats() if n_floor else None
        probe = _Probe() if n_probe else None
        batches, n = self._batches("train", max(n_floor, n_probe))
        parts = [p for p, on in (("data floor", n_floor), ("probe codes", n_probe)) if on]
        seen = 0
        with torch.inference_mode():
            for x, y in _bar(batches, "train split: " + ", ".join(parts),
                             -(-n // self.cfg.batch_size)):
                x = x.to(self.device)
                if seen < n_floor:
                    stats.update(self._features(x[:n_floor - seen]))
                if seen < n_probe:
                    probe.add(self.model, x[:n_probe - seen], y[:n_probe - seen])
                seen += len(x)
        return stats, probe

    @property
    def train_subset(self) -> FeatureStats:
        self._need(TRAIN)
        return self._train_pass[0]

    @cached_property
    def probe_data(self) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        """((codes, pixels, labels) of the train subset, (codes, pixels, labels) of the test
        set)."""
        if not self._with_probe:
            raise RuntimeError("this Evaluation was built without the probe")
        return self._train_pass[1].arrays(), self._test_pass.probe.arrays()

    def ppl(self, sampling: str) -> float:
        return perceptual_path_length(self.model, self.ppl_distance, self.cfg.ppl_samples,
                                      sampling, self.cfg.seed, self.cfg.batch_size)


# ---------------------------------------------------------------- the registry: one protocol each
# Sample sizes: `n` the model's images (samples, reconstructions or train images), `n_ref` the
# test images they are compared with.

def _vs_test(n: Callable[["Evaluation"], int]) -> Callable[["Evaluation"], dict[str, Any]]:
    return lambda ev: {"n": n(ev), "n_ref": ev.n_test}


def _kid_protocol(n: Callable[["Evaluation"], int]) -> Callable[["Evaluation"], dict[str, Any]]:
    return lambda ev: {**_vs_test(n)(ev), "kernel": f"(x.y/d + {kid.COEF0:g})^{kid.DEGREE}",
                       "subsets": kid.SUBSETS, "subset_size": kid.subset_size(n(ev), ev.n_test),
                       "subset_seed": ev.cfg.seed}


def _pr_protocol(n: Callable[["Evaluation"], int]) -> Callable[["Evaluation"], dict[str, Any]]:
    return lambda ev: {**_vs_test(n)(ev), "k": precision_recall.K}


def _against_test(prefix: str, images: str, n: Callable[["Evaluation"], int],
                  kid_pr_default: bool) -> None:
    """Register `<prefix>fid`, `<prefix>kid` and `<prefix>pr`: the feature set `images`
    (GENERATED or RECONSTRUCTED, `n(ev)` images) against the test split."""
    def fid_(ev: Evaluation) -> dict[str, float]:
        return {f"{prefix}fid_{ev.space}": frechet_distance(getattr(ev, images), ev.reference)}

    def kid_(ev: Evaluation) -> dict[str, float]:
        mean, std = kid.kid(getattr(ev, images).features(), ev.test.features(), seed=ev.cfg.seed)
        return {f"{prefix}kid_{ev.space}": mean, f"{prefix}kid_std_{ev.space}": std}

    def pr_(ev: Evaluation) -> dict[str, float]:
        p, r = precision_recall.precision_recall(getattr(ev, images).features(),
                                                 ev.test.features(), real_radii=ev.test_radii)
        return {f"{prefix}precision_{ev.space}": p, f"{prefix}recall_{ev.space}": r}

    register(f"{prefix}fid", uses={images, REFERENCE}, protocol=_vs_test(n))(fid_)
    register(f"{prefix}kid", uses={images, TEST}, protocol=_kid_protocol(n),
             default=kid_pr_default)(kid_)
    register(f"{prefix}pr", uses={images, TEST}, protocol=_pr_protocol(n),
             default=kid_pr_default)(pr_)


# fid, kid, pr: the samples; rec_fid, rec_kid, rec_pr: the reconstructions of the test images.
# rec_kid and rec_pr only when asked for: at the default 10k images they would add ~5% to the
# evaluate stage's time for little that rec_fid does not say.
_against_test("", GENERATED, lambda ev: ev.n_gen, kid_pr_default=True)
_against_test("rec_", RECONSTRUCTED, lambda ev: ev.n_rec, kid_pr_default=False)


@register("fid_floor", uses={TRAIN, REFERENCE}, protocol=_vs_test(lambda ev: ev.n_floor))
def _fid_floor(ev: Evaluation) -> dict[str, float]:
    return {f"fid_floor_{ev.space}": frechet_distance(ev.train_subset, ev.reference)}


@register("mse", uses={RECONSTRUCTED}, protocol=lambda ev: {"n": ev.n_rec})
def _mse(ev: Evaluation) -> dict[str, float]:
    return {"mse": ev.mse}


def _ppl(ev: Evaluation, sampling: str) -> dict[str, float]:
    if ev.ppl_distance is None:
        note(f"ppl_{sampling} skipped: no classifier features for evaluate.ppl_distance "
             "classifier (the dataset has no labels; lpips needs none)")
        return {}
    return {f"ppl_{sampling}_{ev.ppl_distance.name}": ev.ppl(sampling)}


def _ppl_protocol(ev: Evaluation) -> dict[str, Any]:
    return {"n": ev.cfg.ppl_samples, "epsilon": EPSILON,
            "distance": getattr(ev.ppl_distance, "name", None)}


@register("ppl_full", uses={PPL}, protocol=_ppl_protocol)
def _ppl_full(ev: Evaluation) -> dict[str, float]:
    return _ppl(ev, "full")


@register("ppl_end", uses={PPL}, protocol=_ppl_protocol)
def _ppl_end(ev: Evaluation) -> dict[str, float]:
    return _ppl(ev, "end")


@register("probe", uses={PROBE}, protocol=lambda ev: {"n": ev.n_probe, "n_ref": ev.n_test,
                                                      "c": PROBE_C})
def _probe(ev: Evaluation) -> dict[str, float]:
    if not ev.labelled:
        note("probe_acc skipped: the dataset has no labels")
        return {}
    (codes, pixels, labels), (t_codes, t_pixels, t_labels) = ev.probe_data
    seed = ev.cfg.seed
    return {"probe_acc": linear_probe(codes, labels, t_codes, t_labels, seed=seed),
            "probe_acc_pixels": linear_probe(pixels, labels, t_pixels, t_labels, seed=seed)}


@dataclass(frozen=True)
class Result:
    """One metric's numbers and the protocol they were measured under."""
    metric: str
    values: dict[str, float]
    protocol: dict[str, Any]


def run_metrics(model: torch.nn.Module, extractor, shards_dir: str | Path, cfg: EvaluateConfig,
                metrics: Optional[Iterable[str]] = None, *,
                reference: Optional[FeatureStats] = None,
                ppl_distance: Optional[PathDistance] = None) -> list[Result]:
    """Each named metric (default: `default_metrics()`; groups such as `ppl` expanded) with its
    protocol: the metric's own (`register(protocol=...)`) plus the evaluation's seed."""
    wanted = default_metrics() if metrics is None else resolve_names(metrics)
    ev = Evaluation(model, extractor, shards_dir, cfg, needs=wanted, reference=reference,
                    ppl_distance=ppl_distance)
    return [Result(name, _METRICS[name].fn(ev), {**_METRICS[name].protocol(ev), "seed": cfg.seed})
            for name in wanted]


def evaluate_model(model: torch.nn.Module, extractor, shards_dir: str | Path, cfg: EvaluateConfig,
                   metrics: Optional[Iterable[str]] = None, *,
                   reference: Optional[FeatureStats] = None,
                   ppl_distance: Optional[PathDistance] = None) -> dict[str, float]:
    """Run the named metrics (default: `default_metrics()`) and merge their `{key: float}` results.

    Deterministic for a given cfg.seed, model, extractor and shards. `reference`: precomputed
    test-split statistics in the extractor's space (the refstats stage's file). Call
    `provenance(extractor, ppl_distance)` for the strings (featurenet hash) that belong beside
    these numbers, `run_metrics` for each metric's protocol.
    """
    out: dict[str, float] = {}
    for result in run_metrics(model, extractor, shards_dir, cfg, metrics, reference=reference,
                              ppl_distance=ppl_distance):
        out.update(result.values)
    return out


@torch.inference_mode()
def quick_fid(model: torch.nn.Module, extractor, reference: FeatureStats, n: int, seed: int,
              batch_size: int = 250) -> float:
    """FID of `n` samples at the level of detail the model is at, upsampled (nearest, as the
    training's sample grids) to its final resolution: for watching a run, not for reporting.
    z and G's noise are evaluate's first `n` samples for `seed` (alae/metrics/draws.py), from
    generators of their own, so it neither depends on nor moves the training's RNG, and draws as
    one process does whatever the number of ranks."""
    device = next(model.parameters()).device
    stats = FeatureStats()
    for s in range(0, n, batch_size):
        images = range(s, min(s + batch_size, n))
        z = draws.latents(seed, "samples", images, int(model.latent)).to(device)
        x = model.generate(z, noise=draws.noise(seed, "samples", images))
        if x.shape[-1] != model.resolution:
            x = torch.nn.functional.interpolate(x, size=int(model.resolution), mode="nearest")
        stats.update(extractor(x.clamp(-1, 1)))
    return frechet_distance(stats, reference)


def provenance(extractor, ppl_distance: Optional[PathDistance] = None) -> dict[str, str]:
    """Strings identifying the protocol and the feature spaces, for MLflow tags (`alae.<key>`):
    never mixed into the metrics."""
    out = {"metrics_protocol": str(METRICS_PROTOCOL), "features": extractor.name,
           **extractor.provenance()}
    if ppl_distance is not None:
        out["ppl_distance"] = ppl_distance.name
        out.update(ppl_distance.provenance())
    return out
