"""Datasets: image sources -> webdataset shards + manifest -> tensor batches (DESIGN.md, "Data")."""
from alae.data.format import SPLITS, read_manifest
from alae.data.loader import eval_batches, train_batches
from alae.data.shards import write_shards, write_split
from alae.data.sources import open_source, skipped_lines

__all__ = ["SPLITS", "eval_batches", "open_source", "read_manifest", "skipped_lines",
           "train_batches", "write_shards", "write_split"]
