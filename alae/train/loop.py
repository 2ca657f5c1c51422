"""The training loop: time counted in images seen (kimg), three updates per batch, EMA after
each, one report per tick. It reports scalars (and a sample grid per level of detail) through
callbacks and knows no tracker.

Progressive growing (ALAE sec. 4): `schedule.Schedule` says, from the images seen alone, which
level trains, its blend alpha, batch size and learning rate. At each level switch the data stream
is reopened at the new resolution and batch size, and both Adams start afresh (as the reference
does: the moments of the old level's layers mean nothing to the new ones). During a transition
the real images fade from the upsampled half-resolution version to the full one, as G's output
and E's input path do.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from alae.config import Params
from alae.data import read_manifest, train_batches
from alae.devices import resolve_device
from alae.errors import UserError
from alae.progress import progress_bar
from alae.nn import ALAE, build_model
from alae.train.ema import make_ema, update_ema
from alae.train.schedule import Phase, Schedule
from alae.train.steps import (Level, Optimizers, discriminator_step, generator_step, latent_step,
                              make_optimizers)

Report = Callable[[int, dict], None]  # (images seen, {metric: value})
Snapshot = Callable[[int, int, torch.Tensor], None]  # (images seen, lod, EMA samples at full size)
SNAPSHOT_SEED = 1234  # the fixed latents of the per-level sample grids
SNAPSHOT_SAMPLES = 32


class TrainingDiverged(UserError):
    """A loss became NaN or infinite."""


@dataclass
class TrainResult:
    ema: ALAE
    model: ALAE
    images_seen: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    optimizers: Optional[Optimizers] = None

    def state(self) -> dict:
        """The training state a checkpoint holds beside the EMA model (weights_only-safe)."""
        state = {"model": self.model.state_dict(), "images_seen": self.images_seen,
                 "rng": {"torch": torch.get_rng_state()}}
        if torch.cuda.is_available():
            state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
        if self.optimizers is not None:
            state["opt_ed"] = self.optimizers.ed.state_dict()
            state["opt_fg"] = self.optimizers.fg.state_dict()
        return state


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast where asked; on a CPU without bf16 units it is slower, so it is opt-in."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def blend_real(real: torch.Tensor, alpha: float) -> torch.Tensor:
    """Fade real images in from the upsampled half-resolution version (reference: x * alpha +
    up(avgpool(x)) * (1 - alpha)), matching what G can produce mid-transition."""
    if alpha >= 1.0:
        return real
    low = F.interpolate(F.avg_pool2d(real, 2), scale_factor=2, mode="nearest")
    return torch.lerp(low, real, alpha)


@torch.no_grad()
def level_samples(ema: ALAE, z: torch.Tensor, lod: int) -> torch.Tensor:
    """EMA samples of fixed latents at level `lod`, upsampled to the final resolution."""
    images = ema.generate(z, lod=lod, alpha=1.0) if ema.progressive else ema.generate(z)
    return F.interpolate(images, size=ema.resolution, mode="nearest").cpu()


def train(params: Params, shards_dir: str | Path, report: Optional[Report] = None,
          progress: bool = True, snapshot: Optional[Snapshot] = None) -> TrainResult:
    cfg = params.train
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # Denormal floats are orders of magnitude slower on x86 CPUs and change nothing here.
    torch.set_flush_denormal(True)
    torch.manual_seed(params.seed)
    manifest = read_manifest(shards_dir)
    channels, resolution = manifest["channels"], manifest["resolution"]
    device = resolve_device(cfg.device, "train.device")

    model = build_model(params.model, channels, resolution).to(device)
    ema = make_ema(model)
    schedule = Schedule.from_params(params, model.num_levels)
    fixed_z = torch.randn(SNAPSHOT_SAMPLES, model.latent,
                          generator=torch.Generator().manual_seed(SNAPSHOT_SEED)).to(device)

    total = max(1, round(cfg.kimg * 1000))
    tick = max(1, round(cfg.tick_kimg * 1000))
    history: list[dict] = []
    nimg, next_tick = 0, tick
    sums, steps = torch.zeros(3, device=device), 0
    start = tick_start = time.perf_counter()
    tick_nimg = 0
    lod, opt, batches = -1, None, None
    phase = schedule(0)
    bar = progress_bar(total=total, desc="train", enabled=progress)
    with bar:
        while nimg < total:
            phase = schedule(nimg)
            if phase.lod != lod:
                if lod >= 0 and snapshot is not None:
                    snapshot(nimg, lod, level_samples(ema, fixed_z, lod))
                lod = phase.lod
                # A fresh stream per level, at the level's resolution and batch, seeded by both.
                batches = train_batches(shards_dir, model.level_resolution(lod), phase.batch_size,
                                        seed=params.seed * 1000 + lod)
                opt = make_optimizers(model, phase.lr, cfg.beta1, cfg.beta2)  # Adam reset
            for group in (*opt.ed.param_groups, *opt.fg.param_groups):
                group["lr"] = phase.lr
            model.set_level(phase.lod, phase.alpha)
            level = Level(phase.lod, phase.alpha) if model.progressive else Level()
            real, _ = next(batches)
            real = blend_real(real.to(device, non_blocking=True), phase.alpha)
            n = real.shape[0]
            with autocast(device, cfg.amp):
                loss_d = discriminator_step(model, opt, real, cfg.r1_gamma, level, cfg.style_mixing)
                loss_g = generator_step(model, opt, n, device, level, cfg.style_mixing)
                lae = latent_step(model, opt, n, device, level)
            update_ema(ema, model, n, cfg.ema_kimg)
            sums += torch.stack([loss_d, loss_g, lae]).float()
            steps += 1
            nimg += n
            bar.update(n)
            if nimg >= next_tick or nimg >= total:
                now = time.perf_counter()
                mean = (sums / steps).tolist()  # the one device sync per tick
                row = {"kimg": nimg / 1000, "loss_d": mean[0], "loss_g": mean[1], "lae": mean[2],
                       "img_per_s": (nimg - tick_nimg) / max(now - tick_start, 1e-9),
                       **_phase_row(phase, model)}
                if not all(math.isfinite(v) for v in mean):
                    raise TrainingDiverged(
                        f"training diverged at {nimg} images: loss_d={mean[0]} loss_g={mean[1]} "
                        f"lae={mean[2]} (try a lower lr or a larger train.r1_gamma)")
                history.append(row)
                if report is not None:
                    report(nimg, row)
                bar.set_postfix(lod=f"{phase.lod}", alpha=f"{phase.alpha:.2f}",
                                loss_d=f"{mean[0]:.3f}", loss_g=f"{mean[1]:.3f}",
                                lae=f"{mean[2]:.3f}", img_s=f"{row['img_per_s']:.0f}")
                sums.zero_()
                steps, tick_start, tick_nimg = 0, now, nimg
                while next_tick <= nimg:
                    next_tick += tick
    if snapshot is not None and lod >= 0:
        snapshot(nimg, lod, level_samples(ema, fixed_z, lod))
    return TrainResult(ema=ema, model=model, images_seen=nimg,
                       seconds=time.perf_counter() - start, history=history, optimizers=opt)


def _phase_row(phase: Phase, model: ALAE) -> dict:
    return {"lod": phase.lod, "alpha": phase.alpha,
            "resolution": model.level_resolution(phase.lod), "batch_size": phase.batch_size}
