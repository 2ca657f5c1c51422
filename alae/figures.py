"""Figures from a trained (EMA) model: sample grids and reconstructions, as labelled PNGs."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from alae.config import FiguresConfig
from alae.data import eval_batches
from alae.io import atomic_open
from alae.nn import ALAE

LABEL_WIDTH = 72  # pixels of left margin for row labels
PAD = 2


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8; out-of-range pixels are clipped."""
    return x.detach().float().clamp(-1, 1).add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def grid(rows: Sequence[torch.Tensor], labels: Sequence[str], scale: int = 2) -> Image.Image:
    """One labelled row per tensor of images (N, C, H, W); rows may differ in length."""
    rows_np = [to_uint8(r) for r in rows]
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


def save_png(image: Image.Image, path: str | Path) -> None:
    with atomic_open(path, "wb") as f:
        image.save(f, format="PNG")


@torch.no_grad()
def samples_figure(model: ALAE, cfg: FiguresConfig) -> Image.Image:
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(cfg.seed)
    z = torch.randn(cfg.samples, model.latent, generator=gen).to(device)
    images = model.generate(z)
    rows = [images[i:i + cfg.columns] for i in range(0, cfg.samples, cfg.columns)]
    return grid(rows, [f"seed {cfg.seed}" if i == 0 else "" for i in range(len(rows))])


@torch.no_grad()
def reconstructions_figure(model: ALAE, shards_dir: str | Path, cfg: FiguresConfig) -> Image.Image:
    device = next(model.parameters()).device
    n = cfg.pairs * cfg.columns
    real = torch.cat([x for x, _ in eval_batches(shards_dir, "test", model.resolution, n, limit=n)])
    rec = model.reconstruct(real.to(device))
    rows, labels = [], []
    for i in range(0, len(real), cfg.columns):
        rows += [real[i:i + cfg.columns], rec[i:i + cfg.columns]]
        labels += ["test x", "G(E(x))"]
    return grid(rows, labels)
