"""DVC stage `train`: the three-step ALAE training; writes the EMA model and the per-tick table."""
import sys
from pathlib import Path

# This checkout's `alae`, even under `dvc exp run --temp` where an installed copy would be stale.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click  # noqa: E402

from alae.checkpoint import save_model  # noqa: E402
from alae.config import ConfigError, load_params  # noqa: E402
from alae.data import read_manifest  # noqa: E402
from alae.errors import exits_cleanly  # noqa: E402
from alae.io import write_csv  # noqa: E402
from alae.tracking import pipeline_run  # noqa: E402
from alae.train.loop import train  # noqa: E402

TICK_METRICS = ("loss_d", "loss_g", "lae", "img_per_s")


@click.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--shards", default="data/shards", show_default=True)
@click.option("--out", default="models/alae.pt", show_default=True)
@click.option("--plots", default="plots/train.csv", show_default=True)
@exits_cleanly
def main(params_path: str, shards: str, out: str, plots: str) -> None:
    params = load_params(params_path)
    manifest = read_manifest(shards)
    if manifest["channels"] != params.data.channels:
        raise ConfigError(f"data.channels: {params.data.channels} does not match the "
                          f"{manifest['channels']}-channel shards in {shards}")
    with pipeline_run(params, "train") as run:
        result = train(params, shards, report=lambda nimg, row: run.log_metrics(
            {k: row[k] for k in TICK_METRICS}, step=nimg))
        save_model(out, result.ema, params, meta={
            "run_id": run.run_id, "run_key": run.key, "images_seen": result.images_seen})
        write_csv(plots, result.history)
        run.log_metrics({"train_seconds": result.seconds,
                         "train_img_per_s": result.images_seen / result.seconds})
        run.log_artifact(params_path)
        run.log_artifact(out, "model")
        run.log_artifact(plots, "plots")
    click.echo(f"trained {result.images_seen} images in {result.seconds:.0f} s "
               f"({result.images_seen / result.seconds:.0f} img/s) -> {out}")


if __name__ == "__main__":
    main()
