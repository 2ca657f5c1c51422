"""Batches of images from the shard folder (webdataset), as float tensors in [-1, 1].

`train_batches` is an endless, seeded stream: shard order and a sample shuffle buffer both draw from
seeded generators, since webdataset's default seed is random (TOOLS.md). `eval_batches` is one pass
in stored order. Lower resolutions than the stored one come from area averaging (block means, as
`avg_pool2d`), the same downsampling the progressive-growing levels of ALAE use between resolutions.

Worker processes (`workers` > 0) only decode: the training process still runs the one seeded
stream of undecoded samples (shard order, shuffle buffer, flips, the resume skip) and cuts it into
batches, and a PyTorch DataLoader hands batch k to worker k mod W (as the "index" a sampler would
give) and returns the decoded batches in that order. So the batches, and a resume's fast-forward,
are those of one process, and the shuffle buffer of raw samples is held once (10,000 samples of
the synthetic 256 px PNG set, 67 KB each, are about 0.7 GB). Every worker running the whole
stream and decoding only its every W-th batch keeps the order too, but holds one buffer per
worker, for about the same CPU per image (README, loading data for training).
"""
from __future__ import annotations

import atexit
import random
import signal
import weakref
from itertools import count, islice
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, Dataset

from alae.data.format import (bad_sample, raw_samples, read_manifest, sample_image, sample_label,
                              shard_paths)
from alae.errors import DataError, UserError

# uint8 pixel -> [-1, 1] as alae/pixels.py, by a table built in float64 (kept as it was)
_TO_UNIT = (np.arange(256) / 127.5 - 1.0).astype(np.float32)
Batch = tuple[torch.Tensor, Optional[torch.Tensor]]
RawBatch = tuple[list[dict], Optional[list[bool]]]  # undecoded samples, and their flips

# Batches each worker decodes ahead of the training loop (the DataLoader's default): enough to
# absorb one slow batch, few enough that a 256 px batch of float32 in flight stays small.
PREFETCH_BATCHES = 2


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

    def __call__(self, samples: list[dict], flips: Optional[list[bool]] = None) -> Batch:
        """`flips[i]`: mirror sample i left to right (before downsampling, which commutes)."""
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
            if flips is not None and flips[i]:
                pixels[i] = pixels[i, :, ::-1]
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


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    while chunk := list(islice(items, size)):
        yield chunk


def _batches(samples: Iterator[dict], decode: _Decoder, batch_size: int) -> Iterator[Batch]:
    return map(decode, _chunks(samples, batch_size))


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise DataError(f"batch size {batch_size} must be >= 1")


class _TrainStream:
    """One rank's seeded stream of training batches."""

    def __init__(self, shards_dir: str | Path, resolution: int, batch_size: int, seed: int,
                 rank: int, world_size: int, shuffle_buffer: int, skip: int, flip: bool):
        self.manifest = read_manifest(shards_dir)
        self.paths = shard_paths(shards_dir, self.manifest, "train")
        self.decode = _Decoder(shards_dir, self.manifest, resolution)
        _check_batch_size(batch_size)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if int(self.manifest["counts"]["train"]) == 0:
            raise DataError(f"{shards_dir}: the train split is empty")
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.bufsize, self.skip, self.flip = max(1, shuffle_buffer), skip, flip

    def _samples(self) -> Iterator[dict]:
        order_rng = random.Random(self.seed)  # the same on every rank: shard slices partition
        rank, world_size = self.rank, self.world_size
        for _epoch in count():
            order = list(self.paths)
            order_rng.shuffle(order)
            if world_size == 1:
                yield from raw_samples(order, self.manifest)
            elif len(order) >= world_size:
                yield from raw_samples(order[rank::world_size], self.manifest)
            else:
                yield from islice(raw_samples(order, self.manifest), rank, None, world_size)

    def _flipped(self, samples: Iterable[dict]) -> Iterator[tuple[dict, bool]]:
        """Each sample with its flip, drawn in stream order from a generator of its own, before
        the resume skip: skipped samples draw theirs too, so a resume flips as the run did."""
        rng = random.Random(f"alae-flip:{self.seed}:{self.rank}") if self.flip else None
        for sample in samples:
            yield sample, rng is not None and rng.random() < 0.5

    def raw_batches(self) -> Iterator[RawBatch]:
        """The batches undecoded: (samples, flips or None), what `self.decode` takes."""
        sample_rng = random.Random(f"alae-shuffle:{self.seed}:{self.rank}")
        shuffled = wds.shuffle(bufsize=self.bufsize, initial=min(self.bufsize, 1000),
                               rng=sample_rng)(self._samples())
        for chunk in _chunks(islice(self._flipped(shuffled), self.skip, None), self.batch_size):
            samples, flips = zip(*chunk)
            yield list(samples), list(flips) if self.flip else None

    def batches(self) -> Iterator[Batch]:
        return (self.decode(*raw) for raw in self.raw_batches())


class _Decoding(Dataset):
    """What a DataLoader worker does with the raw batch it is handed: decode it. A UserError (a
    damaged sample, or the stream's own, passed along by `_errors_in_place`) comes back as the
    item, in its place in the order, so the training process raises it with its one-line
    message instead of the DataLoader's wrapped traceback."""

    def __init__(self, decode: _Decoder):
        self.decode = decode

    def __getitem__(self, raw: RawBatch | UserError) -> Batch | UserError:
        if isinstance(raw, UserError):
            return raw
        try:
            return self.decode(*raw)
        except UserError as e:
            return e


def _errors_in_place(raw_batches: Iterator[RawBatch]) -> Iterator[RawBatch | UserError]:
    # The DataLoader reads ahead of the batches it has returned: a damaged shard must surface
    # where the one-process stream would raise it, after the batches before it.
    try:
        yield from raw_batches
    except UserError as e:
        yield e


def _worker_init(_worker_id: int) -> None:
    # Ctrl-C and SIGTERM reach the whole process group; the training process asks the loop to
    # stop after the current batch and then shuts its workers down. A worker that died of the
    # signal first would fail that last batch instead.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


_OPEN: "weakref.WeakSet[Iterator[Batch]]" = weakref.WeakSet()  # worker streams not yet closed


@atexit.register
def _close_open_streams() -> None:
    """At exit, multiprocessing's own handler would send the workers SIGTERM, which they ignore,
    and then wait for them forever. This handler runs before it (atexit runs the last registered
    first) and ends them as closing their stream does."""
    for batches in list(_OPEN):
        batches.close()


def _as_is(item):
    return item


def _from_workers(stream: _TrainStream, workers: int, pin_memory: bool) -> Iterator[Batch]:
    # The raw batches are the sampler's "indices": read in this process, handed to the workers
    # in turn, returned in order. A generator of its own: the DataLoader draws its workers' base
    # seed from it, which would otherwise move the global torch RNG (the training's latents).
    loader = DataLoader(_Decoding(stream.decode), sampler=_errors_in_place(stream.raw_batches()),
                        batch_size=None, num_workers=workers, collate_fn=_as_is,
                        worker_init_fn=_worker_init, pin_memory=pin_memory,
                        prefetch_factor=PREFETCH_BATCHES, generator=torch.Generator())
    batches = iter(loader)
    try:
        for item in batches:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        # Now, at a level change, an error or when the generator is closed: as the iterator's
        # __del__ would, but a traceback kept somewhere may keep the iterator alive, and at exit
        # multiprocessing would then wait forever for workers that ignore its SIGTERM.
        batches._shutdown_workers()


def train_batches(shards_dir: str | Path, resolution: int, batch_size: int, seed: int, *,
                  rank: int = 0, world_size: int = 1, shuffle_buffer: int = 10000,
                  skip: int = 0, workers: int = 0, pin_memory: bool = False,
                  flip: bool = False) -> Iterator[Batch]:
    """Endless shuffled batches: x (B, C, resolution, resolution) in [-1, 1], and labels or None.

    Same seed, same batches, whatever the number of `workers` (processes that decode; 0: in this
    process). `skip` passes over that many samples without decoding them: a resumed run continues
    the stream where the checkpoint left it. With `world_size` > 1 each rank reads a disjoint part
    of every epoch (whole shards when there are enough, otherwise every world_size-th sample), so
    DDP ranks never run dry: the stream has no end. `flip` mirrors about half of the images left
    to right, each flip drawn from the seeded stream. `pin_memory` (workers > 0; for a CUDA
    device) hands batches over in page-locked memory, which a non_blocking copy to the GPU needs
    to be asynchronous. Close the iterator (or drop it) to shut its workers down.
    """
    stream = _TrainStream(shards_dir, resolution, batch_size, seed, rank, world_size,
                          shuffle_buffer, skip, flip)
    if workers < 0:
        raise ValueError(f"workers {workers} must be >= 0")
    if workers == 0:
        return stream.batches()
    batches = _from_workers(stream, workers, pin_memory)
    _OPEN.add(batches)
    return batches


def eval_batches(shards_dir: str | Path, split: str, resolution: int, batch_size: int,
                 limit: Optional[int] = None) -> Iterator[Batch]:
    """One pass over `split` in stored order (no shuffling); the last batch may be smaller."""
    manifest = read_manifest(shards_dir)
    paths = shard_paths(shards_dir, manifest, split)
    decode = _Decoder(shards_dir, manifest, resolution)
    _check_batch_size(batch_size)
    return _batches(islice(raw_samples(paths, manifest), limit), decode, batch_size)
