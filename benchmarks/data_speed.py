"""`make bench-data`: the shard stage at scale, on the synthetic 256 px colour folder of
scripts/synth_images.py (data/synth/bench-30k for `--count 30000`, built first when missing).

Each (workers, encoding) configuration runs the shard stage's own code (`write_shards`, folder
source at 256 px RGB) in a fresh child process, so that its peak memory is its own:

- `img/s`: images written over the whole call's wall time (the folder scan, which reads every
  file's header, included: it is part of what the stage costs).
- `MB/img`: the shards' bytes over the images written.
- `rss main`: peak resident memory of the child's own process (`resource.getrusage`,
  RUSAGE_SELF: reading the folder, writing the tars; about 0.5 GB of it is torch, which
  `alae.data` imports). Not RUSAGE_CHILDREN for the workers: importing torch runs a child
  process whose ru_maxrss (that of the whole parent it was forked from) would hide theirs.
- `pss all`: peak memory of the process and its workers together, as the sum of each one's
  proportional set size (Pss in /proc/<pid>/smaps_rollup: pages shared after the fork counted
  once in all), sampled by a thread (benchmarks/memory.py).
- `decode img/s`: the first DECODE_IMAGES images of the written train shards decoded as the
  loader decodes them (`sample_image`, then the uint8 array), in one process on one core; the
  best of DECODE_REPEATS passes, since other work on the machine only ever slows a pass down.

Prints a table and writes (or adds its rows to) benchmarks/data_results.json. Not a test: the
numbers depend on the machine and on what else runs on it.

    python -m benchmarks.data_speed --count 3000 --workers 1,2 --encodings png
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import click
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alae.config import DataConfig  # noqa: E402
from alae.data import read_manifest, write_shards  # noqa: E402
from alae.data.format import raw_samples, sample_image, shard_paths  # noqa: E402
from alae.errors import UserError, exits_cleanly  # noqa: E402
from alae.io import write_json  # noqa: E402
from benchmarks.memory import TreeMemory  # noqa: E402

RESOLUTION = 256
SHARD_SIZE = 1000
DECODE_IMAGES = 500
DECODE_REPEATS = 3
RESULTS = ROOT / "benchmarks" / "data_results.json"
COLUMNS = [("workers", "workers", "{}"), ("encoding", "encoding", "{}"),
           ("images", "images", "{}"), ("img_per_s", "img/s", "{:.1f}"),
           ("mb_per_img", "MB/img", "{:.4f}"), ("shard_mb", "shards MB", "{:.1f}"),
           ("rss_main_mib", "rss main MiB", "{:.0f}"), ("pss_all_mib", "pss all MiB", "{:.0f}"),
           ("decode_img_per_s", "decode img/s", "{:.0f}")]


def decode_rate(shards: Path, images: int = DECODE_IMAGES) -> float:
    """Images per second decoded from `shards` as the loader does, in this process."""
    manifest = read_manifest(shards)
    raw = list(islice(raw_samples(shard_paths(shards, manifest, "train"), manifest), images))
    best = float("inf")
    for _ in range(DECODE_REPEATS):
        start = time.perf_counter()
        for sample in raw:
            np.asarray(sample_image(sample, manifest))
        best = min(best, time.perf_counter() - start)
    return len(raw) / best


def measure(folder: Path, workers: int, encoding: str) -> dict:
    """One configuration, in this process (the parent runs it as a fresh child)."""
    cfg = DataConfig(source="folder", path=str(folder), resolution=RESOLUTION, channels=3,
                     shard_size=SHARD_SIZE, workers=workers, encoding=encoding)
    with tempfile.TemporaryDirectory(prefix="bench-data-", dir=folder.parent) as tmp:
        out = Path(tmp) / "shards"
        with TreeMemory() as memory:
            start = time.perf_counter()
            manifest = write_shards(cfg, out)
            seconds = time.perf_counter() - start
        images = sum(manifest["counts"].values())
        size = sum(p.stat().st_size for p in out.glob("*.tar"))
        decode = decode_rate(out)
    return {"workers": workers, "encoding": manifest.get("encoding", "png"), "images": images,
            "seconds": seconds, "img_per_s": images / seconds, "shard_mb": size / 1e6,
            "mb_per_img": size / 1e6 / images,
            "rss_main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "pss_all_mib": memory.peak_mib,
            "decode_img_per_s": decode}


def bench_folder(count: int, folder: str | None) -> Path:
    """The synthetic folder of `count` images (made by scripts/synth_images.py when missing)."""
    name = f"bench-{count // 1000}k" if count % 1000 == 0 else f"bench-{count}"
    path = Path(folder) if folder else ROOT / "data" / "synth" / name
    if path.is_dir():
        found = sum(1 for p in path.iterdir() if p.suffix in (".jpg", ".png"))
        if found != count:
            raise UserError(f"{path}: holds {found} images, not {count} (an interrupted build? "
                            "remove the folder and run again)")
        return path
    command = [sys.executable, str(ROOT / "scripts" / "synth_images.py"), "--out", str(path),
               "--count", str(count), "--size", str(RESOLUTION)]
    click.echo(" ".join(command[1:]), err=True)
    if subprocess.run(command).returncode != 0:
        raise UserError(f"{path}: scripts/synth_images.py failed (its error is above)")
    return path


def table(rows: list[dict]) -> str:
    lines = [" | ".join(title for _, title, _ in COLUMNS)]
    for row in rows:
        lines.append(" | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS))
    return "\n".join(lines)


@click.command()
@click.option("--count", default=30000, show_default=True, type=click.IntRange(min=10),
              help="images in the synthetic folder (data/synth/bench-<count/1000>k)")
@click.option("--folder", default=None, type=click.Path(file_okay=False),
              help="another folder of images instead (made by scripts/synth_images.py)")
@click.option("--workers", "workers_list", default="1,2", show_default=True,
              help="comma-separated data.workers values")
@click.option("--encodings", default="png,jpeg,npy", show_default=True,
              help="comma-separated data.encoding values")
@click.option("--out", default=str(RESULTS), show_default=True, type=click.Path(dir_okay=False),
              help="JSON file; rows of the same folder, workers and encoding are replaced")
@click.option("--one", is_flag=True, hidden=True, help="measure one configuration, print JSON")
@exits_cleanly
def main(count: int, folder: str | None, workers_list: str, encodings: str, out: str,
         one: bool) -> None:
    try:
        workers = [int(w) for w in workers_list.split(",")]
    except ValueError:
        raise UserError(f"--workers: {workers_list!r} is not a comma-separated list of integers"
                        ) from None
    if one:
        click.echo(json.dumps(measure(Path(folder), workers[0], encodings)))
        return
    folder = str(bench_folder(count, folder))
    rows = []
    for encoding in encodings.split(","):
        for w in workers:
            child = subprocess.run([sys.executable, "-m", "benchmarks.data_speed", "--one",
                                    "--folder", folder, "--workers", str(w),
                                    "--encodings", encoding],
                                   cwd=ROOT, stdout=subprocess.PIPE, text=True)
            if child.returncode != 0:
                raise UserError(f"bench-data: workers={w} encoding={encoding} failed "
                                f"(exit {child.returncode}; its error is above)")
            row = json.loads(child.stdout.strip().splitlines()[-1])
            row["folder"] = str(Path(folder).resolve())
            rows.append(row)
            click.echo(table([row]).splitlines()[-1], err=True)
    click.echo(table(rows))
    path = Path(out)
    kept = json.loads(path.read_text())["rows"] if path.is_file() else []
    done = {(r["folder"], r["workers"], r["encoding"]) for r in rows}
    kept = [r for r in kept if (r["folder"], r["workers"], r["encoding"]) not in done]
    write_json(path, {"rows": kept + rows})
    click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
