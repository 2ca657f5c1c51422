"""The training loop: time counted in images seen (kimg), three updates per batch, EMA after
each, one report per tick. It reports scalars through a callback and knows no tracker.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from alae.config import Params
from alae.data import read_manifest, train_batches
from alae.errors import UserError
from alae.progress import progress_bar
from alae.nn import ALAE, build_model
from alae.train.ema import make_ema, update_ema
from alae.train.steps import discriminator_step, generator_step, latent_step, make_optimizers

Report = Callable[[int, dict], None]  # (images seen, {metric: value})


class TrainingDiverged(UserError):
    """A loss became NaN or infinite."""


@dataclass
class TrainResult:
    ema: ALAE
    model: ALAE
    images_seen: int
    seconds: float
    history: list[dict] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"train.device: {name!r} requested but CUDA is not available here")
    return device


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast where asked; on a CPU without bf16 units it is slower, so it is opt-in."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def train(params: Params, shards_dir: str | Path, report: Optional[Report] = None,
          progress: bool = True) -> TrainResult:
    cfg = params.train
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # Denormal floats are orders of magnitude slower on x86 CPUs and change nothing here.
    torch.set_flush_denormal(True)
    torch.manual_seed(params.seed)
    manifest = read_manifest(shards_dir)
    channels, resolution = manifest["channels"], manifest["resolution"]
    device = resolve_device(cfg.device)

    model = build_model(params.model, channels, resolution).to(device)
    ema = make_ema(model)
    opt = make_optimizers(model, params.lr, cfg.beta1, cfg.beta2)
    batches = train_batches(shards_dir, resolution, cfg.batch_size, seed=params.seed)

    total = max(1, round(cfg.kimg * 1000))
    tick = max(1, round(cfg.tick_kimg * 1000))
    history: list[dict] = []
    nimg, next_tick = 0, tick
    sums, steps = torch.zeros(3, device=device), 0
    start = tick_start = time.perf_counter()
    tick_nimg = 0
    bar = progress_bar(total=total, desc="train", enabled=progress)
    with bar:
        while nimg < total:
            real, _ = next(batches)
            real = real.to(device, non_blocking=True)
            n = real.shape[0]
            with autocast(device, cfg.amp):
                loss_d = discriminator_step(model, opt, real, cfg.r1_gamma)
                loss_g = generator_step(model, opt, n, device)
                lae = latent_step(model, opt, n, device)
            update_ema(ema, model, n, cfg.ema_kimg)
            sums += torch.stack([loss_d, loss_g, lae]).float()
            steps += 1
            nimg += n
            bar.update(n)
            if nimg >= next_tick or nimg >= total:
                now = time.perf_counter()
                mean = (sums / steps).tolist()  # the one device sync per tick
                row = {"kimg": nimg / 1000, "loss_d": mean[0], "loss_g": mean[1], "lae": mean[2],
                       "img_per_s": (nimg - tick_nimg) / max(now - tick_start, 1e-9)}
                if not all(math.isfinite(v) for v in mean):
                    raise TrainingDiverged(
                        f"training diverged at {nimg} images: loss_d={mean[0]} loss_g={mean[1]} "
                        f"lae={mean[2]} (try a lower lr or a larger train.r1_gamma)")
                history.append(row)
                if report is not None:
                    report(nimg, row)
                bar.set_postfix(loss_d=f"{mean[0]:.3f}", loss_g=f"{mean[1]:.3f}",
                                lae=f"{mean[2]:.3f}", img_s=f"{row['img_per_s']:.0f}")
                sums.zero_()
                steps, tick_start, tick_nimg = 0, now, nimg
                next_tick += tick
    return TrainResult(ema=ema, model=model, images_seen=nimg,
                       seconds=time.perf_counter() - start, history=history)
