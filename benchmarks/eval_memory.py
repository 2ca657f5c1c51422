"""Peak memory and wall time of the evaluate stage on large shards (issue: real datasets; the
bound to keep is 4 GB at 256 px on 30k images).

    python -m benchmarks.eval_memory --shards DIR [--preset celeba-hq256] [--widths 2,16]

Runs `stages/evaluate.py` itself, as DVC would, in a child process on the shards given (their
resolution and channels), with the default `evaluate` params in the self-supervised featurenet's
space (what an unlabelled folder gets); a thread samples the summed Pss of the child and its
children (benchmarks/memory.py). The model is the preset's architecture, freshly initialised and
narrowed (`--widths START,MAX` channels, as the 256 px pipeline test; `--widths preset` keeps the
preset's: a CPU cannot generate 10,000 images of the full-width 256 px model in minutes); the
featurenet an untrained selfsup one. Memory and cost do not depend
on the weights, so its metric values mean nothing and are not printed. What the numbers leave out:
the activations of a full-width model, which grow with `evaluate.batch_size` (`--batch-size`).
Not a test: the numbers depend on the machine.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alae.checkpoint import save_model  # noqa: E402
from alae.config import merge_params, parse_params  # noqa: E402
from alae.data import read_manifest  # noqa: E402
from alae.errors import UserError, exits_cleanly  # noqa: E402
from alae.featurenet import PROJECTION, Featurenet, save_featurenet  # noqa: E402
from alae.nn import build_model  # noqa: E402
from alae.nn.alae import Level  # noqa: E402
from alae.presets import preset_path  # noqa: E402
from benchmarks.memory import TreeMemory  # noqa: E402


def write_inputs(work: Path, shards: Path, preset: str, widths: tuple[int, int] | None,
                 batch_size: int | None, num_images: int | None) -> Path:
    """params.yaml, models/alae.pt and models/featurenet.pt for the evaluate stage, in `work`."""
    manifest = read_manifest(shards)
    channels, resolution = int(manifest["channels"]), int(manifest["resolution"])
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    over = {"data": {"resolution": resolution, "channels": channels},
            "featurenet": {"kind": "selfsup"},
            "evaluate": {"features": "selfsup", "device": "cpu"}}
    if widths:
        over["model"] = {"start_channels": widths[0], "max_channels": widths[1]}
    if batch_size:
        over["evaluate"]["batch_size"] = batch_size
    if num_images:   # a smaller run (the test's): fewer samples and PPL pairs
        over["evaluate"].update(num_images=num_images, ppl_samples=num_images)
    raw = merge_params(merge_params(raw, yaml.safe_load(preset_path(preset).read_text())), over)
    params = parse_params(raw)
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (work / "models").mkdir()
    torch.manual_seed(0)
    model = build_model(params.model, channels, resolution).eval()
    model.set_level(Level(model.num_levels - 1, 1.0))   # evaluated at the full resolution
    save_model(work / "models" / "alae.pt", model, params, meta={"run_key": "eval-memory"})
    net = Featurenet(channels, resolution, PROJECTION, params.featurenet.features, kind="selfsup")
    save_featurenet(net.eval(), work / "models" / "featurenet.pt")
    return work


@click.command()
@click.option("--shards", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="shard folder (e.g. `make bench-data`'s 30k images sharded at 256 px)")
@click.option("--preset", default="celeba-hq256", show_default=True,
              help="whose architecture the model has")
@click.option("--widths", default="2,16", show_default=True,
              help="the model's START,MAX channels, or `preset` for the preset's")
@click.option("--batch-size", type=int, default=None, help="evaluate.batch_size (default: params)")
@click.option("--num-images", type=int, default=None,
              help="evaluate.num_images and ppl_samples (default: params)")
@exits_cleanly
def main(shards: Path, preset: str, widths: str, batch_size: int | None,
         num_images: int | None) -> None:
    if not (shards / "manifest.json").is_file():
        raise UserError(f"{shards}: no manifest.json (shard a folder first: `make bench-data` "
                        "and the shard stage, or benchmarks/loader_speed.py --build-from)")
    with tempfile.TemporaryDirectory(prefix="eval-memory-") as tmp:
        narrow = None if widths == "preset" else tuple(int(w) for w in widths.split(","))
        work = write_inputs(Path(tmp), shards.resolve(), preset, narrow, batch_size, num_images)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
               "DVC_ROOT": str(work)}
        cmd = [sys.executable, str(ROOT / "stages" / "evaluate.py"), "--params", "params.yaml",
               "--model", "models/alae.pt", "--featurenet", "models/featurenet.pt",
               "--shards", str(shards.resolve()), "--out", "eval.json"]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        with TreeMemory(proc.pid) as memory:
            _, err = proc.communicate()
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise UserError(f"the evaluate stage failed: {err.strip().splitlines()[-1]}")
        params = yaml.safe_load((work / "params.yaml").read_text())
    manifest = read_manifest(shards)
    ev = params["evaluate"]
    print(f"evaluate stage on {shards} ({manifest['counts']['train']} train / "
          f"{manifest['counts']['test']} test images at {manifest['resolution']} px), "
          f"{preset} architecture, channels {params['model']['start_channels']} -> "
          f"{params['model']['max_channels']}, "
          f"num_images {ev['num_images']}, batch {ev['batch_size']}, "
          f"{len(os.sched_getaffinity(0))} cores: {seconds:.0f} s, "
          f"peak Pss {memory.peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
