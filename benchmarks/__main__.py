"""`make bench` / `python -m benchmarks`: training, data-loading and evaluation speed, and peak
memory, with every fast path measured side by side against the plain path in the same run.

Plain path: fp32, default (NCHW) memory format, R1 every step, no compilation, and the
reference's layer order (`model.fused_resample: false`: 2x upsample then 3x3 conv in G, 3x3 conv
then 2x2 pool in E). Variants:
- `fused_resample`: each of those pairs as one stride-2 (transposed) convolution; the same sums
  in 4/9 of the multiply-adds (tests check equality in float64); the default in params.yaml.
- `channels_last`: NHWC convolutions. `fused+channels_last`: both.
- `bf16` (autocast): measured only where the hardware has bf16 units or a GPU; elsewhere it is
  emulated (38x slower on this project's CI CPU) and the notes say so.
- `fused+2_threads` (`2_threads` for the MLP): on two threads; the plain path and the other
  variants run on `--threads` (default 1, as `train.threads`).
- `lazy_r1`: R1 every 4th step, times 4 (StyleGAN2's, not the paper's): reported apart, since it
  is not the faithful setting. Its rate is that of one 4-step cycle, from timed R1 and non-R1
  steps.
Training speed is the three updates and the EMA together (`alae.train.steps.train_step`, what the
loop runs), on synthetic images (the data path is measured on its own), mid-transition where a
level has one. Variants take turns in rounds (each round times every variant once), so a machine
that slows down mid-run slows all of them alike; img/s is total images over total timed seconds.

FLOP/img counts the multiply-adds (x2) of every matrix and convolution op of one step, backward
and R1's double backward included (torch's flop registry); GFLOP/s against this machine's
measured fp32 matmul rate (2048x2048, same threads) says how much of the core a step uses: a
step near that rate can only get faster by doing fewer FLOPs or cheaper ones (bf16).

Prints a table and writes benchmarks/results.json (keys containing `ratio` are variant / plain).
Not a test: numbers depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

import click
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alae.presets import merged_preset  # noqa: E402
from alae.config import DataConfig, Params, load_params  # noqa: E402
from alae.cost import FlopCount, matmul_rate  # noqa: E402
from alae.data import train_batches, write_shards  # noqa: E402
from alae.io import write_json  # noqa: E402
from alae.nn import Level, build_model  # noqa: E402
from alae.train.ema import make_ema  # noqa: E402
from alae.train.loop import blend_real  # noqa: E402
from alae.train.precision import Precision  # noqa: E402
from alae.train.schedule import Schedule  # noqa: E402
from alae.train.steps import make_optimizers, train_step  # noqa: E402

LAZY_INTERVAL = 4
VARIANTS = {
    "plain": {},
    "fused_resample": {"fused_resample": True},
    "channels_last": {"channels_last": True},
    "fused+channels_last": {"fused_resample": True, "channels_last": True},
    "bf16": {"precision": "bf16"},
    "lazy_r1": {"r1_interval": LAZY_INTERVAL},
    "fused+2_threads": {"fused_resample": True, "threads": 2},
    "2_threads": {"threads": 2},
}
CONV_ONLY = {"fused_resample", "channels_last", "fused+channels_last", "fused+2_threads"}
MLP_ONLY = {"2_threads"}  # the conv models' two-thread row is fused+2_threads


def has_bf16_units() -> bool:
    """AMX or AVX-512 BF16 on the CPU (what oneDNN uses for fast bf16 matrix work)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def matmul_gflops(threads: int, seconds: float = 1.0) -> float:
    with num_threads(threads):
        return matmul_rate(seconds, size=2048) / 1e9


@contextlib.contextmanager
def num_threads(threads: Optional[int]) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Trial:
    """One variant at one level: its own model, optimizers and images; `run` times whole steps."""

    def __init__(self, params: Params, lod: int, channels_last: bool = False,
                 precision: str = "fp32", r1_interval: int = 1, fused_resample: bool = False,
                 threads: Optional[int] = None, batch: Optional[int] = None,
                 device: str = "cpu"):
        model_cfg = dataclasses.replace(params.model, fused_resample=fused_resample)
        self.cfg = dataclasses.replace(params.train, r1_interval=r1_interval)
        self.device = torch.device(device)
        torch.manual_seed(0)
        self.model = build_model(model_cfg, params.data.channels, params.data.resolution)
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(self.device, memory_format=self.fmt)
        self.ema, self.precision = make_ema(self.model), Precision(precision, self.device)
        schedule = Schedule.from_params(params, self.model.num_levels)
        phase = schedule(schedule.level_start(lod))
        self.batch, self.threads = batch or phase.batch_size, threads
        self.opt = make_optimizers(self.model, phase.lr, self.cfg.beta1, self.cfg.beta2)
        res = self.model.level_resolution(lod)
        self.level = Level(lod, 0.5 if lod > 0 else 1.0)  # mid-transition above 4x4
        self.real = torch.rand(self.batch, params.data.channels, res, res,
                               device=self.device) * 2 - 1
        self.steps, self.images, self.seconds = 0, 0, 0.0
        self.step_seconds = {True: [], False: []}  # lazy R1: steps with and without the penalty

    def step(self, r1: Optional[bool] = None) -> float:
        """One timed step; `r1` forces a step with or without the penalty (lazy R1 only)."""
        x = blend_real(self.real, self.level.alpha).contiguous(memory_format=self.fmt)
        k = self.cfg.r1_interval
        index = self.steps if r1 is None else (0 if r1 else 1)
        cuda = self.device.type == "cuda"
        with num_threads(self.threads):
            if cuda:
                torch.cuda.synchronize(self.device)
            start = time.perf_counter()
            train_step(self.model, self.ema, self.opt, x, self.level, self.cfg, index,
                       self.precision)
            if cuda:   # the step's kernels ran asynchronously: wait for them before timing
                torch.cuda.synchronize(self.device)
            elapsed = time.perf_counter() - start
        self.step_seconds[index % k == 0].append(elapsed)
        self.steps += 1
        return elapsed

    def run(self, seconds: float) -> None:
        """Until `seconds`, at least one step (lazy R1: steps with and without the penalty in
        turn, at least one of each; `img_per_s` weighs them as a k-step cycle does)."""
        lazy = self.cfg.r1_interval > 1
        spent, timed = 0.0, 0
        while spent < seconds or timed < (2 if lazy else 1):
            spent += self.step(r1=timed % 2 == 0 if lazy else None)
            timed += 1
        self.images += timed * self.batch
        self.seconds += spent

    def img_per_s(self) -> float:
        k = self.cfg.r1_interval
        if k == 1:
            return self.images / self.seconds
        mean = {r1: sum(t) / len(t) for r1, t in self.step_seconds.items()}
        return k * self.batch / (mean[True] + (k - 1) * mean[False])

    def gflop_per_img(self) -> float:
        """Counted on untimed steps (dispatch tracing slows them); lazy R1: a k-step cycle's
        mean. FLOPs per image do not depend on the batch: `level_speeds` counts on batch 2."""
        def count(r1: Optional[bool]) -> int:
            counter = FlopCount()
            with counter:
                self.step(r1)
            return counter.flops

        k = self.cfg.r1_interval
        per_step = count(None) if k == 1 else (count(True) + (k - 1) * count(False)) / k
        self.step_seconds = {True: [], False: []}
        return per_step / self.batch / 1e9


def level_speeds(params: Params, lod: int, variants: dict[str, dict], seconds: float,
                 rounds: int) -> list[dict]:
    trials = {name: Trial(params, lod, **options) for name, options in variants.items()}
    flops = {name: Trial(params, lod, batch=2, **options).gflop_per_img()
             for name, options in variants.items()}
    for trial in trials.values():
        trial.step()  # the first step pays one-off allocations
        trial.step_seconds = {True: [], False: []}
    for _ in range(rounds):
        for trial in trials.values():
            trial.run(seconds)
    rows = []
    plain = trials["plain"].img_per_s()
    for name, trial in trials.items():
        speed = trial.img_per_s()
        rows.append({"variant": name, "threads": trial.threads or torch.get_num_threads(),
                     "img_per_s": round(speed, 2),
                     f"ratio_{name}_vs_plain": round(speed / plain, 3),
                     "gflop_per_img": float(f"{flops[name]:.4g}"),
                     "gflop_per_s": float(f"{flops[name] * speed:.4g}")})
    return rows


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
    from alae.metrics.inception import InceptionFeatures
    from benchmarks.eval_speed import classifier
    from benchmarks.standin import write_standin_weights

    torch.manual_seed(0)
    model = build_model(params.model, params.data.channels,
                        params.data.resolution).eval().requires_grad_(False)
    os.environ["TORCH_HOME"] = str(work / "torch_home")
    write_standin_weights()
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
@click.option("--seconds", default=2.0, show_default=True,
              help="timed seconds per variant and round (at least one step)")
@click.option("--rounds", default=2, show_default=True, help="turns every variant takes")
@click.option("--threads", default=1, show_default=True, help="torch threads (0: torch's default)")
@click.option("--configs", default="mlp,default,mnist", show_default=True,
              help="comma list of: mlp (preset, batch 128), default (params.yaml), mnist (preset)")
@click.option("--levels", default=None, help="comma list of levels of detail (default: all)")
@click.option("--out", default=str(ROOT / "benchmarks" / "results.json"), show_default=True)
def main(params_path: str, seconds: float, rounds: int, threads: int, configs: str,
         levels: Optional[str], out: str) -> None:
    if threads:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    bf16_ok = has_bf16_units() or torch.cuda.is_available()
    all_configs = {"mlp": lambda: merged_preset("mlp", params_path),
                   "default": lambda: load_params(params_path),
                   "mnist": lambda: merged_preset("mnist", params_path)}
    cores = len(os.sched_getaffinity(0))
    if threads != 1 or cores < 2:
        for name in ("fused+2_threads", "2_threads"):  # only meaningful as one thread against two
            del VARIANTS[name]
    peak = {t: matmul_gflops(t) for t in {torch.get_num_threads(), 2} if t <= cores}
    results: dict = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                     "cpu_bf16_units": has_bf16_units(),
                     "matmul_gflop_per_s": {str(t): round(v, 1) for t, v in peak.items()},
                     "train": [], "loader": {}, "notes": []}
    if not bf16_ok:
        results["notes"].append("bf16 not measured: this CPU has no bf16 units (no AMX, no "
                                "AVX-512 BF16), where autocast is emulated and far slower")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 units: "
          f"{has_bf16_units()}, fp32 matmul GFLOP/s: " +
          ", ".join(f"{v:.0f} on {t} thread(s)" for t, v in peak.items()))
    print("| config | lod | res | batch | variant | img/s | ratio vs plain | GFLOP/img | "
          "GFLOP/s | of matmul |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    default_slowest = None
    for name in configs.split(","):
        params = all_configs[name]()
        model = build_model(params.model, params.data.channels, params.data.resolution)
        schedule = Schedule.from_params(params, model.num_levels)
        variants = {v: o for v, o in VARIANTS.items()
                    if (v != "bf16" or bf16_ok)
                    and v not in (MLP_ONLY if model.progressive else CONV_ONLY)}
        wanted = range(model.num_levels) if levels is None else [
            int(lod) for lod in levels.split(",") if int(lod) < model.num_levels]
        for lod in wanted:
            batch = schedule(schedule.level_start(lod)).batch_size
            res = model.level_resolution(lod)
            for row in level_speeds(params, lod, variants, seconds, rounds):
                row = {"config": name, "lod": lod, "resolution": res, "batch": batch, **row}
                results["train"].append(row)
                ratio = row[f"ratio_{row['variant']}_vs_plain"]
                print(f"| {name} | {lod} | {res} | {batch} | {row['variant']} | "
                      f"{row['img_per_s']:.1f} | {ratio:.2f} | {row['gflop_per_img']:.3g} | "
                      f"{row['gflop_per_s']:.1f} | {row['gflop_per_s'] / peak[row['threads']]:.0%} |",
                      flush=True)
            if name == "default":  # the fastest faithful path: what the loader must keep up with
                fastest = max(r["img_per_s"] for r in results["train"][-len(variants):]
                              if r["variant"] != "lazy_r1")
                default_slowest = min(default_slowest or fastest, fastest)

    print("\nfastest faithful path (lazy_r1 excluded) vs plain:")
    results["best_faithful"] = []
    for key in dict.fromkeys((r["config"], r["lod"]) for r in results["train"]):
        rows = [r for r in results["train"] if (r["config"], r["lod"]) == key]
        plain = next(r for r in rows if r["variant"] == "plain")
        best = max((r for r in rows if r["variant"] != "lazy_r1"), key=lambda r: r["img_per_s"])
        ratio = best["img_per_s"] / plain["img_per_s"]
        results["best_faithful"].append({"config": key[0], "lod": key[1],
                                         "variant": best["variant"],
                                         "ratio_best_faithful_vs_plain": round(ratio, 3)})
        print(f"  {key[0]} lod {key[1]}: {ratio:.2f}x ({best['variant']})")

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
        print(f" = {ratio:.0f}x the default model's slowest measured level ({default_slowest:.0f} img/s)")
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
