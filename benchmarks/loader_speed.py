"""Training-loader throughput with 0, 1, 2, ... decoding worker processes (`data.loader_workers`),
and how many such cores keep a GPU fed.

    python benchmarks/loader_speed.py --shards DIR [--workers 0,1,2] [--images 2000]
    make bench-loader            # builds 1000 synthetic 256 px images and their shards first

For each worker count: wall img/s, and img per CPU-second (the training process and its workers
together, from /proc over the timed window): the per-core rate, which does not depend on what
else shares the machine as much as wall time does. The stream is the training one
(`train_batches`: seeded shuffle, default 10,000-sample buffer, the batches a run draws); the
first batches (worker start-up, the buffer's first fill) are not timed. Peak memory: the summed
Pss of the training process and its workers over the whole measurement (benchmarks/memory.py);
the shuffle buffer of undecoded samples grows by one per image drawn, so the peak is reached only
after ~`--shuffle-buffer` images (`--images 12000` to see it with the default buffer).

Then the consumption side: FLOP per image of one training step at the top level of a preset
(default celeba-hq256), counted as `make bench` counts them (`alae.cost`, torch's FLOP formulas,
on the meta device: R1 every step, no style mixing), divided into an *assumed* achieved GPU rate
(`--tflops`): an estimate, to be replaced by a measured rate. Cores to keep it fed = that
img/s / the measured per-core rate.
Not a test: numbers depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import click  # noqa: E402

from alae.config import DataConfig  # noqa: E402
from alae.cost import level_flops  # noqa: E402
from alae.data import read_manifest, train_batches, write_shards  # noqa: E402
from alae.io import write_json  # noqa: E402
from alae.presets import merged_preset  # noqa: E402
from benchmarks.memory import TreeMemory  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def measure(shards: Path, resolution: int, batch: int, workers: int, images: int,
            shuffle_buffer: int, min_cpu_seconds: float = 0.5) -> dict:
    """Loader speed over at least `images` images and `min_cpu_seconds` of CPU time: CPU time
    is counted in clock ticks, so a short window on a fast machine can read 0 ticks."""
    with TreeMemory() as memory:
        batches = train_batches(shards, resolution, batch, seed=0, workers=workers,
                                shuffle_buffer=shuffle_buffer)
        try:
            for _ in range(max(1, workers) * 2):  # start-up and the buffer's first fill: untimed
                next(batches)
            pids = [os.getpid()] + [p.pid for p in multiprocessing.active_children()]
            cpu0, start, n = [cpu_seconds(p) for p in pids], time.perf_counter(), 0
            cpu = [0.0]
            while n < images or sum(cpu) < min_cpu_seconds:
                n += len(next(batches)[0])
                cpu = [cpu_seconds(p) - c for p, c in zip(pids, cpu0)]
            wall = time.perf_counter() - start
        finally:
            batches.close()
    return {"workers": workers, "images": n, "seconds": round(wall, 2),
            "img_per_s": round(n / wall, 1), "cpu_seconds": round(sum(cpu), 2),
            "cpu_seconds_training_process": round(cpu[0], 2),
            "img_per_cpu_s": round(n / sum(cpu), 1), "processes": len(pids),
            "pss_all_mib": round(memory.peak_mib)}


@click.command()
@click.option("--shards", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="shard folder (built from --build-from when it has no manifest)")
@click.option("--build-from", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="image folder to shard into --shards first (at --resolution, RGB)")
@click.option("--resolution", type=int, default=None, help="loader output (default: stored)")
@click.option("--batch", default=16, show_default=True,
              help="batch size (16: celeba-hq256's top level)")
@click.option("--workers", default="0,1,2", show_default=True, help="comma list of counts")
@click.option("--images", default=2000, show_default=True, help="timed images per count")
@click.option("--shuffle-buffer", default=10000, show_default=True)
@click.option("--preset", default="celeba-hq256", show_default=True,
              help="whose top level the GPU estimate is for")
@click.option("--tflops", default=250.0, show_default=True,
              help="ASSUMED achieved TFLOP/s of the GPU step (estimate, not a measurement)")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="results JSON")
def main(shards: Path, build_from: Path | None, resolution: int | None, batch: int, workers: str,
         images: int, shuffle_buffer: int, preset: str, tflops: float, out: str | None) -> None:
    if not (shards / "manifest.json").is_file():
        if build_from is None:
            raise click.UsageError(f"{shards} has no manifest.json: pass --build-from FOLDER")
        write_shards(DataConfig(source="folder", path=str(build_from), channels=3,
                                resolution=resolution or 256), shards)
    manifest = read_manifest(shards)
    resolution = resolution or int(manifest["resolution"])
    counts = [int(w) for w in workers.split(",")]
    print(f"loader: {shards} ({manifest['counts']['train']} train images at "
          f"{manifest['resolution']} px), output {resolution} px, batch {batch}, "
          f"{len(os.sched_getaffinity(0))} cores")
    print("| workers | img/s | img per CPU-second | CPU share of the training process | "
          "peak Pss, all processes |")
    print("|---|---|---|---|---|")
    rows = []
    for w in counts:
        row = measure(shards, resolution, batch, w, images, shuffle_buffer)
        rows.append(row)
        share = row["cpu_seconds_training_process"] / row["cpu_seconds"]
        print(f"| {w} | {row['img_per_s']:.0f} | {row['img_per_cpu_s']:.0f} | {share:.0%} | "
              f"{row['pss_all_mib']} MiB |", flush=True)

    params = merged_preset(preset, ROOT / "params.yaml")
    top = level_flops(params)[-1]
    consume = tflops * 1e12 / top
    per_core = rows[-1]["img_per_cpu_s"]
    cores = consume / per_core
    print(f"\n{preset} top level ({params.data.resolution} px): {top / 1e9:.0f} GFLOP per image "
          f"per training step; at an ASSUMED {tflops:g} TFLOP/s achieved on the GPU that is "
          f"{consume:.0f} img/s (an estimate), which needs {cores:.1f} cores decoding at "
          f"{per_core:.0f} img per CPU-second ({counts[-1]} workers' rate here)")
    if out:
        write_json(out, {"shards": str(shards), "resolution": resolution, "batch": batch,
                         "loader": rows, "gpu_estimate": {
                             "preset": preset, "gflop_per_img_top_level": round(top / 1e9, 1),
                             "assumed_tflop_per_s": tflops, "img_per_s": round(consume),
                             "cores_to_feed": round(cores, 1)}})
        print(f"-> {out}")


if __name__ == "__main__":
    main()
