"""Labelled codes for attribute directions: E(x) of a split's images with one yes/no column per
label, from one of three places:

- shards of this project (`data/shards`): the manifest's label names (Fashion-MNIST's ten
  classes), the train split to fit on and the test split to score on;
- a folder whose first-level sub-folders are the classes, split as the shard stage splits it
  (a hash of each file's path: `data.test_fraction` of the files are held out);
- a CSV of attributes per file (`--labels`): a header `file,ATTR,...`, then one row per image
  with 1/0 (or true/false, yes/no, 1/-1 as CelebA writes them) per attribute; files are relative
  to the data folder when one is given, else to the CSV's folder, and split by the same hash.

Classes become one-vs-rest columns, so all three give the same thing: codes (N, latent) and a
boolean matrix (N, labels).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable, NamedTuple, Optional

import numpy as np
import torch

from alae.config import DataConfig
from alae.data import eval_batches, read_manifest
from alae.data.format import MANIFEST
from alae.data.sources import FolderSource, _split_of
from alae.errors import UserError
from alae.images import expand, load_usable
from alae.nn import ALAE
from alae.pixels import from_uint8

TEST_FRACTION = DataConfig.test_fraction  # a folder's or a CSV's held-out share, as the shard stage
YES = {"1", "true", "yes", "y"}
NO = {"0", "-1", "false", "no", "n"}


class Labelled(NamedTuple):
    codes: np.ndarray     # (N, latent) E(x), float64
    labels: np.ndarray    # (N, K) bool: image n has label k
    names: list[str]      # the K label names


@torch.no_grad()
def _encode(model: ALAE, batches: Iterable[torch.Tensor]) -> np.ndarray:
    device = next(model.parameters()).device
    codes = [model.encode(x.to(device)).double().cpu() for x in batches]
    return torch.cat(codes).numpy() if codes else np.zeros((0, model.latent))


def _one_hot(classes: list[int], count: int) -> np.ndarray:
    return np.eye(count, dtype=bool)[np.asarray(classes, dtype=int)].reshape(-1, count)


def _from_shards(model: ALAE, shards: Path, split: str, limit: Optional[int],
                 batch_size: int) -> Labelled:
    manifest = read_manifest(shards)
    names = manifest["label_names"]
    if names is None:
        raise UserError(f"{shards}: the shards have no labels (give --labels CSV, or "
                        "--method sefa, which needs none)")
    if int(manifest["channels"]) != model.channels:
        raise UserError(f"{shards}: {manifest['channels']}-channel images, but the model takes "
                        f"{model.channels}-channel ones")
    xs, ys = [], []
    for x, y in eval_batches(shards, split, model.resolution, batch_size, limit):
        xs.append(x)
        ys += y.tolist()
    return Labelled(_encode(model, xs), _one_hot(ys, len(names)), list(names))


def _from_folder(model: ALAE, folder: Path, split: str, limit: Optional[int],
                 batch_size: int) -> Labelled:
    source = FolderSource(DataConfig(source="folder", path=str(folder),
                                     resolution=model.resolution, channels=model.channels))
    if source.label_names is None:
        raise UserError(f"{folder}: no class sub-folders, so no labels (give --labels CSV, or "
                        "--method sefa, which needs none)")
    images, classes = [], []
    for _, _, img, label in source.samples(split):
        if limit is not None and len(images) >= limit:
            break
        a = np.asarray(img, dtype=np.float32).reshape(model.resolution, model.resolution, -1)
        images.append(from_uint8(torch.from_numpy(a).permute(2, 0, 1)))
        classes.append(label)
    batches = (torch.stack(images[i:i + batch_size]) for i in range(0, len(images), batch_size))
    return Labelled(_encode(model, batches), _one_hot(classes, len(source.label_names)),
                    source.label_names)


def _flag(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in YES or v in NO:
        return v in YES
    raise UserError(f"{where}: {value!r} is not a yes/no value (1/0, true/false, yes/no, 1/-1)")


def read_attributes(csv_path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(attribute names, image files as the CSV writes them, (N, K) bool) of an attributes
    CSV."""
    try:
        with open(csv_path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{csv_path}: unreadable attributes CSV ({type(e).__name__})") from None
    if len(rows) < 2 or len(rows[0]) < 2:
        raise UserError(f"{csv_path}: needs a header `file,ATTRIBUTE,...` and one row per image")
    names = [n.strip() for n in rows[0][1:]]
    files, flags = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(rows[0]):
            raise UserError(f"{csv_path}:{line}: {len(row)} fields, the header has "
                            f"{len(rows[0])}")
        files.append(row[0].strip())
        flags.append([_flag(v, f"{csv_path}:{line}") for v in row[1:]])
    return names, files, np.asarray(flags, dtype=bool).reshape(-1, len(names))


def _from_csv(model: ALAE, csv_path: Path, root: Optional[Path], split: str,
              limit: Optional[int], batch_size: int) -> tuple[Labelled, list[str]]:
    names, files, flags = read_attributes(csv_path)
    mine = [i for i, f in enumerate(files) if _split_of(f, TEST_FRACTION) == split][:limit]
    if not mine:
        return Labelled(np.zeros((0, model.latent)), np.zeros((0, len(names)), bool), names), []
    base = root if root is not None else csv_path.parent
    chosen = [base / files[i] for i in mine]
    loaded = load_usable(chosen, model.resolution, model.channels, optional=set(chosen))
    x = loaded.images
    codes = _encode(model, (x[i:i + batch_size] for i in range(0, len(x), batch_size)))
    return Labelled(codes, flags[mine][loaded.kept], names), loaded.refused


def labelled_codes(model: ALAE, data: Optional[str | Path], labels_csv: Optional[str | Path],
                   split: str, limit: Optional[int] = None, batch_size: int = 256
                   ) -> tuple[Labelled, list[str]]:
    """E(x) and labels of `split` ("train" or "test"), at most `limit` images, and one line per
    image file passed over (a CSV's unreadable files)."""
    if labels_csv is not None:
        root = Path(data) if data is not None else None
        if root is not None and not root.is_dir():
            raise UserError(f"--data {root}: with --labels, the folder the CSV's files are in")
        return _from_csv(model, Path(labels_csv), root, split, limit, batch_size)
    if data is None:
        raise UserError("labels come from --data (shards or a folder of class sub-folders) or "
                        "--labels CSV")
    path = Path(data)
    if (path / MANIFEST).is_file():
        return _from_shards(model, path, split, limit, batch_size), []
    if path.is_dir():
        return _from_folder(model, path, split, limit, batch_size), []
    raise UserError(f"--data {path}: no such folder (shards with manifest.json, or a folder of "
                    "class sub-folders)")


def unlabelled_codes(model: ALAE, data: Optional[str | Path], limit: int, seed: int = 0,
                     batch_size: int = 256) -> tuple[np.ndarray, str]:
    """Codes to measure strengths against, and what they are, in words: E(x) of up to `limit`
    training images of shards or of a folder's images when `data` is given, else w = F(z) of
    `limit` draws of z (seeded), the codes G was trained on."""
    if data is None:
        gen = torch.Generator().manual_seed(seed)
        device = next(model.parameters()).device
        with torch.no_grad():
            codes = [model.mapping(torch.randn(min(batch_size, limit - i), model.latent,
                                               generator=gen).to(device)).double().cpu()
                     for i in range(0, limit, batch_size)]
        return torch.cat(codes).numpy(), f"F(z) of {limit} draws (seed {seed})"
    path = Path(data)
    if (path / MANIFEST).is_file():
        batches = (x for x, _ in eval_batches(path, "train", model.resolution, batch_size, limit))
        codes = _encode(model, batches)
        return codes, f"E(x) of {len(codes)} train images of {path}"
    if not path.is_dir():
        raise UserError(f"--data {path}: no such folder (shards with manifest.json, or a folder "
                        "of images)")
    files = [f for f, _ in expand([path])][:limit]
    x = load_usable(files, model.resolution, model.channels, optional=set(files)).images
    codes = _encode(model, (x[i:i + batch_size] for i in range(0, len(x), batch_size)))
    return codes, f"E(x) of {len(codes)} images of {path}"
