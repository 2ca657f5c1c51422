"""The latent explorer's response time per action, model side (alae/edit/explorer.py), at the
default run's model and at the authors' configurations' sizes (random weights: the time of a
forward pass does not depend on what the weights learnt).

    python -m benchmarks.explorer_speed [--model models/alae.pt] [--presets celeba-hq256,ffhq]
        [--threads 1,2] [--repeats 3] [--out bench-explorer.json]

Each action is timed `--repeats` times after one warm-up call; the median is printed (seconds),
with eight SeFa directions loaded (as many sliders as the default model's class directions).
Through the page add Gradio's round trip (README).
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Callable

import click
import torch

SLIDERS = 8


def _median_s(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: allocations, one-time kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _explorer(model):
    from alae.edit.directions import from_sefa
    from alae.edit.explorer import Explorer

    torch.manual_seed(0)
    images = torch.rand(4, model.channels, model.resolution, model.resolution) * 2 - 1
    with torch.no_grad():
        codes = model.encode(images).double().numpy()
    directions = from_sefa(model, range(model.num_styles), "all", SLIDERS, codes, "random",
                           "benchmark")
    return Explorer(model, directions), images.numpy()


def time_actions(model, repeats: int) -> dict[str, float]:
    ex, images = _explorer(model)
    a, b = images[0], images[1]
    strengths = [1.0] + [0.0] * (SLIDERS - 1)
    return {"reconstruct": _median_s(lambda: ex.reconstruct(a), repeats),
            "edit": _median_s(lambda: ex.edit(a, strengths, "all"), repeats),
            "mix": _median_s(lambda: ex.mix(a, b, ex.blocks[0]), repeats),
            "sample": _median_s(lambda: ex.sample(0, 0.7), repeats)}


def models(model_path: str, presets: list[str]):
    from alae.checkpoint import load_model
    from alae.nn.alae import Level, build_model
    from alae.presets import preset_params

    if model_path:
        yield Path(model_path).name, load_model(model_path)[0].eval()
    for name in presets:
        params = preset_params(name)
        torch.manual_seed(0)
        model = build_model(params.model, params.data.channels, params.data.resolution)
        model.set_level(Level(model.num_levels - 1, 1.0))  # as trained to the end
        yield f"{name} (random weights)", model.eval()


@click.command()
@click.option("--model", "model_path", default="models/alae.pt", show_default=True,
              help="a trained model file ('' for none)")
@click.option("--presets", default="celeba-hq256,ffhq", show_default=True,
              help="authors' configurations to build with random weights ('' for none)")
@click.option("--threads", default="1,2", show_default=True)
@click.option("--repeats", default=3, show_default=True)
@click.option("--out", default=None, help="also write the results as JSON here")
def main(model_path: str, presets: str, threads: str, repeats: int, out: str | None) -> None:
    rows = []
    for name, model in models(model_path, [p for p in presets.split(",") if p]):
        size = sum(p.numel() for p in model.parameters()) / 1e6
        for n in (int(t) for t in threads.split(",")):
            torch.set_num_threads(n)
            row = {"model": name, "resolution": int(model.resolution),
                   "params_m": round(size, 2), "threads": n, **time_actions(model, repeats)}
            rows.append(row)
            print(f"{name:32s} {row['resolution']:5d} px {size:7.2f} M params, {n} thread(s): "
                  + ", ".join(f"{k} {row[k]:.3f} s" for k in ("reconstruct", "edit", "mix",
                                                             "sample")), flush=True)
    if out:
        Path(out).write_text(json.dumps(rows, indent=1) + "\n")
    return None


if __name__ == "__main__":
    main()
