"""Image files in and out of a trained model, for the `alae` command: any image file is
cropped, resized and converted exactly as the shard stage stores it."""
from __future__ import annotations

from pathlib import Path
from typing import Collection, Iterable, NamedTuple, Optional, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from alae.data.sources import load_image
from alae.errors import UserError
from alae.figures import grid, to_hwc_uint8
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


ASPECT_WARN = 1.2   # longer side / shorter side above which the centre crop loses much
UPSCALE_WARN = 2.0  # model resolution / shorter side above which the model sees invented detail


def fit_warning(path: Path, size: tuple[int, int], resolution: int) -> Optional[str]:
    """A line saying how far an image is from what the model takes (square, at its resolution),
    or None. Large models (the authors' faces) also expect aligned crops: said once it matters."""
    w, h = size
    side = min(w, h)
    why = []
    if max(w, h) / side > ASPECT_WARN:
        why.append(f"not square: its centre {side}x{side} is used")
    if resolution / side > UPSCALE_WARN:
        why.append(f"upscaled {resolution / side:.1f}x to {resolution}x{resolution}")
    if not why:
        return None
    hint = (" (the authors' face models expect FFHQ-aligned face crops)"
            if resolution >= 256 else "")
    return f"{path}: {w}x{h}, {' and '.join(why)}{hint}"


CONVERSIONS = {"gray": 1, "rgb": 3}  # --convert NAME: the channels it converts images to


class Loaded(NamedTuple):
    images: torch.Tensor  # (N, channels, resolution, resolution) in [-1, 1]
    kept: list[int]       # which of the paths they are
    refused: list[str]    # one line per file passed over
    converted: int        # how many changed between grayscale and colour
    warnings: list[str]   # images far from the model's square resolution (`fit_warning`)


def load_usable(paths: Sequence[Path], resolution: int, channels: int,
                convert: Optional[str] = None, optional: Collection[Path] = ()) -> Loaded:
    """The images of `paths`. A colour image for a grayscale model is refused rather than
    silently converted (its codes would describe another picture) unless `convert` is "gray";
    a grayscale image for a colour model becomes RGB. A refused or unreadable file in
    `optional` (a folder's) is passed over and named in `refused`; any other stops everything,
    and so does having no image left."""
    if convert is not None and CONVERSIONS[convert] != channels:
        raise UserError(f"--convert {convert}: the model takes {channels}-channel images")
    images, kept, refused, converted, warnings = [], [], [], 0, []
    for i, path in enumerate(paths):
        try:
            colour = _has_colour(path)
            if channels == 1 and colour and convert is None:
                raise UserError(f"{path}: colour image, but the model was trained on 1-channel "
                                "(grayscale) images (--convert gray converts it)")
            with Image.open(path) as header:
                size = header.size
            img = load_image(path, resolution, channels)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, UserError) as e:
            why = (str(e) if isinstance(e, UserError)
                   else f"{path}: unreadable image ({type(e).__name__})")
            if path not in optional:
                raise UserError(why) from None
            refused.append(why)
            continue
        converted += colour != (channels == 3)
        warning = fit_warning(path, size, resolution)
        warnings += [warning] if warning else []
        a = np.asarray(img, dtype=np.float32).reshape(resolution, resolution, channels)
        images.append(from_uint8(torch.from_numpy(a).permute(2, 0, 1)))
        kept.append(i)
    if not images:
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        raise UserError(f"no usable image among {len(refused)}: {refused[0]}{more}")
    return Loaded(torch.stack(images), kept, refused, converted, warnings)


def load_images(paths: Sequence[Path], resolution: int, channels: int,
                convert: Optional[str] = None) -> torch.Tensor:
    """(N, channels, resolution, resolution) in [-1, 1], every one of `paths` or an error."""
    return load_usable(paths, resolution, channels, convert).images


def image_format(path: str | Path) -> str:
    """PIL's format for writing `path`, named by its suffix; a one-line UserError for any other
    suffix (commands call this first, so a typo costs no work)."""
    suffix = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if suffix not in SUFFIXES or fmt not in Image.SAVE:  # SAVE: this Pillow build can write it
        raise UserError(f"{path}: not an image file name (the suffix names the format: "
                        f"{', '.join(sorted(SUFFIXES))})")
    return fmt


def image_names(*paths: str | Path | None) -> None:
    """`image_format` of each output file that is asked for (None: not asked for)."""
    for path in paths:
        if path is not None:
            image_format(path)


def compare_sheet(inputs: torch.Tensor, outputs: torch.Tensor, input_label: str,
                  output_label: str, columns: int = 8) -> Image.Image:
    """Inputs above outputs, `columns` at a time: a row of inputs, then the outputs' row.
    (Here, not in alae.figures: a change there is a change to the train stage's code.)"""
    rows, labels = [], []
    for i in range(0, max(len(inputs), len(outputs)), columns):
        for part, label in ((inputs, input_label), (outputs, output_label)):
            if i < len(part):
                rows.append(part[i:i + columns])
                labels.append(label)
    return grid(rows, labels)


def to_image(x: torch.Tensor) -> Image.Image:
    """One image (C, H, W) in [-1, 1] as a grayscale or RGB picture."""
    a = to_hwc_uint8(x[None])[0]
    return Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)


def save_image(image: Image.Image, path: str | Path, scale: int = 1) -> None:
    """Written atomically, in the format the suffix names (x.jpg is a JPEG), `scale` times
    larger (nearest neighbour: a 32-px image is unreadable at 1x, and stays sharp)."""
    fmt = image_format(path)
    if scale != 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    with atomic_open(path, "wb") as f:
        image.save(f, format=fmt)
