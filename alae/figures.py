"""Figures from a trained (EMA) model: sample grids and reconstructions, as labelled PNGs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from alae.config import FiguresConfig, Params
from alae.data import eval_batches
from alae.io import atomic_open
from alae.nn import ALAE
from alae.pixels import from_uint8, to_uint8

LABEL_WIDTH = 72  # pixels of left margin for row labels
PAD = 2


def to_hwc_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8, as PIL takes images."""
    return to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()


def grid(rows: Sequence[torch.Tensor], labels: Sequence[str], scale: int = 2) -> Image.Image:
    """One labelled row per tensor of images (N, C, H, W); rows may differ in length."""
    rows_np = [to_hwc_uint8(r) for r in rows]
    h, w, c = rows_np[0].shape[1:]
    h, w = h * scale, w * scale
    ncol = max(len(r) for r in rows_np)
    canvas = Image.new("RGB", (LABEL_WIDTH + ncol * (w + PAD) + PAD, len(rows) * (h + PAD) + PAD),
                       (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (row, label) in enumerate(zip(rows_np, labels)):
        y = PAD + i * (h + PAD)
        draw.text((4, y + h // 2 - 6), label, fill=(0, 0, 0))
        for j, img in enumerate(row):
            tile = Image.fromarray(img[..., 0] if c == 1 else img).convert("RGB")
            tile = tile.resize((w, h), Image.NEAREST)
            canvas.paste(tile, (LABEL_WIDTH + PAD + j * (w + PAD), y))
    return canvas


TITLE_LINE = 14  # pixels per title line (PIL's default font is ~11 px high)


def titled(image: Image.Image, lines: Sequence[str]) -> Image.Image:
    """`image` under a white band holding `lines` of text (what the figure shows, from which
    run), so that a figure read on its own says what it is."""
    lines = [line for line in lines if line]
    if not lines:
        return image
    band = TITLE_LINE * len(lines) + PAD
    draw_width = max(image.width, max(len(line) for line in lines) * 6 + 8)
    canvas = Image.new("RGB", (draw_width, image.height + band), (255, 255, 255))
    canvas.paste(image, (0, band))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((4, PAD + i * TITLE_LINE), line, fill=(0, 0, 0))
    return canvas


def snapshot_grid(images: torch.Tensor, label: str, columns: int = 8) -> Image.Image:
    """A training-time sample grid (uint8 snapshot) in rows of `columns`, labelled once."""
    rows = [from_uint8(images[i:i + columns]) for i in range(0, len(images), columns)]
    return grid(rows, [label] + [""] * (len(rows) - 1))


def progress_figure(snapshots: dict[int, torch.Tensor], columns: int = 8) -> Image.Image:
    """The fixed-seed samples at the end of each level of detail, one labelled row per level
    (each upsampled to the final resolution when it was taken)."""
    lods = sorted(snapshots)
    rows = [from_uint8(snapshots[lod][:columns]) for lod in lods]
    return grid(rows, [f"{4 * 2 ** lod}x{4 * 2 ** lod} end" for lod in lods])


def save_png(image: Image.Image, path: str | Path) -> None:
    with atomic_open(path, "wb") as f:
        image.save(f, format="PNG")


def _device(model: ALAE) -> torch.device:
    return next(model.parameters()).device


def _seeded_z(model: ALAE, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, model.latent, generator=gen).to(_device(model))


def first_test_images(model: ALAE, shards_dir: str | Path, n: int) -> torch.Tensor:
    """The first `n` images of the shards' test split, at the model's resolution."""
    batches = eval_batches(shards_dir, "test", model.resolution, n, limit=n)
    return torch.cat([x for x, _ in batches]).to(_device(model))


def reals_needed(cfg: FiguresConfig) -> int:
    """How many real images the figures take from the front of their pool (figure_set)."""
    return max(cfg.pairs * cfg.columns, 2 * cfg.pairs, 2 * min(cfg.columns, 6))


def _rows(images: torch.Tensor, columns: int) -> list[torch.Tensor]:
    return [images[i:i + columns] for i in range(0, len(images), columns)]


@torch.no_grad()
def samples_figure(model: ALAE, cfg: FiguresConfig, truncate: bool = True) -> Image.Image:
    """An uncurated grid: the same fixed-seed z, with truncation (psi, cutoff) or without."""
    psi = cfg.psi if truncate else None
    torch.manual_seed(cfg.seed)  # the generator's per-pixel noise
    images = model.generate(_seeded_z(model, cfg.samples, cfg.seed), psi=psi, cutoff=cfg.cutoff)
    rows = _rows(images, cfg.columns)
    label = f"psi {psi}" if psi is not None else "psi 1 (none)"
    return grid(rows, [label if i == 0 else "" for i in range(len(rows))])


@torch.no_grad()
def reconstructions_figure(model: ALAE, reals: torch.Tensor, cfg: FiguresConfig) -> Image.Image:
    """The first `pairs` rows of `reals` (up to `columns` each), each above its reconstruction."""
    real = reals[:cfg.pairs * cfg.columns]
    torch.manual_seed(cfg.seed)
    rec = model.reconstruct(real)
    rows, labels = [], []
    for x, r in zip(_rows(real, cfg.columns), _rows(rec, cfg.columns)):
        rows += [x, r]
        labels += ["test x", "G(E(x))"]
    return grid(rows, labels)


def lerp_codes(wa: torch.Tensor, wb: torch.Tensor, steps: int) -> torch.Tensor:
    """`steps` codes (steps, latent) on the straight line from wa to wb in W, ends included."""
    t = torch.linspace(0, 1, steps, device=wa.device)[:, None]
    return torch.lerp(wa.reshape(1, -1).expand(steps, -1), wb.reshape(1, -1).expand(steps, -1), t)


@torch.no_grad()
def interpolation_figure(model: ALAE, reals: torch.Tensor, cfg: FiguresConfig) -> Image.Image:
    """Pairs of real images (0 and 1, 2 and 3, ... of `reals`; at most `pairs`); their codes
    E(x) linearly interpolated in W and decoded. The end columns are the two reconstructions;
    the real images frame each row."""
    steps = cfg.columns
    pairs = min(cfg.pairs, len(reals) // 2)
    real = reals[:2 * pairs]
    a, b = real[0::2], real[1::2]
    wa, wb = model.encode(a), model.encode(b)
    rows, labels = [], []
    for i in range(pairs):
        w = lerp_codes(wa[i], wb[i], steps)
        torch.manual_seed(cfg.seed)
        rows.append(torch.cat([a[i:i + 1], model.decode(w), b[i:i + 1]]))
        labels.append("x_a ... x_b" if i == 0 else "")
    return grid(rows, labels)


STYLE_BLOCKS = ("coarse", "middle", "fine")


def style_ranges(model: ALAE) -> dict[str, range]:
    """Style slots (two per level) of the coarse, middle and fine blocks. From 64x64 up,
    StyleGAN's split (its sec. 3.1; ALAE's figures): coarse 4-8, middle 16-32, fine 64 px and up.
    Smaller models split their own levels so that all three blocks exist: 32x32 is
    4-8 / 16 / 32 px, 16x16 is 4 / 8 / 16 px. Too few levels for three: an 8x8 model has
    coarse (4 px) and fine (8 px), a 4x4 one only coarse."""
    levels = model.num_levels
    if levels >= 5:
        middle, fine = 2, 4  # the levels where the middle and fine blocks start
    elif levels >= 3:
        middle, fine = levels - 2, levels - 1
    else:
        middle = fine = 1
    bounds = zip(STYLE_BLOCKS, (0, middle, fine), (middle, fine, levels))
    return {block: range(2 * lo, 2 * hi) for block, lo, hi in bounds if lo < hi}


def slot_resolutions(model: ALAE, slots: range) -> str:
    """The resolutions whose styles `slots` are, e.g. '16-32 px'."""
    lo, hi = (model.level_resolution(s // 2) for s in (slots.start, slots.stop - 1))
    return f"{lo} px" if lo == hi else f"{lo}-{hi} px"


def mix_styles(model: ALAE, w_dest: torch.Tensor, w_src: torch.Tensor, slots: range) -> torch.Tensor:
    """Per-slot styles (N, S, latent): the destination's, with the source's in `slots`."""
    styles = w_dest[:, None].repeat(1, model.num_styles, 1)
    styles[:, slots.start:slots.stop] = w_src[:, None]
    return styles


@torch.no_grad()
def style_mixing_figure(model: ALAE, reals: torch.Tensor, cfg: FiguresConfig) -> Image.Image:
    """Sources (encoded real images, the first n of `reals`) across the top, destinations (the
    next n) down the side; each cell is the destination with the source's coarse, middle or fine
    styles copied in. n is at most 6 and at most `columns`."""
    n = min(cfg.columns, 6, len(reals) // 2)
    sources, dests = reals[:n], reals[n:2 * n]
    w_src, w_dest = model.encode(sources), model.encode(dests)
    blank = torch.full_like(sources[:1], -1.0)
    rows, labels = [torch.cat([blank, sources])], ["sources"]
    for block, slots in style_ranges(model).items():
        for j in range(len(dests)):
            styles = mix_styles(model, w_dest[j:j + 1].expand(n, -1), w_src, slots)
            torch.manual_seed(cfg.seed)
            rows.append(torch.cat([dests[j:j + 1], model.decode(styles)]))
            labels.append(f"{block}" if j == 0 else "")
    return grid(rows, labels)


def figure_set(model: ALAE, cfg: FiguresConfig, reals: torch.Tensor,
               snapshots: Optional[dict[int, torch.Tensor]] = None
               ) -> tuple[dict[str, Image.Image], list[str]]:
    """Every figure of a model, by file name, and a line for each that could not be made:
    samples with and without truncation, reconstructions and interpolations of `reals` (real
    images, reals_needed(cfg) of them make the full figures), and for a StyleALAE the style
    mixing and, from the per-level samples training kept, the progress figure."""
    figures = {
        "samples.png": samples_figure(model, cfg, truncate=True),
        "samples_untruncated.png": samples_figure(model, cfg, truncate=False),
    }
    skipped = []
    if len(reals):
        figures["reconstructions.png"] = reconstructions_figure(model, reals, cfg)
    else:
        skipped.append("reconstructions.png: no real images")
    two = len(reals) >= 2
    if two:
        figures["interpolation.png"] = interpolation_figure(model, reals, cfg)
    else:
        skipped.append("interpolation.png: needs two real images")
    if not model.progressive:
        skipped.append("style_mixing.png and progress.png: a StyleALAE's only (this model has "
                       "one w for the whole image and does not grow)")
        return figures, skipped
    if two:
        figures["style_mixing.png"] = style_mixing_figure(model, reals, cfg)
    else:
        skipped.append("style_mixing.png: needs two real images")
    if snapshots:
        figures["progress.png"] = progress_figure(snapshots, cfg.columns)
    else:
        skipped.append("progress.png: the model file holds no per-level samples (it was not "
                       "written by the train stage)")
    return figures, skipped


def _metric(metrics: dict, key: str, text: str) -> str:
    return f"{text} {metrics[key]:.4g}" if isinstance(metrics.get(key), (int, float)) else ""


def figure_titles(name: str, params: Params, meta: dict, metrics: dict,
                  reals: str = "test images") -> list[str]:
    """Title lines of figure `name`: the run (short key), images seen, model, what is drawn,
    and the evaluate stage's number for it where `metrics` (its eval.json) has one. `reals`
    says where the real images came from."""
    m, f = params.model, params.figures
    seen = f" | {meta['images_seen'] / 1000:.0f} kimg" if "images_seen" in meta else ""
    run = f"run {str(meta.get('run_key', '?'))[:8]}{seen} | {m.kind} ALAE, latent {m.latent}"
    space = params.evaluate.features
    n = f"{params.evaluate.num_images // 1000}k" if params.evaluate.num_images >= 1000 \
        else str(params.evaluate.num_images)
    what = {
        "samples.png": [f"samples G(F(z)), truncated: psi {f.psi} on the first {f.cutoff} "
                        "style slots" if f.psi is not None else "samples G(F(z)), no truncation"],
        "samples_untruncated.png": ["samples G(F(z)), no truncation (what FID measures)",
                                    _metric(metrics, f"fid_{space}", f"FID ({space}, {n}):")],
        "reconstructions.png": [f"{reals} x and their reconstructions G(E(x))",
                                " | ".join(filter(None, (
                                    _metric(metrics, f"rec_fid_{space}", f"rec FID ({space}, {n}):"),
                                    _metric(metrics, "mse", "mse:"))))],
        "interpolation.png": [f"E(x_a) -> E(x_b) in W, decoded in {f.columns} steps; the real "
                              "x_a and x_b at the ends"],
        "style_mixing.png": ["row: the left image with the styles of the source above copied "
                             "in (coarse, middle or fine, as labelled)"],
        "progress.png": ["fixed-seed samples at the end of each level of detail"],
    }
    return [run, *what.get(name, [])]
