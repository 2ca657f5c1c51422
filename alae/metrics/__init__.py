"""Metrics of a trained model, computed in memory in batches (no PNG round trip), by name.

Each metric is a function registered with `@register(name, uses=..., protocol=...)` that takes an
`Evaluation` and returns `{key: float}`; `uses` names the shared feature sets it reads (so one
pass computes them for every metric that asked), `protocol` what else fixes its numbers (sample
sizes, subsets, k), which `run_metrics` returns beside them. Keys carry the space their numbers
are in (DESIGN.md, "Metrics, honestly labelled"): `fid_classifier` or `fid_inception`,
`ppl_full_classifier` or `ppl_full_lpips`.

What is compared with what (all at the model's resolution, real images area-downsampled to it
by the loader when it is lower than the stored one; every image clamped to [-1, 1]):
- reference statistics: the whole reference split `evaluate.reference` (the test split by
  default; the train split as in the paper), in stored order (given precomputed, from the
  `refstats` stage, or computed here);
- `fid`: `num_images` generated images against the reference; image i's z ~ N(0, I) and G's
  per-pixel noise are drawn from seeds of (`evaluate.seed`, i) alone (alae/metrics/draws.py), so
  no number depends on `evaluate.batch_size`;
- `rec_fid`: reconstructions G(E(x)) of the first min(`num_images`, test count) test images
  (G's noise per test image, as above), against the reference; `mse`: their mean squared error
  per pixel, in [-1, 1] units;
- `rec_distance`: the mean distance `evaluate.rec_distance` (classifier or lpips, as PPL's)
  between those test images and their reconstructions;
- `kid`, `pr`: KID (mean and std over subsets, alae/metrics/kid.py) and precision / recall
  (k-NN manifolds, alae/metrics/precision_recall.py) of the same generated images against the
  features of every reference image; `rec_kid`, `rec_pr` (not run by default): the same for the
  reconstructions;
- `fid_floor`: the first min(`num_images`, count) images of the other split (train images
  against the test reference, test images against the train reference) against the reference:
  what real data the model never had to match scores at the same sample sizes as `fid`, i.e. the
  best `fid` can be;
- `ppl_full`, `ppl_end`: perceptual path length in W space over `ppl_samples` pairs
  (alae/metrics/ppl.py), with the distance `evaluate.ppl_distance` (classifier or lpips) on whole
  images or StyleGAN's face crops (`evaluate.ppl_crop`);
- `probe`: `probe_acc`, a linear SVM on E(x) of the first `probe_train` train images scored on
  every test image, and `probe_acc_pixels`, the same on pixels (alae/metrics/probe.py); skipped,
  with a note, when the data has no labels.
Every feature set above is one of the two memoised primitives of alae/metrics/stats.py,
`split_stats` (a split, optionally through `Reconstruction`) and `generator_stats` (a model's
samples); `run_metrics(..., cache=StatsCache(...))` reads what an earlier evaluation of the
same inputs computed.
Provenance (which featurenet file, which metrics protocol) is not a number: `provenance(extractor)`
gives it as strings.

Keys: `<metric>_<space>[<reference>]`, where the space names the features and how they were
made (`classifier`, `inception`, `inception_clean` for `evaluate.resize: clean`) and the
reference suffix is `_trainref` for `evaluate.reference: train` (empty for the default test
split): `fid_inception_clean_trainref`. Distances name theirs: `ppl_full_lpips`,
`rec_distance_classifier`, and `_facecrop` for `evaluate.ppl_crop: face`. Default choices add
nothing, so the default run's keys keep their meaning.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from alae.config import EvaluateConfig
from alae.data import eval_batches, read_manifest
from alae.metrics import draws, kid, precision_recall
from alae.metrics.features import resize
from alae.metrics.fid import FeatureStats, frechet_distance
from alae.metrics.ppl import (CROPS, EPSILON, FeatureDistance, PathDistance, load_distance,
                              perceptual_path_length)
from alae.metrics.probe import C as PROBE_C
from alae.metrics.probe import PIXEL_RESOLUTION, linear_probe
from alae.metrics.stats import (Measured, Reconstruction, StatsCache, generator_stats,
                                split_stats)

# What the numbers mean for one model and params (how images are drawn, sample sizes, distances):
# bump it with any change that moves a number, so that numbers from before and after are never
# compared silently. Every run carries it (MLflow tag `alae.metrics_protocol`, `metrics_protocol`
# in metrics/eval.json).
#   1: z drawn at once from evaluate.seed; G's noise from the global RNG, batch after batch
#      (so samples, rec_fid, mse and PPL depended on evaluate.batch_size)
#   2: z, G's noise and PPL's pairs per image from (evaluate.seed, index): alae/metrics/draws.py
METRICS_PROTOCOL = 2

# evaluate.reference -> the suffix of the keys of metrics compared with the reference split.
REFERENCE_SUFFIX = {"test": "", "train": "_trainref"}

# What a metric reads from an Evaluation (each the name of the Evaluation's attribute that holds
# it); each is computed at most once per Evaluation, and only when a metric asked for names it
# (`register(..., uses=...)`):
GENERATED = "generated"          # statistics of num_images samples
GENERATED_FEATURES = "generated_features"  # ...with every vector kept (KID, P/R)
REFERENCE = "reference"          # reference-split mean and covariance, given or computed
REFERENCE_FEATURES = "reference_features"  # features of every reference-split image
RECONSTRUCTED = "reconstructed"  # statistics of the reconstructions (and `mse`, their error)
RECONSTRUCTED_FEATURES = "reconstructed_features"  # ...with every vector kept
REC_DISTANCE = "rec_distance"    # mean distance of the test images to their reconstructions
FLOOR = "floor_subset"           # features of the data floor's images (of the other split)
PROBE = "probe_data"             # codes, pixels and labels for the probe
PPL = "ppl_distance"             # the PPL distance
SHARED = (GENERATED, GENERATED_FEATURES, REFERENCE, REFERENCE_FEATURES, RECONSTRUCTED,
          RECONSTRUCTED_FEATURES, REC_DISTANCE, FLOOR, PROBE, PPL)


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

    def add(self, codes: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> None:
        self.codes.append(codes.float().cpu().numpy())
        small = resize(x, min(PIXEL_RESOLUTION, x.shape[-1]))
        self.pixels.append(small.flatten(1).float().cpu().numpy())
        self.labels.append(y.numpy())

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(np.concatenate(a) for a in (self.codes, self.pixels, self.labels))


def _squared_error(x: torch.Tensor, xr: torch.Tensor, _f: torch.Tensor) -> torch.Tensor:
    """Per image: the mean squared error per pixel (all images have as many pixels)."""
    return (xr.double() - x.double()).pow(2).flatten(1).mean(1)


class Evaluation:
    """One model, one extractor, one shard folder: the statistics metrics share, each computed at
    most once per Evaluation, and each one of the two memoised primitives of
    alae/metrics/stats.py (with a `cache`, at most once per key on disk):

    - the reference: `split_stats(reference split)`, every image, vectors kept for KID and P/R;
    - the data floor: `split_stats(other split, n_floor)`;
    - the reconstructions: `split_stats(test, n_rec, transform=Reconstruction(model, seed))`,
      with the per-image squared error (`mse`) and distance (`rec_distance`) measured beside;
    - the samples: `generator_stats(model, num_images, seed)`.

    The probe's codes are not feature statistics: it encodes the train subset, and takes the
    test split's from the reconstruction pass when that pass encoded every test image (else it
    encodes them too). `needs` names the
    metrics that will be asked for, so only what they use is computed. `reference`: precomputed
    statistics of the `cfg.reference` split in the extractor's space (refstats stage).
    `ppl_distance`, `rec_distance`: the PPL and reconstruction distances; None loads
    `cfg.ppl_distance`, `cfg.rec_distance` (`load_distance`).
    """

    def __init__(self, model: torch.nn.Module, extractor, shards_dir: str | Path,
                 cfg: EvaluateConfig, needs: Optional[Iterable[str]] = None,
                 reference: Optional[FeatureStats] = None,
                 ppl_distance: Optional[PathDistance] = None,
                 rec_distance: Optional[PathDistance] = None,
                 cache: Optional[StatsCache] = None):
        self.model, self.extractor, self.shards_dir, self.cfg = model, extractor, shards_dir, cfg
        self.cache = cache
        self.space = extractor.name
        self.ref_suffix = REFERENCE_SUFFIX[cfg.reference]
        self.device = next(model.parameters()).device
        self.resolution = int(model.resolution)
        manifest = read_manifest(shards_dir)
        self.counts = {split: int(n) for split, n in manifest["counts"].items()}
        self.labelled = manifest.get("label_names") is not None
        self.n_test, self.n_train = self.counts["test"], self.counts["train"]
        self.ref_split = cfg.reference
        self.floor_split = "train" if cfg.reference == "test" else "test"
        self.n_ref = self.counts[self.ref_split]
        self.n_gen = cfg.num_images
        self.n_rec = min(cfg.num_images, self.n_test)
        self.n_floor = min(cfg.num_images, self.counts[self.floor_split])
        self.n_probe = min(cfg.probe_train, self.n_train)
        names = default_metrics() if needs is None else resolve_names(needs)
        self.uses = metric_uses(names)
        self._given_reference = reference
        self._test_codes: list[tuple[Sequence[int], torch.Tensor]] = []
        if reference is not None and reference.dim != extractor.dim:
            raise ValueError(f"reference statistics are {reference.dim}-d, "
                             f"the {self.space} space is {extractor.dim}-d")
        classifier = extractor if self.space == "classifier" else None
        if ppl_distance is None and PPL in self.uses:
            ppl_distance = load_distance(cfg.ppl_distance, classifier, self.device)
        if rec_distance is None and REC_DISTANCE in self.uses:
            rec_distance = load_distance(cfg.rec_distance, classifier, self.device,
                                         key="evaluate.rec_distance")
        self.ppl_distance, self.rec_distance_fn = ppl_distance, rec_distance
        extractor.to(self.device)

    def _need(self, *what: str) -> None:
        if not self.uses & set(what):
            raise RuntimeError(f"this Evaluation was built without {' or '.join(what)}: no "
                               "metric asked for uses it")

    def _split(self, split: str, n: Optional[int] = None, **kwargs) -> Measured:
        return split_stats(self.extractor, self.shards_dir, split, self.resolution,
                           self.cfg.batch_size, n, cache=self.cache, **kwargs)

    @cached_property
    def _reference_split(self) -> FeatureStats:
        return self._split(self.ref_split, keep=REFERENCE_FEATURES in self.uses,
                           desc=f"{self.ref_split} split (reference)").stats

    @property
    def reference(self) -> FeatureStats:
        """Reference-split statistics for FID: the given ones, else computed here."""
        self._need(REFERENCE)
        given = self._given_reference
        return given if given is not None else self._reference_split

    @property
    def reference_features(self) -> FeatureStats:
        """Every reference image's features (`.features()`), computed here even when `reference`
        is given (a statistics file holds no vectors)."""
        self._need(REFERENCE_FEATURES)
        return self._reference_split

    @cached_property
    def reference_radii(self) -> torch.Tensor:
        """The reference images' k-NN radii in feature space, for precision / recall of the
        samples and of the reconstructions alike."""
        return precision_recall.knn_radii(
            precision_recall.as_features(self.reference_features.features()))

    def _rec_distance_measure(self) -> tuple[str, Callable]:
        """(what fixes it, per-image fn) for `rec_distance`: the classifier distance in the
        classifier space reuses the features of the reconstructions."""
        d = self.rec_distance_fn
        ident = json.dumps({"distance": d.name, **d.provenance()}, sort_keys=True)
        if isinstance(d, FeatureDistance) and d.extractor is self.extractor:
            return ident, lambda x, xr, fxr: d.of_features(self.extractor(x.clamp(-1, 1)), fxr)
        return ident, lambda x, xr, _f: d(x, xr)

    @cached_property
    def _reconstructions(self) -> Measured:
        self._need(RECONSTRUCTED, RECONSTRUCTED_FEATURES, REC_DISTANCE)
        measures = {"mse": ("per-pixel mean squared error", _squared_error)}
        if REC_DISTANCE in self.uses and self.rec_distance_fn is not None:
            measures["rec_distance"] = self._rec_distance_measure()
        # The probe's test codes are the E(x) this pass computes anyway (same batches, same
        # bits): collected when the probe will want every test image's.
        collect = PROBE in self.uses and self.labelled and self.n_rec == self.n_test and \
            hasattr(self.model, "decode")
        transform = Reconstruction(self.model, self.cfg.seed,
                                   on_codes=(lambda idx, c: self._test_codes.append((idx, c)))
                                   if collect else None)
        return self._split("test", self.n_rec, transform=transform, measures=measures,
                           keep=RECONSTRUCTED_FEATURES in self.uses,
                           desc="reconstructions of the test split")

    @property
    def reconstructed(self) -> FeatureStats:
        """Features of the reconstructions of the first n_rec test images."""
        self._need(RECONSTRUCTED, RECONSTRUCTED_FEATURES)
        return self._reconstructions.stats

    @property
    def reconstructed_features(self) -> FeatureStats:
        self._need(RECONSTRUCTED_FEATURES)
        return self._reconstructions.stats

    @property
    def mse(self) -> float:
        self._need(RECONSTRUCTED)
        return self._reconstructions.means["mse"]

    @property
    def rec_distance(self) -> float:
        """Mean `evaluate.rec_distance` of the first n_rec test images to their reconstructions
        (NaN without a distance: no featurenet for `classifier`)."""
        self._need(REC_DISTANCE)
        return self._reconstructions.means.get("rec_distance", float("nan"))

    @cached_property
    def generated(self) -> FeatureStats:
        """Features of the num_images samples (`generator_stats`)."""
        self._need(GENERATED, GENERATED_FEATURES)
        return generator_stats(self.model, self.extractor, self.n_gen, self.cfg.seed,
                               self.cfg.batch_size, keep=GENERATED_FEATURES in self.uses,
                               cache=self.cache)

    @property
    def generated_features(self) -> FeatureStats:
        self._need(GENERATED_FEATURES)
        return self.generated

    @cached_property
    def floor_subset(self) -> FeatureStats:
        """Features of the first n_floor images of the split that is not the reference."""
        self._need(FLOOR)
        return self._split(self.floor_split, self.n_floor,
                           desc=f"{self.floor_split} split (data floor)").stats

    def _probe_split(self, split: str, n: int) -> tuple[np.ndarray, ...]:
        """Codes, pixels and labels of the first n images of `split`; the codes collected by
        the reconstruction pass when it encoded exactly these images (in the same batches)."""
        codes: list[torch.Tensor] = []
        if split == "test" and [i for idx, _ in self._test_codes for i in idx] == list(range(n)):
            codes = [c for _, c in self._test_codes]
        probe = _Probe()
        what = f"{split} split (probe{'' if codes else ' codes'})"
        with torch.inference_mode():
            for k, (x, y) in enumerate(_bar(eval_batches(self.shards_dir, split, self.resolution,
                                                         self.cfg.batch_size, n),
                                            what, -(-n // self.cfg.batch_size))):
                x = x.to(self.device)
                if codes and len(codes[k]) != len(x):
                    raise RuntimeError("the reconstruction pass's batches are not the probe's")
                probe.add(codes[k] if codes else self.model.encode(x), x, y)
        return probe.arrays()

    @cached_property
    def probe_data(self) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        """((codes, pixels, labels) of the train subset, (codes, pixels, labels) of the test
        set)."""
        self._need(PROBE)
        if not self.labelled:
            raise RuntimeError("the dataset has no labels for the probe")
        return self._probe_split("train", self.n_probe), self._probe_split("test", self.n_test)

    def ppl(self, sampling: str) -> float:
        return perceptual_path_length(self.model, self.ppl_distance, self.cfg.ppl_samples,
                                      sampling, self.cfg.seed, self.cfg.batch_size,
                                      crop=self.cfg.ppl_crop)


# ---------------------------------------------------------------- the registry: one protocol each
# Sample sizes: `n` the model's images (samples, reconstructions or real images of the floor
# split), `n_ref` the reference images they are compared with; `reference` which split those are,
# `resize` how images reached Inception (in the space's name too).

def _vs_reference(n: Callable[["Evaluation"], int]) -> Callable[["Evaluation"], dict[str, Any]]:
    return lambda ev: {"n": n(ev), "n_ref": ev.n_ref, "reference": ev.ref_split,
                       "resize": ev.cfg.resize}


def _kid_protocol(n: Callable[["Evaluation"], int]) -> Callable[["Evaluation"], dict[str, Any]]:
    return lambda ev: {**_vs_reference(n)(ev), "kernel": f"(x.y/d + {kid.COEF0:g})^{kid.DEGREE}",
                       "subsets": kid.SUBSETS, "subset_size": kid.subset_size(n(ev), ev.n_ref),
                       "subset_seed": ev.cfg.seed}


def _pr_protocol(n: Callable[["Evaluation"], int]) -> Callable[["Evaluation"], dict[str, Any]]:
    return lambda ev: {**_vs_reference(n)(ev), "k": precision_recall.K}


def _against_reference(prefix: str, images: str, n: Callable[["Evaluation"], int],
                       kid_pr_default: bool) -> None:
    """Register `<prefix>fid`, `<prefix>kid` and `<prefix>pr`: the feature set `images`
    (GENERATED or RECONSTRUCTED, `n(ev)` images) against the reference split."""
    vectors = f"{images}_features"   # KID and P/R read every vector
    def fid_(ev: Evaluation) -> dict[str, float]:
        return {f"{prefix}fid_{ev.space}{ev.ref_suffix}":
                frechet_distance(getattr(ev, images), ev.reference)}

    def kid_(ev: Evaluation) -> dict[str, float]:
        mean, std = kid.kid(getattr(ev, vectors).features(), ev.reference_features.features(),
                            seed=ev.cfg.seed)
        return {f"{prefix}kid_{ev.space}{ev.ref_suffix}": mean,
                f"{prefix}kid_std_{ev.space}{ev.ref_suffix}": std}

    def pr_(ev: Evaluation) -> dict[str, float]:
        p, r = precision_recall.precision_recall(getattr(ev, vectors).features(),
                                                 ev.reference_features.features(),
                                                 real_radii=ev.reference_radii)
        return {f"{prefix}precision_{ev.space}{ev.ref_suffix}": p,
                f"{prefix}recall_{ev.space}{ev.ref_suffix}": r}

    register(f"{prefix}fid", uses={images, REFERENCE}, protocol=_vs_reference(n))(fid_)
    register(f"{prefix}kid", uses={vectors, REFERENCE_FEATURES}, protocol=_kid_protocol(n),
             default=kid_pr_default)(kid_)
    register(f"{prefix}pr", uses={vectors, REFERENCE_FEATURES}, protocol=_pr_protocol(n),
             default=kid_pr_default)(pr_)


# fid, kid, pr: the samples; rec_fid, rec_kid, rec_pr: the reconstructions of the test images.
# rec_kid and rec_pr only when asked for: at the default 10k images they would add ~5% to the
# evaluate stage's time for little that rec_fid does not say.
_against_reference("", GENERATED, lambda ev: ev.n_gen, kid_pr_default=True)
_against_reference("rec_", RECONSTRUCTED, lambda ev: ev.n_rec, kid_pr_default=False)


@register("fid_floor", uses={FLOOR, REFERENCE},
          protocol=lambda ev: {**_vs_reference(lambda e: e.n_floor)(ev),
                               "floor_split": ev.floor_split})
def _fid_floor(ev: Evaluation) -> dict[str, float]:
    return {f"fid_floor_{ev.space}{ev.ref_suffix}": frechet_distance(ev.floor_subset,
                                                                      ev.reference)}


@register("mse", uses={RECONSTRUCTED}, protocol=lambda ev: {"n": ev.n_rec})
def _mse(ev: Evaluation) -> dict[str, float]:
    return {"mse": ev.mse}


def _no_classifier(metric: str, key: str) -> None:
    note(f"{metric} skipped: no classifier features for {key} classifier (the dataset has no "
         "labels; lpips needs none)")


@register("rec_distance", uses={REC_DISTANCE},
          protocol=lambda ev: {"n": ev.n_rec,
                               "distance": getattr(ev.rec_distance_fn, "name", None)})
def _rec_distance(ev: Evaluation) -> dict[str, float]:
    if ev.rec_distance_fn is None:
        _no_classifier("rec_distance", "evaluate.rec_distance")
        return {}
    return {f"rec_distance_{ev.rec_distance_fn.name}": ev.rec_distance}


def _ppl(ev: Evaluation, sampling: str) -> dict[str, float]:
    if ev.ppl_distance is None:
        _no_classifier(f"ppl_{sampling}", "evaluate.ppl_distance")
        return {}
    return {f"ppl_{sampling}_{ev.ppl_distance.name}{CROPS[ev.cfg.ppl_crop]}": ev.ppl(sampling)}


def _ppl_protocol(ev: Evaluation) -> dict[str, Any]:
    return {"n": ev.cfg.ppl_samples, "epsilon": EPSILON,
            "distance": getattr(ev.ppl_distance, "name", None), "crop": ev.cfg.ppl_crop}


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
                ppl_distance: Optional[PathDistance] = None,
                rec_distance: Optional[PathDistance] = None,
                cache: Optional[StatsCache] = None) -> list[Result]:
    """Each named metric (default: `default_metrics()`; groups such as `ppl` expanded) with its
    protocol: the metric's own (`register(protocol=...)`) plus the evaluation's seed. `cache`:
    where the feature statistics are memoised (alae/metrics/stats.py); None computes them."""
    wanted = default_metrics() if metrics is None else resolve_names(metrics)
    ev = Evaluation(model, extractor, shards_dir, cfg, needs=wanted, reference=reference,
                    ppl_distance=ppl_distance, rec_distance=rec_distance, cache=cache)
    return [Result(name, _METRICS[name].fn(ev), {**_METRICS[name].protocol(ev), "seed": cfg.seed})
            for name in wanted]


def evaluate_model(model: torch.nn.Module, extractor, shards_dir: str | Path, cfg: EvaluateConfig,
                   metrics: Optional[Iterable[str]] = None, *,
                   reference: Optional[FeatureStats] = None,
                   ppl_distance: Optional[PathDistance] = None,
                   rec_distance: Optional[PathDistance] = None,
                   cache: Optional[StatsCache] = None) -> dict[str, float]:
    """Run the named metrics (default: `default_metrics()`) and merge their `{key: float}` results.

    Deterministic for a given cfg.seed, model, extractor and shards. `reference`: precomputed
    statistics of the `cfg.reference` split in the extractor's space (the refstats stage's file).
    Call `provenance(extractor, ppl_distance, rec_distance)` for the strings (featurenet hash)
    that belong beside these numbers, `run_metrics` for each metric's protocol.
    """
    out: dict[str, float] = {}
    for result in run_metrics(model, extractor, shards_dir, cfg, metrics, reference=reference,
                              ppl_distance=ppl_distance, rec_distance=rec_distance, cache=cache):
        out.update(result.values)
    return out


def quick_fid(model: torch.nn.Module, extractor, reference: FeatureStats, n: int, seed: int,
              batch_size: int = 250) -> float:
    """FID of `n` samples at the level of detail the model is at, upsampled (nearest, as the
    training's sample grids) to its final resolution: for watching a run, not for reporting.
    The samples are evaluate's first `n` for `seed` (`generator_stats`), drawn from generators
    of their own, so it neither depends on nor moves the training's RNG, and draws as one
    process does whatever the number of ranks."""
    return frechet_distance(generator_stats(model, extractor, n, seed, batch_size,
                                            progress=False), reference)


def provenance(extractor, ppl_distance: Optional[PathDistance] = None,
               rec_distance: Optional[PathDistance] = None) -> dict[str, str]:
    """Strings identifying the protocol and the feature spaces, for MLflow tags (`alae.<key>`):
    never mixed into the metrics."""
    out = {"metrics_protocol": str(METRICS_PROTOCOL), "features": extractor.name,
           **extractor.provenance()}
    if ppl_distance is not None:
        out["ppl_distance"] = ppl_distance.name
        out.update(ppl_distance.provenance())
    if rec_distance is not None:
        out["rec_distance"] = rec_distance.name
    return out
