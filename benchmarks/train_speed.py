"""Training throughput per level of detail: images per second of the three ALAE updates together
(E+D with R1, F+G, latent reciprocity) plus the EMA update, on synthetic images.

    python benchmarks/train_speed.py                       # params.yaml and the mnist preset
    python benchmarks/train_speed.py --preset ffhq --seconds 5

Not a test: numbers depend on the machine. Size `train.transition_kimg`/`stabilize_kimg` from
them (seconds per level = kimg * 1000 / img_per_s).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import click  # noqa: E402
import torch  # noqa: E402

from alae.cli import merged_preset  # noqa: E402
from alae.config import Params, load_params  # noqa: E402
from alae.nn import build_model  # noqa: E402
from alae.train.ema import make_ema, update_ema  # noqa: E402
from alae.train.loop import blend_real  # noqa: E402
from alae.train.schedule import Schedule  # noqa: E402
from alae.train.steps import (Level, discriminator_step, generator_step, latent_step,  # noqa: E402
                              make_optimizers)


def level_speed(params: Params, lod: int, seconds: float, warmup: int = 2) -> float:
    cfg = params.train
    model = build_model(params.model, params.data.channels, params.data.resolution)
    ema = make_ema(model)
    schedule = Schedule.from_params(params, model.num_levels)
    phase = schedule(schedule.level_start(lod))
    batch = phase.batch_size
    opt = make_optimizers(model, phase.lr, cfg.beta1, cfg.beta2)
    res = model.level_resolution(lod)
    # Mid-transition (alpha 0.5) costs the most: both to-RGB/from-RGB paths run.
    level = Level(lod, 0.5 if lod > 0 else 1.0) if model.progressive else Level()
    model.set_level(lod, level.alpha or 1.0)
    real = torch.rand(batch, params.data.channels, res, res) * 2 - 1
    n, steps, start = 0, 0, None
    while True:
        x = blend_real(real, level.alpha or 1.0)
        discriminator_step(model, opt, x, cfg.r1_gamma, level, cfg.style_mixing)
        generator_step(model, opt, batch, torch.device("cpu"), level, cfg.style_mixing)
        latent_step(model, opt, batch, torch.device("cpu"), level)
        update_ema(ema, model, batch, cfg.ema_kimg)
        steps += 1
        if steps == warmup:
            start = time.perf_counter()
        elif steps > warmup:
            n += batch
            if time.perf_counter() - start >= seconds:
                return n / (time.perf_counter() - start)


@click.command()
@click.option("--params", "params_path", default=str(ROOT / "params.yaml"), show_default=True)
@click.option("--preset", "presets", multiple=True, default=["mnist"], show_default=True,
              help="presets to measure besides params.yaml")
@click.option("--seconds", default=10.0, show_default=True, help="timed seconds per level")
@click.option("--threads", default=0, help="torch threads (0: torch's default)")
def main(params_path: str, presets: tuple[str, ...], seconds: float, threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    configs = [("params.yaml", load_params(params_path))]
    configs += [(f"preset {name}", merged_preset(name, params_path)) for name in presets]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| config | lod | resolution | batch | img/s |")
    print("|---|---|---|---|---|")
    for label, params in configs:
        torch.manual_seed(0)
        levels = build_model(params.model, params.data.channels, params.data.resolution).num_levels
        schedule = Schedule.from_params(params, levels)
        for lod in range(levels):
            batch = schedule(schedule.level_start(lod)).batch_size
            speed = level_speed(params, lod, seconds)
            res = params.data.resolution // 2 ** (levels - 1 - lod)
            print(f"| {label} | {lod} | {res} | {batch} | {speed:.0f} |", flush=True)


if __name__ == "__main__":
    main()
