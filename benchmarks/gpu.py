"""The GPU benchmark of `make gpu-check` (scripts/gpu_check.py runs it after the `gpu` tests):
what training, evaluation and the loader do on one CUDA device, in a few minutes.

- training img/s of whole `train_step`s (E+D with R1 every step, F+G, the latent update, EMA)
  for the `mnist` and `celeba-hq256` presets at the 4x4, a middle and the top level, fp32 at each
  and bf16, fp16 and channels_last at the top level; the model's own FLOPs per image (`alae.cost`,
  on the meta device) give the achieved TFLOP/s; peak GPU memory per row;
- evaluation img/s of the Inception features (pytorch-fid's network on a random stand-in weights
  file in a temporary TORCH_HOME: speed only, its values mean nothing) and of generation + the
  featurenet at celeba-hq256's top level;
- the loader's img/s at 256 px (procedural scenes of scripts/synth_images.py, sharded as the shard
  stage does, `data.encoding: auto`) with 0 and N decoding workers, against the top level's
  consumption measured above.

    python -m benchmarks.gpu --out gpu_results.json [--seconds 2]

Not a test: every number depends on the GPU and its host.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alae.config import DataConfig, Params  # noqa: E402
from alae.cost import level_flops  # noqa: E402
from alae.data import write_shards  # noqa: E402
from alae.io import write_json  # noqa: E402
from alae.presets import merged_preset  # noqa: E402
from benchmarks.__main__ import Trial  # noqa: E402

PRESETS = ("mnist", "celeba-hq256")
TOP_VARIANTS = {"bf16": {"precision": "bf16"}, "fp16": {"precision": "fp16"},
                "channels_last": {"channels_last": True}}
LOADER_IMAGES = 1000


def levels(num_levels: int) -> list[int]:
    """4x4, a middle level and the top one (lods)."""
    top = num_levels - 1
    return sorted({0, top // 2, top})


def train_row(params: Params, lod: int, gflop: float, variant: str, options: dict,
              seconds: float, device: str) -> dict:
    torch.cuda.reset_peak_memory_stats(device)
    trial = Trial(params, lod, device=device, **options)
    for _ in range(2):   # allocations, cuDNN's algorithm search
        trial.step()
    trial.step_seconds = {True: [], False: []}
    trial.run(seconds)
    speed = trial.img_per_s()
    return {"level": lod, "resolution": trial.model.level_resolution(lod), "variant": variant,
            "batch": trial.batch, "img_per_s": round(speed, 1),
            "gflop_per_img": round(gflop, 2), "tflop_per_s": round(gflop * speed / 1e3, 2),
            "peak_gib": round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)}


def training(seconds: float, device: str) -> list[dict]:
    rows = []
    for preset in PRESETS:
        params = merged_preset(preset, ROOT / "params.yaml")
        gflops = [f / 1e9 for f in level_flops(params)]   # per image, R1 every step
        for lod in levels(len(gflops)):
            variants = {"fp32": {}}
            if lod == len(gflops) - 1:
                variants.update(TOP_VARIANTS)
            for name, options in variants.items():
                row = {"preset": preset, **train_row(params, lod, gflops[lod], name, options,
                                                     seconds, device)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def timed_batches(fn, batches: int) -> float:
    """Seconds of `batches` calls of `fn`, after one untimed call, synchronised."""
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(batches):
        fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def evaluation(device: str, work: Path) -> dict:
    from alae.metrics.inception import InceptionFeatures
    from alae.nn import Level, build_model
    from benchmarks.standin import write_standin_weights

    os.environ["TORCH_HOME"] = str(work / "torch_home")   # the stand-in, never the real cache
    write_standin_weights()
    inception = InceptionFeatures.load(device)
    batch = 200
    x = torch.rand(batch, 3, 256, 256, device=device) * 2 - 1
    with torch.inference_mode():
        seconds = timed_batches(lambda: inception(x), 5)
    out = {"inception_img_per_s_256px": round(5 * batch / seconds, 1)}
    params = merged_preset("celeba-hq256", ROOT / "params.yaml")
    torch.manual_seed(0)
    model = build_model(params.model, 3, 256).to(device).eval().requires_grad_(False)
    model.set_level(Level(model.num_levels - 1, 1.0))
    z = torch.randn(64, int(model.latent), device=device)
    with torch.inference_mode():
        seconds = timed_batches(lambda: model.generate(z), 5)
    out["generate_img_per_s_celeba_hq256"] = round(5 * len(z) / seconds, 1)
    out["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
    print(json.dumps(out), flush=True)
    return out


def loader(work: Path, consume: float) -> dict:
    from benchmarks.loader_speed import measure

    images = work / "scenes"
    cores = len(os.sched_getaffinity(0))
    subprocess.run([sys.executable, str(ROOT / "scripts" / "synth_images.py"), "--out",
                    str(images), "--count", str(LOADER_IMAGES), "--size", "256", "--workers",
                    str(cores), "--no-items"], check=True, capture_output=True)
    shards = work / "shards"
    write_shards(DataConfig(source="folder", path=str(images), resolution=256, channels=3,
                            shard_size=250, workers=cores), shards)
    rows = [measure(shards, 256, 16, w, 3000, 1000) for w in (0, min(8, cores))]
    out = {"cores": cores, "rows": rows, "celeba_hq256_top_level_consumes_img_per_s": consume,
           "fed": max(r["img_per_s"] for r in rows) >= consume}
    print(json.dumps(out), flush=True)
    return out


@click.command()
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="results JSON")
@click.option("--seconds", default=2.0, show_default=True, help="timed seconds per training row")
@click.option("--device", default="cuda", show_default=True)
def main(out: str, seconds: float, device: str) -> None:
    if not torch.cuda.is_available():
        raise click.ClickException("the GPU benchmark needs a CUDA device")
    start = time.perf_counter()
    result = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(device)}
    result["training"] = training(seconds, device)
    with tempfile.TemporaryDirectory(prefix="alae-gpu-") as tmp:
        result["evaluation"] = evaluation(device, Path(tmp))
        top = [r for r in result["training"]
               if r["preset"] == "celeba-hq256" and r["variant"] == "bf16"]
        result["loader"] = loader(Path(tmp), top[0]["img_per_s"] if top else 0.0)
    result["seconds"] = round(time.perf_counter() - start, 1)
    write_json(out, result)
    print(f"-> {out} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
