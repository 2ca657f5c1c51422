"""Reference statistics: mean and covariance of the whole reference split (`evaluate.reference`:
the test split by default, the train split for the paper's protocol) in one feature space,
computed once per dataset, split and space (the DVC stage `refstats`) and reused by every
evaluation.

The file is pytorch-fid's `.npz` layout (`mu`, `sigma`, so `python -m pytorch_fid` and `alae fid`
read it too) plus what makes reuse safe: the feature space, its provenance (the featurenet's
sha256), the resolution, the split (`split`; a file without it is the test split's, as every file
was before `evaluate.reference`) and a digest of that split's shards. `load_reference` refuses a
file made in another space, with another featurenet, of another split or from other data; at
another resolution it returns None (the caller computes the reference in memory).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from alae.data import read_manifest
from alae.errors import UserError
from alae.metrics.fid import FeatureStats, load_stats, save_stats
from alae.metrics.stats import StatsCache, dataset_digest, split_stats


def compute_reference(extractor, shards_dir: str | Path, resolution: Optional[int] = None,
                      batch_size: int = 500, split: str = "test",
                      cache: Optional[StatsCache] = None) -> FeatureStats:
    """Statistics of the whole `split` (`split_stats`: stored order, every image clamped to
    [-1, 1], at `resolution`, default the stored one): O(D²) memory whatever the split's size."""
    resolution = resolution or int(read_manifest(shards_dir)["resolution"])
    return split_stats(extractor, shards_dir, split, resolution, batch_size, cache=cache,
                       desc=f"{split} split ({extractor.name})").stats


def write_reference(path: str | Path, extractor, shards_dir: str | Path,
                    batch_size: int = 500, split: str = "test") -> FeatureStats:
    """Compute the reference of `split` at the stored resolution and write it atomically to
    `path`."""
    resolution = int(read_manifest(shards_dir)["resolution"])
    stats = compute_reference(extractor, shards_dir, resolution, batch_size, split)
    # `split` only when it is not the test split: test files stay byte-identical to earlier ones.
    about_split = {} if split == "test" else {"split": split}
    save_stats(path, stats, features=extractor.name, resolution=resolution,
               dataset=dataset_digest(shards_dir, split), **about_split, **extractor.provenance())
    return stats


def load_reference(path: str | Path, extractor, shards_dir: str | Path,
                   resolution: int, split: str = "test") -> Optional[FeatureStats]:
    """The statistics in `path` if they were made for this extractor and `split` of the data at
    `resolution`; None at another resolution; UserError when they belong to another space,
    featurenet, split or data."""
    stats, meta = load_stats(path)
    stale = f"(run `dvc repro refstats`, or delete {path})"
    made_from = meta.get("split", "test")
    if made_from != split:
        raise UserError(f"{path}: statistics of the {made_from} split, not the {split} "
                        f"split (evaluate.reference) {stale}")
    if meta.get("features") != extractor.name:
        raise UserError(f"{path}: statistics in the {meta.get('features', 'unknown')!s} feature "
                        f"space, not {extractor.name} {stale}")
    for key, value in extractor.provenance().items():
        if meta.get(key) != value:
            raise UserError(f"{path}: made with {key} {meta.get(key)}, not {value} {stale}")
    if meta.get("dataset") != dataset_digest(shards_dir, split):
        raise UserError(f"{path}: made from other {split} shards than {shards_dir} {stale}")
    if int(meta.get("resolution", -1)) != int(resolution):
        return None
    if stats.dim != extractor.dim:
        raise UserError(f"{path}: {stats.dim}-d statistics for a {extractor.dim}-d space {stale}")
    return stats
