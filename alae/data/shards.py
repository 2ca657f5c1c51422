"""Write an image source as webdataset shards plus a manifest, atomically (the layout:
`alae.data.format`).

Everything is written to a temporary sibling folder that replaces the output folder only when
complete, so an interrupted run never leaves a shard set that looks finished.

Each image is prepared (decoded, oriented, cropped, resized: the source's `preparer`) and encoded
in `data.workers` processes, a bounded number of chunks at a time, while this process reads the
source's jobs and writes the tars in job order: the same shards, byte for byte, from any number
of workers, with memory bounded by the images in flight, not by the dataset.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing
from itertools import islice
from pathlib import Path
from typing import Any, Iterator, Optional

import webdataset as wds

from alae.config import DataConfig, is_pipe_url
from alae.data.encoding import EXTENSION, encode, resolve
from alae.data.format import FORMAT_VERSION, MANIFEST, SPLITS
from alae.data.sources import Job, Preparer, Skipped, Source, open_source
from alae.errors import DataError
from alae.io import file_sha256
from alae.progress import progress_bar

_MTIME = 946684800  # 2000-01-01T00:00:00Z
CHUNK = 16          # images per task sent to a worker: one round trip per chunk, not per image
IN_FLIGHT = 2       # chunks queued or running per worker, beyond which reading the source waits


def worker_count(workers: int) -> int:
    """`data.workers` as a number of processes: 0 means every core this process may use."""
    if workers:
        return workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class _Encoder:
    """One job -> the bytes stored for it (or its `Skipped`): the work a worker does."""

    def __init__(self, prepare: Preparer, encoding: str, jpeg_quality: int):
        self.prepare, self.encoding, self.jpeg_quality = prepare, encoding, jpeg_quality

    def __call__(self, job: Any) -> bytes | Skipped:
        img = self.prepare(job)
        return img if isinstance(img, Skipped) else encode(img, self.encoding, self.jpeg_quality)


_worker_encoder: Optional[_Encoder] = None


def _start_worker(encoder: _Encoder) -> None:
    global _worker_encoder
    _worker_encoder = encoder
    # Ctrl-C reaches the whole process group: this process stops the workers, each of which
    # would otherwise print its own traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _encode_chunk(jobs: list[Any]) -> list[bytes | Skipped]:
    assert _worker_encoder is not None
    return [_worker_encoder(job) for job in jobs]


def _in_workers(encoder: _Encoder, jobs: Iterator[Job], workers: int
                ) -> Iterator[tuple[bytes | Skipped, Optional[int]]]:
    """`(encoder(job), label)` for each job, in job order, computed by `workers` processes with
    at most IN_FLIGHT chunks per worker pending: reading the source waits for the oldest."""
    pool = ProcessPoolExecutor(workers, initializer=_start_worker, initargs=(encoder,))
    pending: deque = deque()
    try:
        while True:
            chunk = list(islice(jobs, CHUNK))
            if chunk:
                pending.append((pool.submit(_encode_chunk, [job for job, _ in chunk]),
                                [label for _, label in chunk]))
            if pending and (not chunk or len(pending) >= IN_FLIGHT * workers):
                future, labels = pending.popleft()
                yield from zip(future.result(), labels)
            elif not chunk:
                return
    finally:  # also when the writer stops early (data.limit) or fails: drop what is queued
        pool.shutdown(wait=True, cancel_futures=True)


def encoded_samples(source: Source, split: str, cfg: DataConfig
                    ) -> Iterator[tuple[str, str, bytes, Optional[int]]]:
    """`(split, key, stored bytes, label)` of every image of `split`, in the source's order, as
    `cfg.encoding` stores it; prepared in `cfg.workers` processes (1: in this one)."""
    encoder = _Encoder(source.preparer(), resolve(cfg.encoding, cfg.resolution), cfg.jpeg_quality)
    workers = worker_count(cfg.workers)
    jobs = source.jobs(split)
    prepared = (((encoder(job), label) for job, label in jobs) if workers == 1
                else _in_workers(encoder, jobs, workers))
    # Closed when the writer stops early (data.limit) or fails: the workers are stopped, and a
    # source reading a `pipe:` command reaps it.
    with closing(jobs), closing(prepared):
        yield from source.keyed(split, prepared)


def write_split(source: Source, split: str, folder: Path, cfg: DataConfig) -> list[dict]:
    """Write one split of `source` as `<split>-NNNNNN.tar` shards in `folder` (at most
    `cfg.limit` images); returns [{name, count, sha256}] per shard, in order. DataError when
    no image is usable."""
    total = source.count(split)  # None when unknown up front (a URL pattern): no bar total
    if cfg.limit is not None:
        total = cfg.limit if total is None else min(total, cfg.limit)
    member = EXTENSION[resolve(cfg.encoding, cfg.resolution)]
    counts: list[int] = []
    pattern = str(folder / f"{split}-%06d.tar")
    # A fixed mtime makes the tars byte-reproducible: same input, same sha256, so DVC sees no
    # change when the stage re-runs. The bar is closed before an error propagates, so the
    # error's line is not glued to the bar's.
    samples = encoded_samples(source, split, cfg)
    with closing(samples), \
            progress_bar(total=total, desc=f"shard {split}") as bar, \
            wds.ShardWriter(pattern, maxcount=cfg.shard_size, verbose=0, mtime=_MTIME) as sink:
        for _, key, data, label in islice(samples, cfg.limit):
            sample: dict[str, Any] = {"__key__": key, member: data}
            if label is not None:
                sample["cls"] = label
            sink.write(sample)
            # ShardWriter opens shard k+1 lazily, so its index tells where this sample went.
            if len(counts) < sink.shard:
                counts.append(0)
            counts[-1] += 1
            bar.update()
    if not counts:
        raise DataError(f"{cfg.source_path}: no usable image for the {split} split"
                        + (" (raise data.test_fraction or add images)" if split == "test" else ""))
    # ShardWriter opens its first file before any write, so exactly len(counts) shards exist.
    names = [f"{split}-{i:06d}.tar" for i in range(len(counts))]
    return [{"name": name, "count": n, "sha256": file_sha256(folder / name)}
            for name, n in zip(names, counts)]


def manifest_for(cfg: DataConfig, source: Source, shards: dict[str, list[dict]],
                 test_fraction: Optional[float]) -> dict:
    """The manifest of shards `write_split` wrote from `source` with `cfg`. PNG, the encoding
    of every manifest before there was a choice, is left unnamed (alae/data/format.py)."""
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "source": cfg.source,
        "source_path": (cfg.source_path if is_pipe_url(cfg.source_path)
                        else str(Path(cfg.source_path).resolve())),
        "resolution": cfg.resolution,
        "channels": cfg.channels,
    }
    encoding = resolve(cfg.encoding, cfg.resolution)
    if encoding != "png":
        manifest["encoding"] = encoding
    if encoding == "jpeg":
        manifest["jpeg_quality"] = cfg.jpeg_quality
    manifest.update({
        "label_names": source.label_names,
        "counts": {split: sum(s["count"] for s in shards[split]) for split in SPLITS},
        "limit": cfg.limit,
        "shard_size": cfg.shard_size,
        "test_fraction": test_fraction,
        "shards": shards,
        "skipped": source.skipped,
    })
    return manifest


def write_shards(cfg: DataConfig, out_dir: str | Path) -> dict:
    """Write `cfg`'s source as shards in `out_dir` (replacing it) and return the manifest."""
    cfg.check()
    out = Path(out_dir)
    source = open_source(cfg)  # fails here on a missing or invalid source, before touching out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        shards = {split: write_split(source, split, tmp, cfg) for split in SPLITS}
        manifest = manifest_for(cfg, source, shards,
                                cfg.test_fraction if cfg.source == "folder" else None)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _replace_dir(new: Path, out: Path) -> None:
    # Two renames: a crash between them leaves `out` missing (never half-written), and the old
    # set stays recoverable in the `.old` sibling.
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)
