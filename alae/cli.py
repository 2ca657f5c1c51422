"""The `alae` command for people using a trained model (`alae --help`), and `alae preset`,
which writes a reference configuration into params.yaml."""
from __future__ import annotations

from pathlib import Path

import click
import torch

from alae import __version__
from alae.checkpoint import load_model
from alae.commands import (convert_option, device_option, images_for, load_on_device,
                           model_and_images, model_option, noise_option)
from alae.devices import resolve_device
from alae.errors import UserError, exits_cleanly
from alae.io import atomic_open
from alae.official import CONFIGS as OFFICIAL_CONFIGS
from alae.presets import apply_preset, preset_note


@click.group()
@click.version_option(__version__)
def main() -> None:
    """Use a trained ALAE model (models/alae.pt, written by the pipeline's train stage)."""


@main.command()
@model_option
@click.option("--seeds", help="seeds, e.g. 0-99 or 0-3,10,20-22: one image each, its z drawn "
                               "from a generator seeded with it alone")
@click.option("--outdir", type=click.Path(file_okay=False),
              help="write one PNG per seed, DIR/seed0000.png (a folder `alae fid` reads)")
@click.option("--grid", "grid_path", type=click.Path(dir_okay=False),
              help="write the seeds as one labelled grid; the suffix names the format")
@click.option("--trunc", "--psi", "psi", default=None, type=click.FloatRange(0, 1),
              help="truncation towards the average w (default: none)")
@click.option("--cutoff", default=8, show_default=True, type=click.IntRange(min=1),
              help="style slots the truncation applies to")
@noise_option
@click.option("--columns", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("-n", "count", default=None, type=click.IntRange(min=1),
              help="old form: seeds SEED .. SEED+N-1 (default 64)")
@click.option("--seed", default=None, type=click.IntRange(min=0), help="old form: first seed")
@device_option
@click.argument("out", required=False, type=click.Path(dir_okay=False))
@exits_cleanly
def generate(model_path: str, seeds: str | None, outdir: str | None, grid_path: str | None,
             psi: float | None, cutoff: int, noise: str, columns: int, batch_size: int,
             count: int | None, seed: int | None, device: str, out: str | None) -> None:
    """Generate one image per seed into --outdir and/or a grid (--grid, or OUT: the old form
    `alae generate -n 64 --seed 0 OUT`, which is seeds 0-63)."""
    from alae.figures import snapshot_grid
    from alae.pixels import to_uint8
    from alae.images import image_names, save_image, to_image
    from alae.progress import progress_bar
    from alae.sampling import generate_seeds, parse_seeds, seed_image_name

    if out is not None and grid_path is not None:
        raise UserError(f"OUT {out} and --grid {grid_path}: give one (OUT is the old --grid)")
    grid_path = grid_path or out
    if outdir is None and grid_path is None:
        raise UserError("nothing to write: give --outdir DIR and/or --grid FILE")
    if seeds is not None and (count, seed) != (None, None):
        raise UserError(f"--seeds {seeds}: -n and --seed are the old form of --seeds; give one")
    image_names(grid_path)
    first = seed or 0
    wanted = parse_seeds(seeds) if seeds is not None else list(range(first, first + (count or 64)))
    model, _ = load_on_device(model_path, device)
    kept = []  # the grid's images as uint8, which holds thousands of them
    with progress_bar(total=len(wanted), desc="generate") as bar:
        for batch, images in generate_seeds(model, wanted, psi, cutoff, noise, batch_size):
            for s, x in zip(batch, images):
                if outdir is not None:
                    save_image(to_image(x), Path(outdir) / seed_image_name(s))
            if grid_path is not None:
                kept.append(to_uint8(images).cpu())
            bar.update(len(batch))
    if grid_path is not None:
        label = f"psi {psi}" if psi is not None else "psi 1 (none)"  # as the figures stage's
        save_image(snapshot_grid(torch.cat(kept), label, columns), grid_path)
    where = " and ".join(str(p) for p in (outdir, grid_path) if p is not None)
    click.echo(f"wrote {len(wanted)} samples (noise {noise}) to {where}")


@main.command()
@click.argument("name")
@click.option("--params", "params_path", default="params.yaml", show_default=True,
              type=click.Path(dir_okay=False), help="params file to write the preset into")
@exits_cleanly
def preset(name: str, params_path: str) -> None:
    """Write preset NAME (presets/NAME.yaml: mlp, mnist, celeba, celeba-hq256, bedroom, ffhq) into
    params.yaml."""
    params, changed = apply_preset(name, params_path)
    for line in changed:
        click.echo(f"  {line}")
    click.echo(f"wrote preset {name} into {params_path} ({len(changed)} values changed)")
    note = preset_note(name, params)
    if note:
        click.echo(f"note: {note}", err=True)
    from alae.cost import min_training_hours

    hours, gflops = min_training_hours(params)
    if hours > 1:
        click.echo(f"warning: training {params.train.kimg:g} kimg of this configuration takes at "
                   f"least {hours:,.1f} h on this machine (its FLOPs at the measured matmul rate "
                   f"of {gflops:.0f} GFLOP/s; training runs well below that rate); lower "
                   f"train.kimg, or train on a GPU", err=True)



@main.command("import-official")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--config", required=True,
              type=click.Choice(OFFICIAL_CONFIGS),
              help="the authors' configuration (their configs/NAME.yaml) the file was trained with")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="model file to write, e.g. models/ffhq.pt")
@click.option("--weights", default="ema", show_default=True, type=click.Choice(["ema", "trained"]),
              help="the EMA networks (the `_s` copies their demo uses) or the trained ones")
@click.option("--trust-pickle", is_flag=True,
              help="load a file that a weights-only load refuses with the full unpickler, which "
                   "can run code: only for a file from a source you trust")
@exits_cleanly
def import_official(checkpoint: str, config: str, out: str, weights: str,
                    trust_pickle: bool) -> None:
    """Import CHECKPOINT, written by the authors' training code (podgorskiy/ALAE; their released
    models), as this project's model file: then every command here takes it as --model."""
    from alae.official import import_official as run_import

    click.echo(run_import(checkpoint, config, out, weights, trust_pickle))


@main.command()
@click.argument("path_a", type=click.Path())
@click.argument("path_b", type=click.Path())
@click.option("--features", default="classifier", show_default=True,
              type=click.Choice(["classifier", "selfsup", "inception"]),
              help="feature space: the featurenet's (offline; classifier or selfsup, as it was "
                   "trained) or pytorch-fid's Inception")
@click.option("--featurenet", default="models/featurenet.pt", show_default=True,
              type=click.Path(dir_okay=False), help="the classifier or selfsup space's network")
@click.option("--dims", default=2048, show_default=True,
              type=click.Choice(["64", "192", "768", "2048"]), callback=lambda c, p, v: int(v),
              help="Inception block, as pytorch-fid's --dims (2048, pool3, is the standard)")
@click.option("--resize", default="legacy", show_default=True,
              type=click.Choice(["legacy", "clean"]),
              help="Inception's resize to 299: pytorch-fid's (legacy) or clean-fid's (clean)")
@click.option("--batch-size", default=50, show_default=True, type=click.IntRange(min=1))
@device_option
@click.option("--save-stats", is_flag=True,
              help="write PATH_A's statistics to the .npz PATH_B instead (as pytorch-fid)")
@exits_cleanly
def fid(path_a: str, path_b: str, features: str, featurenet: str, dims: int, resize: str,
        batch_size: int, device: str, save_stats: bool) -> None:
    """FID between PATH_A and PATH_B, each a folder of images or an .npz with mu and sigma: the
    command shape of `python -m pytorch_fid`. The output line names the feature space; classifier
    numbers are not comparable with Inception FIDs in papers."""
    from alae.metrics.features import load_extractor, space_name
    from alae.metrics.folder import describe, fid_of_paths, save_path_stats

    if features == "classifier" and resize != "legacy":
        raise UserError("--resize clean is for --features inception (the classifier space "
                        "resizes to its featurenet's resolution)")
    space = space_name(features, dims, resize)

    def extractor():
        return load_extractor(features, featurenet, resolve_device(device, "--device"), dims,
                              resize)

    if save_stats:
        stats = save_path_stats(path_a, path_b, space, extractor(), batch_size)
        click.echo(f"saved statistics of {stats.n} images ({space} features) to {path_b}")
        return
    value, meta = fid_of_paths(path_a, path_b, space, extractor, batch_size)
    click.echo(f"FID:  {value}  ({describe(space, meta)})")


# --- using a trained model on one's own images -----------------------------------------------
def view_options(fn):
    """--compare FILE and --scale N, for the commands that turn images into images."""
    fn = click.option("--scale", default=1, show_default=True, type=click.IntRange(min=1),
                      help="enlarge every written image N times (nearest neighbour)")(fn)
    return click.option("--compare", type=click.Path(dir_okay=False),
                        help="also write a sheet of the inputs above the outputs, labelled; "
                             "the suffix names the format")(fn)


def _compare(path: str | None, inputs: torch.Tensor, outputs: torch.Tensor, labels: tuple[str, str],
             scale: int) -> str:
    """Write the --compare sheet if asked; the words that say so in the command's message."""
    from alae.images import compare_sheet, save_image

    if path is None:
        return ""
    save_image(compare_sheet(inputs, outputs, *labels), path, scale)
    return f", inputs and outputs side by side in {path}"


@main.command()
@model_option
@click.argument("images", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="codes file (.npy, one w per image); the file names go to OUT.txt")
@convert_option
@device_option
@exits_cleanly
def encode(model_path: str, images: tuple[str, ...], out: str, convert: str | None,
           device: str) -> None:
    """Encode IMAGES (files or folders) into W: one code per image."""
    import numpy as np

    from alae.images import expand

    files = [path for path, _ in expand(images)]
    model, x, kept, note = model_and_images(model_path, device, files, convert, images)
    files = [files[i] for i in kept]
    with torch.no_grad():
        w = model.encode(x).cpu().numpy()
    with atomic_open(out, "wb") as f:
        np.save(f, w)
    with atomic_open(str(out) + ".txt", "w") as f:
        f.write("".join(f"{p}\n" for p in files))
    click.echo(f"encoded {len(files)} images to {out} ({w.shape[1]}-d), names in {out}.txt"
               f"{note}")


@main.command()
@model_option
@click.argument("images", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output folder")
@view_options
@convert_option
@device_option
@exits_cleanly
def reconstruct(model_path: str, images: tuple[str, ...], out: str, compare: str | None,
                scale: int, convert: str | None, device: str) -> None:
    """Write G(E(x)) of each of IMAGES to OUT at the model's resolution, as PNG: a file given as
    OUT/<name>.png, a folder's images as OUT/<path inside the folder>.png."""
    from alae.images import expand, image_names, output_paths, save_image, to_image

    image_names(compare)
    found = expand(images)
    outs = output_paths(found, out, ".png")
    model, x, kept, note = model_and_images(model_path, device, [path for path, _ in found],
                                             convert, images)
    outs = [outs[i] for i in kept]
    torch.manual_seed(0)
    with torch.no_grad():
        rec = model.reconstruct(x)
    for path, r in zip(outs, rec):
        save_image(to_image(r), path, scale)
    said = _compare(compare, x, rec, ("x", "G(E(x))"), scale)
    click.echo(f"reconstructed {len(outs)} images into {out}{said}{note}")


@main.command()
@model_option
@click.argument("codes_path", metavar="CODES", type=click.Path(exists=True, dir_okay=False))
@click.option("--outdir", required=True, type=click.Path(file_okay=False), help="output folder")
@noise_option
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@device_option
@exits_cleanly
def decode(model_path: str, codes_path: str, outdir: str, noise: str, batch_size: int,
           device: str) -> None:
    """Write G(w) for each code of CODES (an .npy of `alae encode`) into OUTDIR as PNG: named
    after the source images listed in CODES.txt when it is there, else code0000.png, ..."""
    from alae.images import output_paths, save_image, to_image
    from alae.sampling import decode_codes, read_codes

    codes, names = read_codes(codes_path)
    outs = output_paths([(Path(n), Path(Path(n).name)) for n in names], outdir, ".png")
    model, _ = load_on_device(model_path, device)
    if codes.shape[1] != model.latent:
        raise UserError(f"{codes_path}: codes are {codes.shape[1]}-d, but {model_path}'s W is "
                        f"{model.latent}-d")
    for first, images in decode_codes(model, codes, noise, batch_size):
        for path, x in zip(outs[first:], images):
            save_image(to_image(x), path)
    click.echo(f"decoded {len(outs)} codes into {outdir} (noise {noise})")


@main.command()
@model_option
@click.argument("image_a", type=click.Path(exists=True, dir_okay=False))
@click.argument("image_b", type=click.Path(exists=True, dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--steps", default=8, show_default=True, type=click.IntRange(min=2))
@view_options
@convert_option
@device_option
@exits_cleanly
def interpolate(model_path: str, image_a: str, image_b: str, out: str, steps: int,
                compare: str | None, scale: int, convert: str | None, device: str) -> None:
    """Decode E(A)..E(B) linearly interpolated in W, in one row: A, the steps, B; OUT's suffix
    names the format."""
    from alae.figures import grid, lerp_codes
    from alae.images import image_names, save_image

    image_names(out, compare)
    model, x, _, note = model_and_images(model_path, device, [Path(image_a), Path(image_b)],
                                          convert)
    torch.manual_seed(0)
    with torch.no_grad():
        wa, wb = model.encode(x)
        decoded = model.decode(lerp_codes(wa, wb, steps))
    save_image(grid([torch.cat([x[:1], decoded, x[1:]])], ["A ... B"]), out, scale)
    said = _compare(compare, x, decoded, ("A, B", "E(A) ... E(B)"), scale)
    click.echo(f"wrote {steps} interpolation steps to {out}{said}{note}")


@main.command()
@model_option
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.argument("dest", type=click.Path(exists=True, dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--styles", type=click.Choice(["coarse", "middle", "fine"]), required=True,
              help="which of SOURCE's styles replace DEST's: coarse 4-8 px, middle 16-32 px, fine "
                   "64 px and up; a 32x32 model's are 4-8 / 16 / 32 px, a 16x16 model's "
                   "4 / 8 / 16 px (8x8 and smaller: no middle)")
@view_options
@convert_option
@device_option
@exits_cleanly
def mix(model_path: str, source: str, dest: str, out: str, styles: str, compare: str | None,
        scale: int, convert: str | None, device: str) -> None:
    """DEST with SOURCE's coarse, middle or fine styles (StyleALAE only); OUT's suffix names the
    format."""
    from alae.figures import mix_styles, slot_resolutions, style_ranges
    from alae.images import image_names, save_image, to_image

    image_names(out, compare)
    model, x, _, note = model_and_images(model_path, device, [Path(source), Path(dest)], convert)
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
    save_image(to_image(mixed[0]), out, scale)
    said = _compare(compare, x, mixed, ("source, dest", f"{styles} mixed"), scale)
    click.echo(f"wrote {dest} with the {styles} styles of {source} "
               f"({slot_resolutions(model, slots)}: style slots {slots.start}-{slots.stop - 1}) "
               f"to {out}{said}{note}")


@main.command()
@model_option
@click.argument("images", nargs=-1)
@click.option("--shards", type=click.Path(exists=True, file_okay=False),
              help="take the real images from these shards' test split instead of IMAGES")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output folder")
@click.option("--metrics", "metrics_path", type=click.Path(exists=True, dir_okay=False),
              help="an eval.json (the evaluate stage's) whose numbers go into the titles")
@convert_option
@device_option
@exits_cleanly
def figures(model_path: str, images: tuple[str, ...], shards: str | None, out: str,
            metrics_path: str | None, convert: str | None, device: str) -> None:
    """The figures stage's figures of any model file (an imported authors' model too), with the
    real images from IMAGES (files or folders, in the order given) or from --shards: samples,
    reconstructions, interpolations, style mixing and, for a file the train stage wrote, the
    progress figure. Settings (seed, psi, grid size) are the `figures` params the model file
    holds."""
    import json

    from alae.checkpoint import load_snapshots
    from alae.figures import (figure_set, figure_titles, first_test_images, reals_needed,
                              save_png, titled)
    from alae.images import expand

    if bool(images) == bool(shards):
        raise UserError("give the real images either as IMAGES or as --shards, not both or neither")
    where = resolve_device(device, "--device")
    model, params, meta = load_model(model_path, where)
    cfg = params.figures
    if shards:
        reals, source = first_test_images(model, shards, reals_needed(cfg)), "test images"
        note = ""
    else:
        files = [path for path, _ in expand(images)][:reals_needed(cfg)]  # what the figures use
        reals, _, note = images_for(model, where, files, convert, images)
        source = "your images"
    metrics = json.loads(Path(metrics_path).read_text()) if metrics_path else {}
    made, skipped = figure_set(model, cfg, reals, load_snapshots(model_path))
    for line in skipped:
        click.echo(f"not written: {line}", err=True)
    for name, image in made.items():
        save_png(titled(image, figure_titles(name, params, meta, metrics, source)), Path(out) / name)
    click.echo(f"wrote {', '.join(made)} to {out} ({len(reals)} real images){note}")


from alae.edit.cli import COMMANDS as EDIT_COMMANDS  # noqa: E402  (directions, edit, project)
# `alae metrics` lives in its own module, as the evaluate stage's protocol for any model file.
from alae.metrics_command import metrics  # noqa: E402

from alae.edit.explore import COMMANDS as EXPLORE_COMMANDS  # noqa: E402  (explore: its page)

for command in [*EDIT_COMMANDS, *EXPLORE_COMMANDS, metrics]:
    main.add_command(command)

if __name__ == "__main__":
    main()
