"""The `alae` command for people using a trained model (`alae --help`), and `alae preset`,
which writes a reference configuration into params.yaml."""
from __future__ import annotations

from pathlib import Path

import click
import torch

from alae import __version__
from alae.checkpoint import load_model
from alae.config import FiguresConfig
from alae.devices import NAMES as DEVICE_NAMES
from alae.devices import resolve_device
from alae.errors import exits_cleanly
from alae.figures import samples_figure
from alae.io import atomic_open
from alae.nn import ALAE
from alae.presets import apply_preset, preset_note


@click.group()
@click.version_option(__version__)
def main() -> None:
    """Use a trained ALAE model (models/alae.pt, written by the pipeline's train stage)."""


model_option = click.option("--model", "model_path", default="models/alae.pt", show_default=True,
                            type=click.Path(dir_okay=False),
                            help="model file written by the train stage")
device_option = click.option("--device", default="auto", show_default=True,
                             help=f"{DEVICE_NAMES}; auto is CUDA when there is one")


def _load(model_path: str, device: str) -> tuple[ALAE, torch.device]:
    """The model on the device the option names, which is checked first: a GPU that is not
    there is its own error, not a failure to load the file."""
    where = resolve_device(device, "--device")
    model, _, _ = load_model(model_path, where)
    return model, where


@main.command()
@model_option
@click.option("-n", "count", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True)
@click.option("--columns", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--psi", default=None, type=click.FloatRange(0, 1),
              help="truncation towards the average w (default: none)")
@click.option("--cutoff", default=8, show_default=True, type=click.IntRange(min=1),
              help="style slots the truncation applies to")
@device_option
@click.argument("out", type=click.Path(dir_okay=False))
@exits_cleanly
def generate(model_path: str, count: int, seed: int, columns: int, psi: float | None,
             cutoff: int, device: str, out: str) -> None:
    """Write a grid of COUNT generated images (fixed SEED) to OUT, in the format its suffix
    names (.png, .jpg, .webp, ...)."""
    from alae.images import image_format, save_image

    image_format(out)
    model, _ = _load(model_path, device)
    cfg = FiguresConfig(seed=seed, samples=count, columns=columns, psi=psi, cutoff=cutoff)
    save_image(samples_figure(model, cfg, truncate=psi is not None), out)
    click.echo(f"wrote {count} samples to {out}")


@main.command()
@click.argument("name")
@click.option("--params", "params_path", default="params.yaml", show_default=True,
              type=click.Path(dir_okay=False), help="params file to write the preset into")
@exits_cleanly
def preset(name: str, params_path: str) -> None:
    """Write preset NAME (presets/NAME.yaml: mlp, mnist, celeba-hq256, ffhq) into params.yaml."""
    params, changed = apply_preset(name, params_path)
    for line in changed:
        click.echo(f"  {line}")
    click.echo(f"wrote preset {name} into {params_path} ({len(changed)} values changed)")
    note = preset_note(name, params)
    if note:
        click.echo(f"note: {note}", err=True)



@main.command()
@click.argument("path_a", type=click.Path())
@click.argument("path_b", type=click.Path())
@click.option("--features", default="classifier", show_default=True,
              type=click.Choice(["classifier", "inception"]),
              help="feature space: the featurenet (offline) or pytorch-fid's Inception")
@click.option("--featurenet", default="models/featurenet.pt", show_default=True,
              type=click.Path(dir_okay=False), help="the classifier space's network")
@click.option("--dims", default=2048, show_default=True,
              type=click.Choice(["64", "192", "768", "2048"]), callback=lambda c, p, v: int(v),
              help="Inception block, as pytorch-fid's --dims (2048, pool3, is the standard)")
@click.option("--batch-size", default=50, show_default=True, type=click.IntRange(min=1))
@device_option
@click.option("--save-stats", is_flag=True,
              help="write PATH_A's statistics to the .npz PATH_B instead (as pytorch-fid)")
@exits_cleanly
def fid(path_a: str, path_b: str, features: str, featurenet: str, dims: int, batch_size: int,
        device: str, save_stats: bool) -> None:
    """FID between PATH_A and PATH_B, each a folder of images or an .npz with mu and sigma: the
    command shape of `python -m pytorch_fid`. The output line names the feature space; classifier
    numbers are not comparable with Inception FIDs in papers."""
    from alae.metrics.features import load_extractor, space_name
    from alae.metrics.folder import describe, fid_of_paths, save_path_stats

    space = space_name(features, dims)

    def extractor():
        return load_extractor(features, featurenet, resolve_device(device, "--device"), dims)

    if save_stats:
        stats = save_path_stats(path_a, path_b, space, extractor(), batch_size)
        click.echo(f"saved statistics of {stats.n} images ({space} features) to {path_b}")
        return
    value, meta = fid_of_paths(path_a, path_b, space, extractor, batch_size)
    click.echo(f"FID:  {value}  ({describe(space, meta)})")


# --- using a trained model on one's own images -----------------------------------------------
def _model_and_images(model_path: str, device: str, files: list[Path]
                      ) -> tuple[ALAE, torch.Tensor]:
    from alae.images import load_images

    model, where = _load(model_path, device)
    return model, load_images(files, model.resolution, model.channels).to(where)


@main.command()
@model_option
@click.argument("images", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="codes file (.npy, one w per image); the file names go to OUT.txt")
@device_option
@exits_cleanly
def encode(model_path: str, images: tuple[str, ...], out: str, device: str) -> None:
    """Encode IMAGES (files or folders) into W: one code per image."""
    import numpy as np

    from alae.images import expand

    files = [path for path, _ in expand(images)]
    model, x = _model_and_images(model_path, device, files)
    with torch.no_grad():
        w = model.encode(x).cpu().numpy()
    with atomic_open(out, "wb") as f:
        np.save(f, w)
    with atomic_open(str(out) + ".txt", "w") as f:
        f.write("".join(f"{p}\n" for p in files))
    click.echo(f"encoded {len(files)} images to {out} ({w.shape[1]}-d), names in {out}.txt")


@main.command()
@model_option
@click.argument("images", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output folder")
@device_option
@exits_cleanly
def reconstruct(model_path: str, images: tuple[str, ...], out: str, device: str) -> None:
    """Write G(E(x)) of each of IMAGES to OUT at the model's resolution, as PNG: a file given as
    OUT/<name>.png, a folder's images as OUT/<path inside the folder>.png."""
    from alae.images import expand, output_paths, save_image, to_image

    found = expand(images)
    outs = output_paths(found, out, ".png")
    model, x = _model_and_images(model_path, device, [path for path, _ in found])
    torch.manual_seed(0)
    with torch.no_grad():
        rec = model.reconstruct(x)
    for path, r in zip(outs, rec):
        save_image(to_image(r), path)
    click.echo(f"reconstructed {len(outs)} images into {out}")


@main.command()
@model_option
@click.argument("image_a", type=click.Path(exists=True, dir_okay=False))
@click.argument("image_b", type=click.Path(exists=True, dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--steps", default=8, show_default=True, type=click.IntRange(min=2))
@device_option
@exits_cleanly
def interpolate(model_path: str, image_a: str, image_b: str, out: str, steps: int,
                device: str) -> None:
    """Decode E(A)..E(B) linearly interpolated in W, in one row: A, the steps, B; OUT's suffix
    names the format."""
    from alae.figures import grid, lerp_codes
    from alae.images import image_format, save_image

    image_format(out)
    model, x = _model_and_images(model_path, device, [Path(image_a), Path(image_b)])
    torch.manual_seed(0)
    with torch.no_grad():
        wa, wb = model.encode(x)
        row = torch.cat([x[:1], model.decode(lerp_codes(wa, wb, steps)), x[1:]])
    save_image(grid([row], ["A ... B"]), out)
    click.echo(f"wrote {steps} interpolation steps to {out}")


@main.command()
@model_option
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.argument("dest", type=click.Path(exists=True, dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--styles", type=click.Choice(["coarse", "middle", "fine"]), required=True,
              help="which of SOURCE's styles replace DEST's: coarse 4-8 px, middle 16-32 px, fine "
                   "64 px and up; a 32x32 model's are 4-8 / 16 / 32 px, a 16x16 model's "
                   "4 / 8 / 16 px (8x8 and smaller: no middle)")
@device_option
@exits_cleanly
def mix(model_path: str, source: str, dest: str, out: str, styles: str, device: str) -> None:
    """DEST with SOURCE's coarse, middle or fine styles (StyleALAE only); OUT's suffix names the
    format."""
    from alae.errors import UserError
    from alae.figures import mix_styles, slot_resolutions, style_ranges
    from alae.images import image_format, save_image, to_image

    image_format(out)
    model, x = _model_and_images(model_path, device, [Path(source), Path(dest)])
    if not model.progressive:
        raise UserError(f"{model_path}: style mixing needs a StyleALAE (model.kind: style)")
    ranges = style_ranges(model)
    if styles not in ranges:
        raise UserError(f"--styles {styles}: a {model.resolution}x{model.resolution} model has only "
                        f"{', '.join(ranges)} styles")
    slots = ranges[styles]
    torch.manual_seed(0)
    with torch.no_grad():
        w = model.encode(x)
        mixed = model.decode(mix_styles(model, w[1:], w[:1], slots))
    save_image(to_image(mixed[0]), out)
    click.echo(f"wrote {dest} with the {styles} styles of {source} "
               f"({slot_resolutions(model, slots)}: style slots {slots.start}-{slots.stop - 1}) "
               f"to {out}")


if __name__ == "__main__":
    main()
