"""Checks of params against the shards they will read, before any training work: each a one-line
ConfigError naming the key, the value and the shards."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from alae.config import ConfigError, Params


def _largest(table: Any) -> int:
    return max(table) if isinstance(table, (list, tuple)) else int(table)


def check_fits_shards(params: Params, manifest: dict, shards_dir: str | Path) -> None:
    where = f"the shards in {shards_dir}"
    if manifest["channels"] != params.data.channels:
        raise ConfigError(f"data.channels: {params.data.channels} does not match the "
                          f"{manifest['channels']}-channel images of {where}")
    if manifest["resolution"] != params.data.resolution:
        raise ConfigError(f"data.resolution: {params.data.resolution} does not match the "
                          f"{manifest['resolution']}x{manifest['resolution']} images of {where} "
                          "(re-run the shard stage)")
    train = int(manifest["counts"]["train"])
    batch = _largest(params.train.batch_size)
    if batch > train:
        raise ConfigError(f"train.batch_size: {batch} is larger than the "
                          f"{train} training images of {where}")
