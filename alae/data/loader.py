"""Batches of images from the shard folder (webdataset), as float tensors in [-1, 1].

`train_batches` is an endless, seeded stream: shard order and a sample shuffle buffer both draw from
seeded generators, since webdataset's default seed is random (TOOLS.md). `eval_batches` is one pass
in stored order. Lower resolutions than the stored one come from area averaging (block means, as
`avg_pool2d`), the same downsampling the progressive-growing levels of ALAE use between resolutions.
"""
from __future__ import annotations

import random
from itertools import count, islice
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
import webdataset as wds

from alae.data.format import (bad_sample, raw_samples, read_manifest, sample_image, sample_label,
                              shard_paths)
from alae.errors import DataError

# uint8 pixel -> [-1, 1] as alae/pixels.py, by a table built in float64 (kept as it was)
_TO_UNIT = (np.arange(256) / 127.5 - 1.0).astype(np.float32)
Batch = tuple[torch.Tensor, Optional[torch.Tensor]]


def _check_resolution(resolution: int, stored: int, shards_dir) -> int:
    if resolution < 1 or resolution & (resolution - 1) or resolution > stored:
        raise DataError(f"{shards_dir}: resolution {resolution} is not available (shards are "
                        f"{stored}x{stored}; use a power of two <= {stored})")
    return stored // resolution


class _Decoder:
    """Turns lists of raw samples into (x, labels) batches for one shard folder."""

    def __init__(self, shards_dir, manifest: dict, resolution: int):
        self.stored = int(manifest["resolution"])
        self.channels = int(manifest["channels"])
        self.labels = manifest["label_names"]
        self.factor = _check_resolution(resolution, self.stored, shards_dir)
        self.mode = "L" if self.channels == 1 else "RGB"
        self.manifest = manifest

    def __call__(self, samples: list[dict]) -> Batch:
        shape = (len(samples), self.stored, self.stored) + ((3,) if self.channels == 3 else ())
        pixels = np.empty(shape, dtype=np.uint8)
        for i, sample in enumerate(samples):
            img = sample_image(sample, self.manifest)
            if img.mode != self.mode:
                img = img.convert(self.mode)
            if img.size != (self.stored, self.stored):
                raise bad_sample(sample, f"is {img.size[0]}x{img.size[1]}, manifest.json says "
                                         f"{self.stored}x{self.stored}")
            pixels[i] = np.asarray(img)
        # numpy, single-threaded, on purpose: torch's intra-op threads would compete with the
        # model's for the same cores, and a lookup table maps 0 -> -1, 255 -> 1 exactly.
        x = _TO_UNIT[pixels]
        x = x[:, None] if self.channels == 1 else x.transpose(0, 3, 1, 2)
        if self.factor > 1:  # area downsampling: the mean of each factor x factor block
            b, c, h, w = x.shape
            f = self.factor
            x = x.reshape(b, c, h // f, f, w // f, f).mean(axis=(3, 5), dtype=np.float32)
        labels = None
        if self.labels is not None:
            labels = torch.tensor([sample_label(s, len(self.labels), self.manifest, required=True)
                                   for s in samples], dtype=torch.long)
        return torch.from_numpy(np.ascontiguousarray(x)), labels


def _batches(samples: Iterator[dict], decode: _Decoder, batch_size: int) -> Iterator[Batch]:
    while True:
        chunk = list(islice(samples, batch_size))
        if not chunk:
            return
        yield decode(chunk)


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise DataError(f"batch size {batch_size} must be >= 1")


def train_batches(shards_dir: str | Path, resolution: int, batch_size: int, seed: int, *,
                  rank: int = 0, world_size: int = 1, shuffle_buffer: int = 10000,
                  skip: int = 0) -> Iterator[Batch]:
    """Endless shuffled batches: x (B, C, resolution, resolution) in [-1, 1], and labels or None.

    Same seed, same batches. `skip` passes over that many samples without decoding them: a
    resumed run continues the stream where the checkpoint left it. With `world_size` > 1 each rank reads a disjoint part of every epoch
    (whole shards when there are enough, otherwise every world_size-th sample), so DDP ranks never
    run dry: the stream has no end.
    """
    manifest = read_manifest(shards_dir)
    paths = shard_paths(shards_dir, manifest, "train")
    decode = _Decoder(shards_dir, manifest, resolution)
    _check_batch_size(batch_size)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    if int(manifest["counts"]["train"]) == 0:
        raise DataError(f"{shards_dir}: the train split is empty")
    order_rng = random.Random(seed)  # identical on every rank, so shard slices partition an epoch
    sample_rng = random.Random(f"alae-shuffle:{seed}:{rank}")

    def endless() -> Iterator[dict]:
        for _epoch in count():
            order = list(paths)
            order_rng.shuffle(order)
            if world_size == 1:
                yield from raw_samples(order, manifest)
            elif len(order) >= world_size:
                yield from raw_samples(order[rank::world_size], manifest)
            else:
                yield from islice(raw_samples(order, manifest), rank, None, world_size)

    bufsize = max(1, shuffle_buffer)
    shuffled = wds.shuffle(bufsize=bufsize, initial=min(bufsize, 1000), rng=sample_rng)(endless())
    return _batches(islice(shuffled, skip, None), decode, batch_size)


def eval_batches(shards_dir: str | Path, split: str, resolution: int, batch_size: int,
                 limit: Optional[int] = None) -> Iterator[Batch]:
    """One pass over `split` in stored order (no shuffling); the last batch may be smaller."""
    manifest = read_manifest(shards_dir)
    paths = shard_paths(shards_dir, manifest, split)
    decode = _Decoder(shards_dir, manifest, resolution)
    _check_batch_size(batch_size)
    return _batches(islice(raw_samples(paths, manifest), limit), decode, batch_size)
