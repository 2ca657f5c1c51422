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
from alae.data import skipped_lines, write_shards  # noqa: E402
from alae.data.shards import worker_count  # noqa: E402
from alae.errors import exits_cleanly  # noqa: E402
from alae.tracking import pipeline_run  # noqa: E402


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
    # A skip is a decision about the user's data (an empty or undecodable file): said here,
    # not only kept in the manifest.
    for line in skipped_lines(manifest["skipped"], manifest["source_path"], "shard",
                              listed_in="manifest.json"):
        click.echo(line, err=True)
    counts = manifest["counts"]
    labels = manifest["label_names"]
    n_shards = sum(len(v) for v in manifest["shards"].values())
    click.echo(f"shard: {counts['train']} train + {counts['test']} test images from "
               f"{manifest['source']} at {manifest['resolution']}px x{manifest['channels']} "
               f"{manifest.get('encoding', 'png')}, "
               f"{len(labels) if labels else 'no'} labels, {len(manifest['skipped'])} skipped, "
               f"{n_shards} shards in {out_dir} ({time.monotonic() - start:.1f} s, "
               f"{worker_count(params.data.workers)} processes)")


if __name__ == "__main__":
    main()
