"""Options and loaders shared by the `alae` commands (alae/cli.py and the editing commands of
alae/edit/cli.py): one `--model`, `--device`, `--noise` and `--convert`, and one way to load a
model with the images it takes."""
from __future__ import annotations

from pathlib import Path

import click
import torch

from alae.checkpoint import load_model
from alae.devices import NAMES as DEVICE_NAMES
from alae.devices import resolve_device
from alae.nn import ALAE

model_option = click.option("--model", "model_path", default="models/alae.pt", show_default=True,
                            type=click.Path(dir_okay=False),
                            help="model file written by the train stage")
noise_option = click.option("--noise", default="random", show_default=True,
                            type=click.Choice(["const", "random"]),
                            help="G's per-pixel noise: const switches it off, random draws each "
                                 "image's from its own seeded generator")
device_option = click.option("--device", default="auto", show_default=True,
                             help=f"{DEVICE_NAMES}; auto is CUDA when there is one")
convert_option = click.option("--convert", type=click.Choice(["gray", "rgb"]),
                              help="convert the images to grayscale or RGB, the model's kind; "
                                   "without it a colour image for a grayscale model is refused "
                                   "(a folder's is passed over and named)")


def load_on_device(model_path: str, device: str) -> tuple[ALAE, torch.device]:
    """The model on the device the option names, which is checked first: a GPU that is not
    there is its own error, not a failure to load the file."""
    where = resolve_device(device, "--device")
    model, _, _ = load_model(model_path, where)
    return model, where


def model_and_images(model_path: str, device: str, files: list[Path], convert: str | None,
                     given: tuple[str, ...] | None = None
                     ) -> tuple[ALAE, torch.Tensor, list[int], str]:
    """The model, the images it takes, which of `files` they are, and a note for the command's
    message (see images_for)."""
    model, where = load_on_device(model_path, device)
    return (model, *images_for(model, where, files, convert, given))


def images_for(model: ALAE, where: torch.device, files: list[Path], convert: str | None,
               given: tuple[str, ...] | None = None) -> tuple[torch.Tensor, list[int], str]:
    """The images of `files` that `model` takes, on `where`; which of `files` they are; and a
    note for the command's message. Files found inside the folders among `given` (the command's
    arguments) that are refused are passed over, each named on stderr; a refused file named
    itself stops the command, as does every refused file when `given` is None."""
    from alae.images import load_usable

    in_folders = set(files) - {Path(p) for p in given} if given is not None else set()
    loaded = load_usable(files, model.resolution, model.channels, convert, in_folders)
    for line in loaded.refused:
        click.echo(f"skipped: {line}", err=True)
    for line in loaded.warnings:
        click.echo(f"warning: {line}", err=True)
    notes = [f"--convert {convert}: {loaded.converted} converted"] if convert else []
    notes += [f"{len(loaded.refused)} refused images skipped"] if loaded.refused else []
    note = f" ({'; '.join(notes)})" if notes else ""
    return loaded.images.to(where), loaded.kept, note
