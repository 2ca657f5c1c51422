"""Datasets: image sources -> webdataset shards + manifest -> tensor batches (DESIGN.md, "Data")."""
from alae.data.format import SPLITS, read_manifest
from alae.data.loader import eval_batches, train_batches
from alae.data.shards import write_shards
from alae.data.sources import open_source

__all__ = ["SPLITS", "eval_batches", "open_source", "read_manifest", "train_batches",
           "write_shards"]
