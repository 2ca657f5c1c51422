"""Image files in and out of a trained model, for the `alae` command: any image file is
cropped, resized and converted exactly as the shard stage stores it."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from alae.data.sources import load_image
from alae.errors import UserError
from alae.figures import to_hwc_uint8
from alae.io import atomic_open
from alae.pixels import from_uint8

# What a folder's image files are, and what an output file may be called: PIL writes each of
# these from grayscale (L) and RGB images, the two modes written here.
SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def expand(paths: Iterable[str | Path]) -> list[tuple[Path, Path]]:
    """(file, its name for outputs) per image: files as given, under their own name; folders
    become their image files, recursively, in sorted order, named by their path inside the
    folder (so a/x.png and b/x.png stay apart)."""
    out: list[tuple[Path, Path]] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted((f, f.relative_to(p)) for f in p.rglob("*")
                          if f.suffix.lower() in SUFFIXES and f.is_file())
        elif p.is_file():
            out.append((p, Path(p.name)))
        else:
            raise UserError(f"{p}: no such file or folder")
    if not out:
        raise UserError(f"{', '.join(map(str, paths))}: no image files found")
    return out


def output_paths(found: list[tuple[Path, Path]], folder: str | Path, suffix: str) -> list[Path]:
    """FOLDER/<name>.<suffix> per image of `expand`; two images that would be written to one file
    are refused, naming both, before anything is written."""
    taken: dict[Path, Path] = {}
    for path, name in found:
        out = Path(folder) / name.with_suffix(suffix)
        if out in taken:
            raise UserError(f"{taken[out]} and {path}: both would be written to {out}")
        taken[out] = path
    return list(taken)


def _has_colour(path: Path) -> bool:
    with Image.open(path) as img:
        if img.mode in ("L", "LA", "1", "I", "I;16", "F"):
            return False
        rgb = np.asarray(img.convert("RGB"), dtype=np.int16)
    return bool((rgb.max(axis=2) - rgb.min(axis=2) > 8).any())


def load_images(paths: Iterable[Path], resolution: int, channels: int) -> torch.Tensor:
    """(N, channels, resolution, resolution) in [-1, 1]. A colour image for a grayscale model is
    refused rather than silently converted: its codes would describe another picture."""
    images = []
    for path in paths:
        try:
            if channels == 1 and _has_colour(path):
                raise UserError(f"{path}: colour image, but the model was trained on 1-channel "
                                "(grayscale) images")
            img = load_image(path, resolution, channels)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise UserError(f"{path}: unreadable image ({type(e).__name__})") from None
        a = np.asarray(img, dtype=np.float32).reshape(resolution, resolution, channels)
        images.append(from_uint8(torch.from_numpy(a).permute(2, 0, 1)))
    return torch.stack(images)


def image_format(path: str | Path) -> str:
    """PIL's format for writing `path`, named by its suffix; a one-line UserError for any other
    suffix (commands call this first, so a typo costs no work)."""
    suffix = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if suffix not in SUFFIXES or fmt not in Image.SAVE:  # SAVE: this Pillow build can write it
        raise UserError(f"{path}: not an image file name (the suffix names the format: "
                        f"{', '.join(sorted(SUFFIXES))})")
    return fmt


def to_image(x: torch.Tensor) -> Image.Image:
    """One image (C, H, W) in [-1, 1] as a grayscale or RGB picture."""
    a = to_hwc_uint8(x[None])[0]
    return Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)


def save_image(image: Image.Image, path: str | Path) -> None:
    """Written atomically, in the format the suffix names (x.jpg is a JPEG)."""
    fmt = image_format(path)
    with atomic_open(path, "wb") as f:
        image.save(f, format=fmt)
