"""The two statistics every metric is made of, each memoised on disk.

- `split_stats`: features of the first n images of one split of a shard folder, in stored order,
  optionally through a transform (`Reconstruction`: G(E(x)) with G's noise per test image), with
  per-image measures of what the transform did (squared error, a distance) averaged beside them;
- `generator_stats`: features of the first n images a model generates for a seed (z and G's
  noise per image, alae/metrics/draws.py), optionally truncated.

Each is keyed by everything that changes its numbers: the feature space and its provenance (the
featurenet's sha256, Inception's resize), the data (a digest of the split's shards) and the
resolution it is read at, n, the batch size and the device type (which move float rounding), the
model's weights, the seed and the truncation for model images, the measures asked for, the
metrics protocol and the library's code. A `StatsCache` keeps one atomically written `.npz` per
key, so what another evaluation of the same data or model computed (every run's reference split;
`alae metrics` on the model the evaluate stage just scored; the frontier's marks) is read, not
computed again, and a cached result is the exact float a fresh computation would give. No cache
(None) computes every time: the library keeps no hidden state unless its caller passes one.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from alae.data import eval_batches, read_manifest
from alae.io import atomic_open, files_digest
from alae.metrics import draws
from alae.metrics.fid import FeatureStats

# Bump when what a cache file holds, or how a key is spelled, changes.
CACHE_FORMAT = 1
CACHE_ENV = "ALAE_STATS_CACHE"
PACKAGE_DIR = Path(__file__).resolve().parents[1]

# (x, transformed x, features of transformed x) -> one number per image
Measure = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Measured:
    """Feature statistics of a set of images, and the per-image means of the measures asked for
    (empty without a transform)."""
    stats: FeatureStats
    means: dict[str, float] = field(default_factory=dict)


def dataset_digest(shards_dir: str | Path, split: str = "test") -> str:
    """sha256 over one split's shards' names, counts and hashes as the manifest lists them."""
    manifest = read_manifest(shards_dir)
    blob = json.dumps({split: manifest["shards"][split], "channels": manifest["channels"],
                       "resolution": manifest["resolution"]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def library_digest() -> str:
    """sha256 over this package's Python files: a change in how any number is computed (the
    networks, the loader, the features) is a new key."""
    return files_digest(sorted(PACKAGE_DIR.rglob("*.py")), PACKAGE_DIR)


def model_digest(model: torch.nn.Module) -> str:
    """sha256 over a model's class, size and every parameter and buffer (the recorded level of
    detail and the average w among them)."""
    h = hashlib.sha256(type(model).__name__.encode())
    for attr in ("latent", "channels", "resolution"):
        h.update(f"{attr}={getattr(model, attr, None)}".encode())
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class StatsCache:
    """One `.npz` per key under `root`: mean, covariance, count, the vectors when they were kept,
    and the measures' means. A file that cannot be read is computed again and replaced."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._library = library_digest()

    @classmethod
    def default(cls, repo: str | Path) -> Optional["StatsCache"]:
        """The project's cache: `.alae/cache/stats/` in the repository `repo` (pass
        `alae.tracking.repo_root()`: the main one under `dvc exp run --queue`, so queued runs
        share it), git-ignored like the run folders; `ALAE_STATS_CACHE` names another folder,
        or `off` for none."""
        where = os.environ.get(CACHE_ENV, "")
        if where.lower() == "off":
            return None
        return cls(where or Path(repo) / ".alae" / "cache" / "stats")

    def path(self, key: Mapping[str, Any]) -> Path:
        full = {**key, "cache_format": CACHE_FORMAT, "library": self._library}
        blob = json.dumps(full, sort_keys=True, default=str)
        return self.root / f"{hashlib.sha256(blob.encode()).hexdigest()[:32]}.npz"

    def load(self, key: Mapping[str, Any], keep: bool) -> Optional[Measured]:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                data = {k: f[k] for k in f.files}
            if keep and "features" not in data:
                return None
            stats = FeatureStats.from_moments(data["mu"], data["sigma"], int(data["n"]),
                                              features=data.get("features"))
            names = [str(n) for n in data.get("measure_names", np.array([], dtype=str))]
            values = data.get("measure_means", np.zeros(0))
            return Measured(stats, {n: float(v) for n, v in zip(names, values)})
        except (OSError, ValueError, KeyError) as e:
            print(f"metrics: ignoring unreadable cache file {path} ({e}); computing again",
                  file=sys.stderr)
            return None

    def save(self, key: Mapping[str, Any], measured: Measured, keep: bool) -> None:
        stats = measured.stats
        arrays = {"mu": stats.mean(), "sigma": stats.cov(), "n": np.asarray(stats.n),
                  "measure_names": np.asarray(list(measured.means), dtype=str),
                  "measure_means": np.asarray(list(measured.means.values()), dtype=np.float64)}
        if keep:
            arrays["features"] = stats.features()
        with atomic_open(self.path(key), "wb") as f:
            np.savez(f, **arrays)


def _memoised(cache: Optional[StatsCache], key: Callable[[], dict[str, Any]], keep: bool,
              compute: Callable[[], Measured]) -> Measured:
    """`compute()`, or what the cache holds for `key()` (spelled only when there is a cache:
    it hashes the model's weights)."""
    if cache is None:
        return compute()
    spelled = key()
    found = cache.load(spelled, keep)
    if found is not None:
        return found
    measured = compute()
    cache.save(spelled, measured, keep)
    return measured


def _space_key(extractor, batch_size: int, device: torch.device) -> dict[str, Any]:
    return {"space": extractor.name, **extractor.provenance(), "batch_size": int(batch_size),
            "device": device.type}


def _bar(total: int, desc: str, disable: bool = False) -> tqdm:
    return tqdm(total=total, desc=f"metrics: {desc}", file=sys.stderr, unit="img",
                disable=disable)


class Reconstruction:
    """The transform x -> G(E(x)) of `model`, G's per-pixel noise drawn per image index from
    `seed` (purpose "reconstructions"), so no image depends on the batch it is in. `on_codes`:
    called with (indices, E(x)) for each batch it encodes (the probe reuses the test split's
    codes instead of encoding it again; nothing is called when the statistics come from a
    cache)."""

    def __init__(self, model: torch.nn.Module, seed: int,
                 on_codes: Optional[Callable[[Sequence[int], torch.Tensor], None]] = None):
        self.model, self.seed, self.on_codes = model, seed, on_codes

    def key(self) -> dict[str, Any]:
        return {"transform": "reconstruct", "model": model_digest(self.model),
                "seed": int(self.seed)}

    def __call__(self, x: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
        noise = draws.noise(self.seed, "reconstructions", indices)
        if self.on_codes is None:
            return self.model.reconstruct(x, noise=noise)
        codes = self.model.encode(x)
        self.on_codes(indices, codes)
        return self.model.decode(codes, noise=noise)


@torch.inference_mode()
def split_stats(extractor, shards_dir: str | Path, split: str, resolution: int, batch_size: int,
                n: Optional[int] = None, *, transform: Optional[Reconstruction] = None,
                measures: Optional[Mapping[str, tuple[str, Measure]]] = None,
                keep: bool = False, cache: Optional[StatsCache] = None,
                desc: Optional[str] = None) -> Measured:
    """Features of the first `n` images of `split` (all when None) at `resolution`, each clamped
    to [-1, 1]; with `transform`, of the transformed images (clamped too), and the per-image
    mean of each measure: `measures[name] = (identity, fn(x, xt, features of xt))`, the identity
    spelling what fixes fn's numbers for the cache. `keep`: keep every vector (KID, P/R)."""
    count = int(read_manifest(shards_dir)["counts"][split])
    n = count if n is None else min(int(n), count)
    device = extractor.device
    measures = dict(measures or {})
    if measures and transform is None:
        raise ValueError("measures compare images with their transform: give a transform")

    def key() -> dict[str, Any]:
        return {"kind": "split", "split": split, "data": dataset_digest(shards_dir, split),
                "resolution": int(resolution), "n": n,
                **_space_key(extractor, batch_size, device),
                "transform": transform.key() if transform is not None else None,
                "measures": {name: ident for name, (ident, _) in sorted(measures.items())}}

    def compute() -> Measured:
        stats = FeatureStats(keep=keep)
        sums = {name: 0.0 for name in measures}
        seen = 0
        what = desc or (f"{split} split" + (" through the model" if transform else ""))
        cuda = [device] if device.type == "cuda" else []
        with _bar(n, what) as bar, torch.random.fork_rng(devices=cuda):
            # models that ignore `noise` draw from the global RNG: seeded, and given back after
            torch.manual_seed(transform.seed + 1 if transform is not None else 0)
            for x, _ in eval_batches(shards_dir, split, resolution, batch_size, n):
                x = x.to(device)
                indices = range(seen, seen + len(x))
                out = (x if transform is None else transform(x, indices)).clamp(-1, 1)
                f = extractor(out)
                stats.update(f)
                for name, (_, fn) in measures.items():
                    sums[name] += fn(x, out, f).double().sum().item()
                seen += len(x)
                bar.update(len(x))
        return Measured(stats, {name: s / seen if seen else float("nan")
                                for name, s in sums.items()})

    return _memoised(cache, key, keep, compute)


@torch.inference_mode()
def generator_stats(model: torch.nn.Module, extractor, n: int, seed: int, batch_size: int, *,
                    psi: Optional[float] = None, keep: bool = False,
                    cache: Optional[StatsCache] = None, progress: bool = True) -> FeatureStats:
    """Features of the first `n` images `model` generates for `seed`: image i's z and G's noise
    from seeds of (seed, i) alone (alae/metrics/draws.py, purpose "samples"), truncated by `psi`
    when given, at the level of detail the model has reached, shown at its final resolution."""
    device = next(model.parameters()).device

    def key() -> dict[str, Any]:
        return {"kind": "generator", "model": model_digest(model), "n": int(n),
                "seed": int(seed), "psi": psi, **_space_key(extractor, batch_size, device)}

    def compute() -> Measured:
        stats = FeatureStats(keep=keep)
        truncation = {} if psi is None else {"psi": psi}
        cuda = [device] if device.type == "cuda" else []
        with _bar(n, "generated", disable=not progress) as bar, \
                torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)   # for models that ignore `noise` (as above)
            for s in range(0, n, batch_size):
                images = range(s, min(s + batch_size, n))
                z = draws.latents(seed, "samples", images, int(model.latent)).to(device)
                x = model.generate(z, noise=draws.noise(seed, "samples", images), **truncation)
                if x.shape[-1] != model.resolution:
                    x = torch.nn.functional.interpolate(x, size=int(model.resolution),
                                                        mode="nearest")
                stats.update(extractor(x.clamp(-1, 1)))
                bar.update(len(images))
        return Measured(stats)

    return _memoised(cache, key, keep, compute).stats

