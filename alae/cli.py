"""The `alae` command for people using a trained model (`alae --help`)."""
from __future__ import annotations

import click
import torch

from alae import __version__
from alae.checkpoint import load_model
from alae.config import FiguresConfig
from alae.errors import exits_cleanly
from alae.figures import samples_figure, save_png


@click.group()
@click.version_option(__version__)
def main() -> None:
    """Use a trained ALAE model (models/alae.pt, written by the pipeline's train stage)."""


@main.command()
@click.option("--model", "model_path", default="models/alae.pt", show_default=True,
              type=click.Path(dir_okay=False), help="model file written by the train stage")
@click.option("-n", "count", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True)
@click.option("--columns", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cuda")
@click.argument("out", type=click.Path(dir_okay=False))
@exits_cleanly
def generate(model_path: str, count: int, seed: int, columns: int, device: str, out: str) -> None:
    """Write a grid of COUNT generated images (fixed SEED) to OUT (PNG)."""
    model, _, _ = load_model(model_path, torch.device(device))
    save_png(samples_figure(model, FiguresConfig(seed=seed, samples=count, columns=columns)), out)
    click.echo(f"wrote {count} samples to {out}")


if __name__ == "__main__":
    main()
