"""DVC stage `train`: the three-step ALAE training (progressive for the StyleALAE); writes the
model file (EMA networks + training state) and the per-tick table, and logs to MLflow per tick
the losses, img/s and the growing schedule, and a fixed-seed sample grid per level of detail."""
import sys
import tempfile
from pathlib import Path

# This checkout's `alae`, even under `dvc exp run --temp` where an installed copy would be stale.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click  # noqa: E402

from alae.checkpoint import save_model  # noqa: E402
from alae.config import load_params  # noqa: E402
from alae.data import read_manifest  # noqa: E402
from alae.data.fit import check_fits_shards  # noqa: E402
from alae.errors import exits_cleanly  # noqa: E402
from alae.figures import grid, save_png  # noqa: E402
from alae.io import write_csv  # noqa: E402
from alae.tracking import pipeline_run  # noqa: E402
from alae.train.loop import train  # noqa: E402

TICK_METRICS = ("loss_d", "loss_g", "lae", "img_per_s", "lod", "alpha", "resolution", "batch_size")
GRID_COLUMNS = 8


@click.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--shards", default="data/shards", show_default=True)
@click.option("--out", default="models/alae.pt", show_default=True)
@click.option("--plots", default="plots/train.csv", show_default=True)
@exits_cleanly
def main(params_path: str, shards: str, out: str, plots: str) -> None:
    params = load_params(params_path)
    check_fits_shards(params, read_manifest(shards), shards)  # before any work
    with pipeline_run(params, "train") as run, tempfile.TemporaryDirectory() as tmp:
        def snapshot(nimg: int, lod: int, images) -> None:
            rows = [images[i:i + GRID_COLUMNS] for i in range(0, len(images), GRID_COLUMNS)]
            path = Path(tmp) / f"lod{lod}.png"
            save_png(grid(rows, [f"lod {lod}"] + [""] * (len(rows) - 1)), path)
            run.log_artifact(path, "samples")

        result = train(params, shards, snapshot=snapshot, report=lambda nimg, row: run.log_metrics(
            {k: row[k] for k in TICK_METRICS}, step=nimg))
        save_model(out, result.ema, params, training=result.state(), meta={
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
