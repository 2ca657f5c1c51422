"""DVC stage `train`: the three-step ALAE training (progressive for the StyleALAE), resumable.

The run itself (torchrun launch, resume from the run's working folder, MLflow records, quick
FID) is `alae.train.run.train_pipeline`; this script only names the files.
"""
import sys
from pathlib import Path

# This checkout's `alae`, even under `dvc exp run --temp` where an installed copy would be stale.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click  # noqa: E402

from alae.errors import exits_cleanly  # noqa: E402
from alae.train.run import train_pipeline  # noqa: E402


@click.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--shards", default="data/shards", show_default=True)
@click.option("--featurenet", default="models/featurenet.pt", show_default=True,
              help="classifier for the quick FID (train.fid_every_kimg)")
@click.option("--out", default="models/alae.pt", show_default=True)
@click.option("--plots", default="plots/train.csv", show_default=True)
@exits_cleanly
def main(params_path: str, shards: str, featurenet: str, out: str, plots: str) -> None:
    # train.nproc > 1: this same command again, under torchrun
    relaunch = [str(Path(__file__).resolve()), *sys.argv[1:]]
    done = train_pipeline(params_path, shards, featurenet, out, plots, relaunch=relaunch)
    if done is not None:  # rank 0
        rate = done.images_seen / max(done.seconds, 1e-9)
        click.echo(f"trained {done.images_seen} images in {done.seconds:.0f} s ({rate:.0f} img/s)"
                   f" -> {done.out}")


if __name__ == "__main__":
    main()
