"""FID between two paths, each a folder of images or an `.npz` of statistics: what `alae fid` runs,
with the command shape and the input conventions of `python -m pytorch_fid`.

A folder means its files with pytorch-fid's image extensions (not recursive), in sorted order,
read as pytorch-fid reads them (`Image.open(f).convert("RGB")`, pixels / 255) for Inception, and as
grayscale or RGB to match the featurenet for the classifier space (which resizes them to its own
resolution). Images go through the extractor in batches of equal size. Statistics files carry
their feature space (ours do; pytorch-fid's hold Inception pool3 and say nothing): a file from
another space or another featurenet is refused rather than compared.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from PIL import Image
from pytorch_fid.fid_score import IMAGE_EXTENSIONS
from tqdm import tqdm

from alae.errors import UserError
from alae.metrics.fid import FeatureStats, frechet_distance, load_stats, save_stats


def image_files(folder: str | Path) -> list[Path]:
    """pytorch-fid's selection: `*.<ext>` for its extensions, sorted."""
    folder = Path(folder)
    return sorted(f for ext in IMAGE_EXTENSIONS for f in folder.glob(f"*.{ext}"))


def _read(path: Path, mode: str) -> np.ndarray:
    with Image.open(path) as img:
        arr = np.asarray(img.convert(mode), dtype=np.float32) / 255.0
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def folder_batches(files: list[Path], mode: str, batch_size: int) -> Iterator[torch.Tensor]:
    """Images in [-1, 1], (B, C, H, W), batches cut where the image size changes."""
    batch: list[np.ndarray] = []
    for f in files:
        arr = _read(f, mode)
        if batch and (len(batch) == batch_size or arr.shape != batch[0].shape):
            yield torch.from_numpy(np.stack(batch)) * 2 - 1
            batch = []
        batch.append(arr)
    if batch:
        yield torch.from_numpy(np.stack(batch)) * 2 - 1


def folder_stats(folder: str | Path, extractor, batch_size: int = 50) -> FeatureStats:
    files = image_files(folder)
    if len(files) < 2:
        raise UserError(f"{folder}: needs at least 2 images with extensions "
                        f"{', '.join(sorted(IMAGE_EXTENSIONS))}, found {len(files)}")
    mode = "L" if getattr(extractor, "channels", 3) == 1 else "RGB"
    stats = FeatureStats()
    with torch.inference_mode():
        for x in tqdm(folder_batches(files, mode, batch_size), desc=f"fid: {folder}",
                      total=-(-len(files) // batch_size), file=sys.stderr, unit="batch"):
            stats.update(extractor(x))
    return stats


def _check_space(path: str | Path, meta: dict, space: str, extractor) -> None:
    if "features" not in meta:   # pytorch-fid's files: Inception (the width tells which block)
        if not space.startswith("inception"):
            raise UserError(f"{path}: statistics without a feature space (pytorch-fid's are "
                            f"Inception): use --features inception, not {space}")
        return
    if meta["features"] != space:
        raise UserError(f"{path}: statistics in the {meta['features']} space, not {space}")
    if extractor is not None:
        for key, value in extractor.provenance().items():
            if key in meta and meta[key] != value:
                raise UserError(f"{path}: made with {key} {meta[key]}, not {value}")


def path_stats(path: str | Path, space: str, get_extractor: Callable[[], object],
               batch_size: int = 50) -> tuple[FeatureStats, dict]:
    """(statistics, their provenance) of a folder or an `.npz`; the extractor is built (by
    `get_extractor`) only when a folder needs it."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such folder or file")
    if path.suffix == ".npz":
        stats, meta = load_stats(path)
        _check_space(path, meta, space, None)
        return stats, {k: v for k, v in meta.items() if isinstance(v, str)}
    if not path.is_dir():
        raise UserError(f"{path}: neither a folder of images nor an .npz statistics file")
    extractor = get_extractor()
    return folder_stats(path, extractor, batch_size), {"features": space,
                                                       **extractor.provenance()}


def fid_of_paths(a: str | Path, b: str | Path, space: str, get_extractor: Callable[[], object],
                 batch_size: int = 50) -> tuple[float, dict]:
    """(FID, provenance) of two paths in one feature space."""
    cache: dict = {}

    def extractor():
        if "x" not in cache:
            cache["x"] = get_extractor()
        return cache["x"]

    sa, ma = path_stats(a, space, extractor, batch_size)
    sb, mb = path_stats(b, space, extractor, batch_size)
    for key in set(ma) & set(mb):
        if ma[key] != mb[key]:
            raise UserError(f"{a} and {b} differ in {key}: {ma[key]} vs {mb[key]}")
    if sa.dim != sb.dim:
        raise UserError(f"{a} and {b} have {sa.dim}-d and {sb.dim}-d features")
    return frechet_distance(sa, sb), {**ma, **mb}


def save_path_stats(folder: str | Path, out: str | Path, space: str, extractor,
                    batch_size: int = 50) -> FeatureStats:
    """pytorch-fid's `--save-stats`: statistics of a folder to a new `.npz` (with provenance)."""
    out = Path(out)
    if out.exists():
        raise UserError(f"{out}: exists already (not overwritten)")
    if not Path(folder).is_dir():
        raise UserError(f"{folder}: not a folder of images")
    stats = folder_stats(folder, extractor, batch_size)
    save_stats(out, stats, features=space, **extractor.provenance())
    return stats


def describe(space: str, meta: dict) -> str:
    """`inception features` / `classifier features, featurenet sha256 1a2b3c4d5e6f`."""
    sha: Optional[str] = meta.get("featurenet_sha256")
    return f"{space} features" + (f", featurenet sha256 {sha[:12]}" if sha else "")
