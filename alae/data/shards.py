"""Write an image source as webdataset shards plus a manifest, atomically (the layout:
`alae.data.format`).

Everything is written to a temporary sibling folder that replaces the output folder only when
complete, so an interrupted run never leaves a shard set that looks finished.
"""
from __future__ import annotations

import io
import json
import os
import shutil
from itertools import islice
from pathlib import Path
from typing import Any

import webdataset as wds

from alae.config import DataConfig, is_pipe_url
from alae.data.format import FORMAT_VERSION, MANIFEST, SPLITS
from alae.data.sources import open_source
from alae.errors import DataError
from alae.io import file_sha256
from alae.progress import progress_bar

_MTIME = 946684800  # 2000-01-01T00:00:00Z


def encode_png(img) -> bytes:
    buf = io.BytesIO()
    # Level 1: shards are written once and decoded often; tiny images barely compress further.
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _write_split(source, split: str, tmp: Path, cfg: DataConfig) -> list[dict]:
    """Write one split; returns [{name, count, sha256}] per shard, in order."""
    total = source.count(split)  # None when unknown up front (a URL pattern): no bar total
    if cfg.limit is not None:
        total = cfg.limit if total is None else min(total, cfg.limit)
    counts: list[int] = []
    pattern = str(tmp / f"{split}-%06d.tar")
    # A fixed mtime makes the tars byte-reproducible: same input, same sha256, so DVC sees no
    # change when the stage re-runs. The bar is closed before an error propagates, so the
    # error's line is not glued to the bar's.
    with progress_bar(total=total, desc=f"shard {split}") as bar, \
            wds.ShardWriter(pattern, maxcount=cfg.shard_size, verbose=0, mtime=_MTIME) as sink:
        for _, key, img, label in islice(source.samples(split), cfg.limit):
            sample: dict[str, Any] = {"__key__": key, "png": encode_png(img)}
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
    return [{"name": name, "count": n, "sha256": file_sha256(tmp / name)}
            for name, n in zip(names, counts)]


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
        shards = {split: _write_split(source, split, tmp, cfg) for split in SPLITS}
        manifest = {
            "format_version": FORMAT_VERSION,
            "source": cfg.source,
            "source_path": (cfg.source_path if is_pipe_url(cfg.source_path)
                            else str(Path(cfg.source_path).resolve())),
            "resolution": cfg.resolution,
            "channels": cfg.channels,
            "label_names": source.label_names,
            "counts": {split: sum(s["count"] for s in shards[split]) for split in SPLITS},
            "limit": cfg.limit,
            "shard_size": cfg.shard_size,
            "test_fraction": cfg.test_fraction if cfg.source == "folder" else None,
            "shards": shards,
            "skipped": source.skipped,
        }
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
