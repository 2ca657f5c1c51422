"""Batches of images from the shard folder (webdataset), as float tensors in [-1, 1].

`train_batches` is an endless, seeded stream: shard order and a sample shuffle buffer both draw from
seeded generators, since webdataset's default seed is random (TOOLS.md). `eval_batches` is one pass
in stored order. Lower resolutions than the stored one come from area averaging (block means, as
`avg_pool2d`), the same downsampling the progressive-growing levels of ALAE use between resolutions.
"""
from __future__ import annotations

import io
import random
import tarfile
from itertools import count, islice
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Optional

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from webdataset.tariterators import group_by_keys, tar_file_expander

from alae.data.shards import read_manifest
from alae.data.sources import SPLITS
from alae.errors import DataError
from alae.io import file_sha256

# uint8 pixel -> [-1, 1] as alae/pixels.py, by a table built in float64 (kept as it was)
_TO_UNIT = (np.arange(256) / 127.5 - 1.0).astype(np.float32)
Batch = tuple[torch.Tensor, Optional[torch.Tensor]]


def shard_paths(shards_dir: str | Path, manifest: dict, split: str) -> list[Path]:
    """The split's shard files in stored order, as absolute paths; DataError naming the first
    one missing."""
    if split not in SPLITS:
        raise DataError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    root = Path(shards_dir).resolve()
    paths = [root / entry["name"] for entry in manifest["shards"][split]]
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: shard listed in manifest.json is missing")
    return paths


def tar_samples(stream: BinaryIO, url: str) -> Iterator[dict]:
    """Samples grouped by key from an open tar stream; `url` only labels them (`__url__`)."""
    return group_by_keys(tar_file_expander(iter([{"url": url, "stream": stream}])))


def raw_samples(paths: Iterable[Path], manifest: Optional[dict] = None) -> Iterator[dict]:
    """Undecoded samples ({"__key__", "png", "cls"?}) from tar shards, in file order.

    The files are opened here and webdataset only gets the open stream: it never sees a name it
    could take for a URL (a `pipe:` one runs a shell command). With the manifest, a shard that
    ends before its listed count fails: tar in stream mode takes a damaged header for the end
    of the archive, which would otherwise silently drop the rest of the shard.
    """
    listed = {e["name"]: int(e["count"]) for split in (manifest or {}).get("shards", {}).values()
              for e in split}
    for path in paths:
        path = Path(path).resolve()
        n, key = 0, None
        try:
            with open(path, "rb") as stream:
                for sample in tar_samples(stream, str(path)):
                    n, key = n + 1, sample["__key__"]
                    yield sample
        except (tarfile.TarError, OSError, ValueError) as e:
            after = f" after sample {key}" if key else ""
            raise DataError(f"{path}: unreadable shard{after} ({short_reason(e)})"
                            f"{_changed(path, manifest)}") from None
        expected = listed.get(path.name)
        if expected is not None and n != expected:
            where = f"after sample {key}" if key else "before its first sample"
            count = (f"ends {where} ({n} of the {expected} samples manifest.json lists)"
                     if n < expected else f"holds {n} samples, manifest.json lists {expected}")
            raise DataError(f"{path}: shard {count}{_changed(path, manifest)}")


def short_reason(e: BaseException) -> str:
    """An exception's message as one short line: webdataset appends the stream's repr to the
    message (`... @ <_io.BufferedReader ...>`) and streams and URLs to args, all dropped here."""
    text = " ".join(str(e.args[0] if e.args else e).split(" @ <", 1)[0].split())
    return text if len(text) <= 120 else text[:117] + "..."


def _changed(path: Path, manifest: Optional[dict]) -> str:
    """Whether a faulty shard still has the sha256 the manifest recorded when it was written."""
    expected = {e["name"]: e["sha256"] for split in (manifest or {}).get("shards", {}).values()
                for e in split}.get(Path(path).name)
    if expected is None:
        return ""
    if file_sha256(path) == expected:
        return "; the file is unchanged since it was written: re-run the shard stage"
    return "; the file changed since it was written (sha256 differs from manifest.json)"


def decode_png(data: bytes) -> Image.Image:
    # Naming the format skips Pillow's probing of every plugin: noticeable at thousands of img/s.
    img = Image.open(io.BytesIO(data), formats=("PNG",))
    img.load()
    return img


def bad_sample(sample: dict, problem: str, manifest: Optional[dict] = None) -> DataError:
    """`<shard>: sample <key> <problem>`, plus whether the shard changed since it was written."""
    url = sample.get("__url__", "?")
    changed = _changed(Path(url), manifest) if manifest else ""
    return DataError(f"{url}: sample {sample.get('__key__')} {problem}{changed}")


def sample_image(sample: dict, manifest: Optional[dict] = None) -> Image.Image:
    """A raw sample's decoded PNG; DataError naming the shard and the key when it is damaged."""
    if "png" not in sample:
        raise bad_sample(sample, "has no .png file", manifest)
    try:
        return decode_png(sample["png"])
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for damaged data
        problem = f"does not decode as PNG ({type(e).__name__}: {short_reason(e)})"
        raise bad_sample(sample, problem, manifest) from None


def sample_label(sample: dict, num_labels: Optional[int] = None, manifest: Optional[dict] = None,
                 required: bool = False) -> Optional[int]:
    """A raw sample's class (its `.cls`, an integer below `num_labels` when given), or None when
    it has none and none is `required` (a labelled dataset needs one on every sample)."""
    if "cls" not in sample:
        if required:
            raise bad_sample(sample, "has no .cls label in a labelled dataset", manifest)
        return None
    raw = sample["cls"]
    try:
        label = int(raw)
    except (TypeError, ValueError):
        label = -1
    if label < 0 or (num_labels is not None and label >= num_labels):
        top = f"0..{num_labels - 1}" if num_labels is not None else ">= 0"
        raise bad_sample(sample, f"has label {bytes(raw)[:20]!r}, not an integer in {top}",
                         manifest)
    return label


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
