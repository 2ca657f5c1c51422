"""`make bench` / `python -m benchmarks`: training, data-loading and evaluation speed, and peak
memory, with every fast path measured side by side against the plain path in the same run.

Plain path: fp32, default (NCHW) memory format, R1 every step, no compilation. Variants, one
change each: `channels_last`, `bf16` (autocast; measured only where the hardware has bf16 units
or a GPU: elsewhere it is emulated, 38x slower on this project's CI CPU, and the row says so),
`lazy_r1` (R1 every 4th step, times 4: StyleGAN2's, not the paper's; reported apart, since it is
not the faithful setting). Training speed is the three updates and the EMA together, on
synthetic images (the data path is measured on its own), mid-transition where a level has one.

Prints a table and writes benchmarks/results.json (keys containing `ratio` are variant / plain,
measured in the same process one after the other). Not a test: numbers depend on the machine and
on what else runs on it.
"""
from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import click
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alae.cli import merged_preset  # noqa: E402
from alae.config import DataConfig, Params, load_params  # noqa: E402
from alae.data import train_batches, write_shards  # noqa: E402
from alae.io import write_json  # noqa: E402
from alae.nn import build_model  # noqa: E402
from alae.train.ema import make_ema, update_ema  # noqa: E402
from alae.train.loop import blend_real  # noqa: E402
from alae.train.precision import Precision  # noqa: E402
from alae.train.schedule import Schedule  # noqa: E402
from alae.train.steps import (Level, discriminator_step, generator_step, latent_step,  # noqa: E402
                              make_optimizers, r1_weight)

VARIANTS = {"plain": {}, "channels_last": {"channels_last": True}, "bf16": {"precision": "bf16"},
            "lazy_r1": {"r1_interval": 4}}


def has_bf16_units() -> bool:
    """AMX or AVX-512 BF16 on the CPU (what oneDNN uses for fast bf16 matrix work)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def level_speed(params: Params, lod: int, seconds: float, channels_last: bool = False,
                precision: str = "fp32", r1_interval: int = 1, min_steps: int = 2) -> float:
    cfg, device = params.train, torch.device("cpu")
    torch.manual_seed(0)
    model = build_model(params.model, params.data.channels, params.data.resolution)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    ema, prec = make_ema(model), Precision(precision, device)
    schedule = Schedule.from_params(params, model.num_levels)
    phase = schedule(schedule.level_start(lod))
    batch = phase.batch_size
    opt = make_optimizers(model, phase.lr, cfg.beta1, cfg.beta2)
    res = model.level_resolution(lod)
    level = Level(lod, 0.5 if lod > 0 else 1.0) if model.progressive else Level()
    model.set_level(lod, level.alpha or 1.0)
    real = torch.rand(batch, params.data.channels, res, res) * 2 - 1
    step, n, start = 0, 0, None
    while True:
        x = blend_real(real, level.alpha or 1.0).contiguous(memory_format=fmt)
        r1 = r1_weight(cfg.r1_gamma, r1_interval, step)
        discriminator_step(model, opt, x, r1, level, cfg.style_mixing, prec)
        generator_step(model, opt, batch, device, level, cfg.style_mixing, prec)
        latent_step(model, opt, batch, device, level, prec)
        update_ema(ema, model, batch, cfg.ema_kimg)
        step += 1
        if step == 1:  # the first step pays one-off allocations
            start = time.perf_counter()
            continue
        n += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and step > min_steps and (step - 1) % r1_interval == 0:
            return n / elapsed


def loader_speed(shards: Path, resolution: int, batch: int, images: int) -> float:
    batches = train_batches(shards, resolution, batch, seed=0)
    next(batches)
    start, n = time.perf_counter(), 0
    while n < images:
        n += len(next(batches)[0])
    return n / (time.perf_counter() - start)


def eval_speeds(params: Params, shards: Path, work: Path, images: int,
                inception_images: int) -> dict[str, float]:
    """img/s of the evaluate stage's generation FID pass (G + features + running statistics) in
    each space. Inception runs on a random stand-in weights file in a temporary TORCH_HOME:
    speed only (the real weights cannot be had offline)."""
    import os

    from alae.config import EvaluateConfig
    from alae.metrics import Evaluation
    from alae.metrics.fid import FeatureStats
    from alae.metrics.inception import InceptionFeatures, weights_path, write_standin_weights
    from benchmarks.eval_speed import classifier

    torch.manual_seed(0)
    model = build_model(params.model, params.data.channels,
                        params.data.resolution).eval().requires_grad_(False)
    os.environ["TORCH_HOME"] = str(work / "torch_home")
    write_standin_weights(weights_path())
    extractors = {
        "classifier": (classifier(ROOT / "models" / "featurenet.pt", params.data.channels,
                                  params.data.resolution, work)[0], images),
        "inception": (InceptionFeatures.load("cpu"), inception_images)}
    out = {}
    for space, (extractor, n) in extractors.items():
        ref = FeatureStats()
        ref.update(extractor(torch.rand(max(n, 8), params.data.channels, params.data.resolution,
                                        params.data.resolution) * 2 - 1))
        cfg = EvaluateConfig(num_images=n, batch_size=min(500, n), features=space)
        ev = Evaluation(model, extractor, shards, cfg, ["fid"], reference=ref)
        start = time.perf_counter()
        ev.generated
        out[f"eval_{space}_img_per_s"] = round(n / (time.perf_counter() - start), 2)
    return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@click.command()
@click.option("--params", "params_path", default=str(ROOT / "params.yaml"), show_default=True)
@click.option("--seconds", default=4.0, show_default=True, help="timed seconds per measurement")
@click.option("--threads", default=1, show_default=True, help="torch threads (0: torch's default)")
@click.option("--configs", default="mlp,default,mnist", show_default=True,
              help="comma list of: mlp (preset, batch 128), default (params.yaml), mnist (preset)")
@click.option("--out", default=str(ROOT / "benchmarks" / "results.json"), show_default=True)
def main(params_path: str, seconds: float, threads: int, configs: str, out: str) -> None:
    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    bf16_ok = has_bf16_units() or torch.cuda.is_available()
    all_configs = {"mlp": lambda: merged_preset("mlp", params_path),
                   "default": lambda: load_params(params_path),
                   "mnist": lambda: merged_preset("mnist", params_path)}
    results: dict = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                     "cpu_bf16_units": has_bf16_units(), "train": [], "loader": {}, "notes": []}
    if not bf16_ok:
        results["notes"].append("bf16 not measured: this CPU has no bf16 units (no AMX, no "
                                "AVX-512 BF16), where autocast is emulated and far slower")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 units: "
          f"{has_bf16_units()}")
    print("| config | lod | res | batch | variant | img/s | ratio vs plain |")
    print("|---|---|---|---|---|---|---|")
    default_slowest = None
    for name in configs.split(","):
        params = all_configs[name]()
        levels = build_model(params.model, params.data.channels, params.data.resolution).num_levels
        schedule = Schedule.from_params(params, levels)
        for lod in range(levels):
            batch = schedule(schedule.level_start(lod)).batch_size
            res = params.data.resolution // 2 ** (levels - 1 - lod)
            plain = None
            for variant, options in VARIANTS.items():
                if variant == "bf16" and not bf16_ok:
                    continue
                speed = level_speed(params, lod, seconds, **options)
                plain = plain or speed
                row = {"config": name, "lod": lod, "resolution": res, "batch": batch,
                       "variant": variant, "img_per_s": round(speed, 2),
                       f"ratio_{variant}_vs_plain": round(speed / plain, 3)}
                results["train"].append(row)
                print(f"| {name} | {lod} | {res} | {batch} | {variant} | {speed:.1f} | "
                      f"{speed / plain:.2f} |", flush=True)
            if name == "default":
                default_slowest = min(default_slowest or plain, plain)

    with tempfile.TemporaryDirectory() as tmp:
        shards = ROOT / "data" / "shards"
        if not (shards / "manifest.json").is_file():
            shards = Path(tmp) / "shards"
            write_shards(DataConfig(limit=10000, shard_size=2500), shards)
        load = loader_speed(shards, 32, 32, 20000)
        results["evaluate"] = eval_speeds(load_params(params_path), shards, Path(tmp),
                                          images=1000, inception_images=32)
    results["loader"] = {"img_per_s_32px_batch32": round(load, 1)}
    print(f"\ndata loader, 32x32 from shards, batch 32: {load:.0f} img/s", end="")
    if default_slowest:
        ratio = load / default_slowest
        results["loader"]["ratio_loader_vs_default_training"] = round(ratio, 1)
        print(f" = {ratio:.0f}x the default model's slowest level ({default_slowest:.0f} img/s)")
    print("evaluation, generation FID pass (default model): " + ", ".join(
        f"{k} {v:.1f}" for k, v in results["evaluate"].items()) + " (Inception: stand-in weights, "
        "speed only)")
    results["peak_rss_mib"] = round(peak_rss_mib(), 1)
    print(f"\npeak memory of this benchmark process: {results['peak_rss_mib']:.0f} MiB")
    print("in memory vs PNG files + pytorch-fid: python benchmarks/eval_speed.py")
    for note in results["notes"]:
        print(f"note: {note}")
    write_json(out, results)
    print(f"-> {out}")


if __name__ == "__main__":
    main()
