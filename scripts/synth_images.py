"""A realistic image folder made here, offline: scenes at 256x256 (or `--size`) with structure at
every scale, for tests and benchmarks of the pipeline on large colour data (issue: real
datasets at 128-256 px). Nothing is downloaded; the same arguments give the same bytes.

Each image is a scene: a sky-to-ground gradient with a horizon, a textured floor (stripes or
checks in perspective), soft shapes (discs, boxes, polygons) shaded by one light, and one to
three Fashion-MNIST items (from Debian's dataset-fashion-mnist, when it is installed)
colourised, upscaled and composited with a shadow: objects with real shape at 256 px, not
noise. The folder is what real folders are like: no sub-folders (no labels), mostly JPEG
(quality 85-95, some progressive) and some PNG, a few odd sizes (non-square, smaller, larger)
and modes (grayscale, palette, RGBA, CMYK JPEG, 16-bit grayscale PNG).

Image k depends on (seed, k) alone, so any number of worker processes writes the same files.

    python scripts/synth_images.py --out data/synth --count 30000 [--size 256] [--workers 2]
"""
from __future__ import annotations

import gzip
import math
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click  # noqa: E402

from alae.errors import UserError, exits_cleanly  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
ODD_EVERY = 37   # about one image in 37 gets an odd size or mode


def fashion_items(path: Path = FASHION, limit: int = 20000) -> Optional[np.ndarray]:
    """The first `limit` 28x28 Fashion-MNIST training items (uint8), or None without the file."""
    if not path.is_file():
        return None
    with gzip.open(path, "rb") as f:
        data = f.read(16 + limit * 28 * 28)
    n = (len(data) - 16) // (28 * 28)
    return np.frombuffer(data, np.uint8, offset=16, count=n * 28 * 28).reshape(n, 28, 28)


def _colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, 3))


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Sky gradient above a horizon, a floor with a perspective texture below."""
    horizon = int(size * rng.uniform(0.35, 0.7))
    top, bottom = np.array(_colour(rng, 60, 256)), np.array(_colour(rng, 0, 200))
    t = np.linspace(0, 1, horizon)[:, None, None]
    sky = (top * (1 - t) + bottom * t)[:, :, :] * np.ones((1, size, 1))
    floor_a, floor_b = np.array(_colour(rng, 0, 256)), np.array(_colour(rng, 0, 256))
    y = np.arange(size - horizon)[:, None] + 1.0
    x = np.arange(size)[None, :] - size / 2
    depth = size / y                     # perspective: rows further away are thinner
    period = rng.uniform(6, 24)
    if rng.random() < 0.5:
        pattern = (np.floor(x / y * period * 0.5) + np.floor(depth * 4)) % 2  # checks
    else:
        pattern = np.floor(x / y * period * 0.5) % 2                          # stripes
    shade = np.clip(y / (size - horizon), 0.3, 1.0)[..., None]
    floor = (floor_a * pattern[..., None] + floor_b * (1 - pattern[..., None])) * shade
    pixels = np.concatenate([sky, floor], axis=0)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _shapes(rng: np.random.Generator, img: Image.Image) -> None:
    """Soft shapes lit from one side: each a filled figure, a darker shadow, a highlight."""
    size = img.width
    draw = ImageDraw.Draw(img, "RGBA")
    light = rng.uniform(-1, 1, 2)
    for _ in range(int(rng.integers(2, 7))):
        cx, cy = rng.uniform(0.1, 0.9, 2) * size
        r = rng.uniform(0.04, 0.18) * size
        colour = _colour(rng)
        dx, dy = light * r * 0.25
        kind = rng.integers(0, 3)
        for offset, fill in (((dx * 2, dy * 2 + r * 0.1), (0, 0, 0, 90)),
                             ((0, 0), (*colour, 255)),
                             ((-dx, -dy), (255, 255, 255, 60))):
            ox, oy = offset
            scale = 0.5 if fill[3] == 60 else 1.0
            box = [cx + ox - r * scale, cy + oy - r * scale, cx + ox + r * scale,
                   cy + oy + r * scale]
            if kind == 0:
                draw.ellipse(box, fill=fill)
            elif kind == 1:
                draw.rounded_rectangle(box, radius=r * 0.2 * scale, fill=fill)
            else:
                corners = int(rng.integers(3, 7)) if fill[3] == 255 else 5
                phase = rng.uniform(0, 2 * math.pi)
                draw.polygon([(cx + ox + r * scale * math.cos(phase + 2 * math.pi * i / corners),
                               cy + oy + r * scale * math.sin(phase + 2 * math.pi * i / corners))
                              for i in range(corners)], fill=fill)


def _items(rng: np.random.Generator, img: Image.Image, items: np.ndarray) -> None:
    """One to three clothing items: colourised (garment colour times the item's shading, plus
    a printed stripe pattern on some), upscaled smoothly, pasted with a soft shadow."""
    size = img.width
    for _ in range(int(rng.integers(1, 4))):
        item = items[int(rng.integers(0, len(items)))].astype(np.float32) / 255
        side = int(size * rng.uniform(0.3, 0.6))
        mask = Image.fromarray((np.clip(item * 3, 0, 1) * 255).astype(np.uint8), "L")
        mask = mask.resize((side, side), Image.BICUBIC)
        garment = np.array(_colour(rng, 30, 256), np.float32)
        body = item[..., None] * garment
        if rng.random() < 0.4:
            stripes = (np.arange(28)[:, None] // int(rng.integers(2, 5))) % 2
            body = body * (0.6 + 0.4 * stripes[..., None])
        picture = Image.fromarray(np.clip(body, 0, 255).astype(np.uint8), "RGB")
        picture = picture.resize((side, side), Image.BICUBIC)
        x, y = (int(v) for v in rng.integers(-side // 4, size - side * 3 // 4, 2))
        shadow = mask.filter(ImageFilter.GaussianBlur(side / 30)).point(lambda v: v * 0.5)
        img.paste((0, 0, 0), (x + side // 20, y + side // 20), shadow)
        img.paste(picture, (x, y), mask)


def scene(seed: int, index: int, size: int, items: Optional[np.ndarray]) -> Image.Image:
    rng = np.random.default_rng([seed, index])
    img = _background(rng, size)
    _shapes(rng, img)
    if items is not None:
        _items(rng, img, items)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))  # camera softness
    return img


def save(img: Image.Image, folder: Path, seed: int, index: int) -> Path:
    """Image `index` as real folders hold it: mostly JPEG, some PNG, now and then an odd size
    or mode. Written under a temporary name and renamed, so a folder never holds half a file."""
    rng = np.random.default_rng([seed, index, 1])
    odd = index % ODD_EVERY == ODD_EVERY - 1
    kind = int(rng.integers(0, 7)) if odd else -1
    if kind == 0:
        img = img.resize((img.width * 5 // 4, img.height * 3 // 4), Image.BICUBIC)  # landscape
    elif kind == 1:
        img = img.resize((img.width // 2, img.height // 2), Image.BICUBIC)          # small
    elif kind == 2:
        img = img.resize((img.width * 3 // 2, img.height * 2), Image.BICUBIC)      # portrait
    png = rng.random() < 0.25
    options: dict = {}
    if kind == 3:
        img = img.convert("L")
    elif kind == 4:
        img, png = img.convert("P", palette=Image.ADAPTIVE, colors=64), True
    elif kind == 5:
        img, png = img.convert("RGBA"), True
        img.putalpha(Image.new("L", img.size, 255))
    elif kind == 6:
        if rng.random() < 0.5:
            img, png = img.convert("CMYK"), False
        else:
            grey = np.asarray(img.convert("L"), np.uint16) * 257
            img, png = Image.fromarray(grey.astype(np.uint16)), True  # 16-bit grayscale
    if not png:
        options = {"quality": int(rng.integers(85, 96)), "progressive": bool(rng.random() < 0.2)}
    path = folder / f"img{index:06d}.{'png' if png else 'jpg'}"
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".part", delete=False) as tmp:
        img.save(tmp, format="PNG" if png else "JPEG", **options)
    os.replace(tmp.name, path)
    return path


def _make(indices: range, folder: Path, seed: int, size: int, with_items: bool) -> int:
    items = fashion_items() if with_items else None
    for index in indices:
        save(scene(seed, index, size, items), folder, seed, index)
    return len(indices)


def make_folder(folder: Path, count: int, size: int = 256, seed: int = 0, workers: int = 1,
                with_items: bool = True, progress=None) -> list[Path]:
    """Write images 0..count-1 into `folder` (created); returns the files, sorted."""
    if with_items and fashion_items(limit=1) is None:
        raise UserError(f"{FASHION}: Fashion-MNIST is not installed (make dataset), or pass "
                        "--no-items for shapes only")
    folder.mkdir(parents=True, exist_ok=True)
    chunk = 100
    parts = [range(i, min(i + chunk, count)) for i in range(0, count, chunk)]
    job = partial(_make, folder=folder, seed=seed, size=size, with_items=with_items)
    if workers <= 1:
        done = map(job, parts)
    else:
        pool = ProcessPoolExecutor(workers)
        done = pool.map(job, parts)
    try:
        for n in done:
            if progress is not None:
                progress(n)
    finally:
        if workers > 1:
            pool.shutdown()
    return sorted(p for p in folder.iterdir() if p.suffix in (".jpg", ".png"))


@click.command()
@click.option("--out", required=True, type=click.Path(file_okay=False), help="folder to fill")
@click.option("--count", default=30000, show_default=True, type=click.IntRange(min=1))
@click.option("--size", default=256, show_default=True, type=click.IntRange(min=16))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--workers", default=os.cpu_count() or 1, show_default="all cores",
              type=click.IntRange(min=1))
@click.option("--items/--no-items", default=True, show_default=True,
              help="composite Fashion-MNIST items (needs Debian's dataset-fashion-mnist)")
@exits_cleanly
def main(out: str, count: int, size: int, seed: int, workers: int, items: bool) -> None:
    """Fill OUT with COUNT synthetic scenes (the same bytes for the same arguments)."""
    from tqdm import tqdm

    folder = Path(out)
    if folder.exists() and any(folder.iterdir()):
        raise UserError(f"{folder}: not empty (the generator writes into an empty folder)")
    with tqdm(total=count, unit="img", desc="synth") as bar:
        files = make_folder(folder, count, size, seed, workers, items, bar.update)
    click.echo(f"wrote {len(files)} images to {folder}")


if __name__ == "__main__":
    main()
