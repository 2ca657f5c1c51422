"""Stage `shard`: write the configured image source (params `data`) as webdataset shards.

    python stages/shard.py --params params.yaml --out data/shards
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

# This checkout's `alae`, even under `dvc exp run --temp` where an installed copy would be stale.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click  # noqa: E402

from alae.config import load_params  # noqa: E402
from alae.data import write_shards  # noqa: E402
from alae.errors import exits_cleanly  # noqa: E402
from alae.tracking import pipeline_run  # noqa: E402


SHOWN_SKIPPED = 5


def report_skipped(manifest: dict) -> None:
    """Name the first skipped source files and why on stderr: a skip is a decision about the
    user's data (an empty or undecodable file), so it is said, not only kept in the manifest."""
    skipped = manifest["skipped"]
    for entry in skipped[:SHOWN_SKIPPED]:
        click.echo(f"shard: skipped {Path(manifest['source_path']) / entry['path']}: "
                   f"{entry['reason']}", err=True)
    if len(skipped) > SHOWN_SKIPPED:
        click.echo(f"shard: ... and {len(skipped) - SHOWN_SKIPPED} more skipped files "
                   "(listed under \"skipped\" in manifest.json)", err=True)


@click.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True,
              type=click.Path(dir_okay=False), help="params file (its `data` section is used)")
@click.option("--out", "out_dir", default="data/shards", show_default=True,
              type=click.Path(file_okay=False), help="shard folder to write (replaced atomically)")
@exits_cleanly
def main(params_path: str, out_dir: str) -> None:
    params = load_params(params_path)
    start = time.monotonic()
    with pipeline_run(params, "shard") as run:
        manifest = write_shards(params.data, out_dir)
        run.log_metrics({f"data_{split}_images": n for split, n in manifest["counts"].items()})
        run.log_artifact(Path(out_dir) / "manifest.json", "data")
    report_skipped(manifest)
    counts = manifest["counts"]
    labels = manifest["label_names"]
    n_shards = sum(len(v) for v in manifest["shards"].values())
    click.echo(f"shard: {counts['train']} train + {counts['test']} test images from "
               f"{manifest['source']} at {manifest['resolution']}px x{manifest['channels']}, "
               f"{len(labels) if labels else 'no'} labels, {len(manifest['skipped'])} skipped, "
               f"{n_shards} shards in {out_dir} ({time.monotonic() - start:.1f} s)")


if __name__ == "__main__":
    main()
