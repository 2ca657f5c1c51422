"""Reference statistics: mean and covariance of the whole test split in one feature space, computed
once per dataset and space (the DVC stage `refstats`) and reused by every evaluation.

The file is pytorch-fid's `.npz` layout (`mu`, `sigma`, so `python -m pytorch_fid` and `alae fid`
read it too) plus what makes reuse safe: the feature space, its provenance (the featurenet's
sha256), the resolution and a digest of the test shards. `load_reference` refuses a file made in
another space, with another featurenet or from other data; at another resolution it returns None
(the caller computes the reference in memory).
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from alae.data import eval_batches, read_manifest
from alae.errors import UserError
from alae.metrics.fid import FeatureStats, load_stats, save_stats


def dataset_digest(shards_dir: str | Path) -> str:
    """sha256 over the test shards' names, counts and hashes as the manifest lists them."""
    manifest = read_manifest(shards_dir)
    blob = json.dumps({"test": manifest["shards"]["test"], "channels": manifest["channels"],
                       "resolution": manifest["resolution"]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


@torch.inference_mode()
def compute_reference(extractor, shards_dir: str | Path, resolution: Optional[int] = None,
                      batch_size: int = 500) -> FeatureStats:
    """Running statistics of the test split (stored order, every image clamped to [-1, 1], at
    `resolution`, default the stored one): O(D²) memory whatever the split's size."""
    manifest = read_manifest(shards_dir)
    resolution = resolution or int(manifest["resolution"])
    n = int(manifest["counts"]["test"])
    stats = FeatureStats()
    for x, _ in tqdm(eval_batches(shards_dir, "test", resolution, batch_size),
                     desc=f"refstats: test split ({extractor.name})", total=-(-n // batch_size),
                     file=sys.stderr, unit="batch"):
        stats.update(extractor(x.to(extractor.device).clamp(-1, 1)))
    return stats


def write_reference(path: str | Path, extractor, shards_dir: str | Path,
                    batch_size: int = 500) -> FeatureStats:
    """Compute the reference at the stored resolution and write it atomically to `path`."""
    resolution = int(read_manifest(shards_dir)["resolution"])
    stats = compute_reference(extractor, shards_dir, resolution, batch_size)
    save_stats(path, stats, features=extractor.name, resolution=resolution,
               dataset=dataset_digest(shards_dir), **extractor.provenance())
    return stats


def load_reference(path: str | Path, extractor, shards_dir: str | Path,
                   resolution: int) -> Optional[FeatureStats]:
    """The statistics in `path` if they were made for this extractor and data at `resolution`;
    None at another resolution; UserError when they belong to another space, featurenet or data."""
    stats, meta = load_stats(path)
    stale = f"(run `dvc repro refstats`, or delete {path})"
    if meta.get("features") != extractor.name:
        raise UserError(f"{path}: statistics in the {meta.get('features', 'unknown')!s} feature "
                        f"space, not {extractor.name} {stale}")
    for key, value in extractor.provenance().items():
        if meta.get(key) != value:
            raise UserError(f"{path}: made with {key} {meta.get(key)}, not {value} {stale}")
    if meta.get("dataset") != dataset_digest(shards_dir):
        raise UserError(f"{path}: made from other test shards than {shards_dir} {stale}")
    if int(meta.get("resolution", -1)) != int(resolution):
        return None
    if stats.dim != extractor.dim:
        raise UserError(f"{path}: {stats.dim}-d statistics for a {extractor.dim}-d space {stale}")
    return stats
