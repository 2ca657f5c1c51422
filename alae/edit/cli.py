"""`alae directions`, `alae edit` and `alae project`: editing real images with a trained model
(registered on the `alae` group by alae/cli.py)."""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import torch

from alae.commands import (convert_option, device_option, load_on_device, model_and_images,
                           model_option, noise_option)
from alae.errors import UserError, exits_cleanly
from alae.io import atomic_open, file_sha256, write_json

LABEL_LIMIT = 10000   # training images the SVMs are fitted on (and held-out images scored)


@click.command()
@model_option
@click.option("--method", default="mean", show_default=True,
              type=click.Choice(["mean", "svm", "sefa", "official"]),
              help="mean: per label, from the others' mean E(x) to its own; svm: the normal of a "
                   "linear SVM's boundary on E(x) (the authors' way; on the default model it "
                   "separates the classes but barely edits: README); sefa: top-k eigenvectors of "
                   "G's style modulation, no labels; official: the authors' direction_K.npy")
@click.option("--data", type=click.Path(),
              help="shards (with manifest.json) or a folder of images in class sub-folders; "
                   "with --labels, the folder of the CSV's files. svm, mean: default data/shards; "
                   "sefa and official: the images the strength unit is measured on (default: "
                   "F(z) of --limit draws)")
@click.option("--labels", "labels_csv", type=click.Path(exists=True, dir_okay=False),
              help="CSV of attributes per file: header file,ATTR,...; one 1/0 per attribute")
@click.option("--top", default=8, show_default=True, type=click.IntRange(min=1),
              help="sefa: how many directions")
@click.option("--layers", default="coarse", show_default=True,
              type=click.Choice(["coarse", "middle", "fine", "all"]),
              help="sefa: the style slots whose modulation is factorised (and that `alae edit` "
                   "then moves by default)")
@click.option("--official", "official_path", type=click.Path(exists=True),
              help="official: the authors' principal_directions/ folder, or one direction_K.npy")
@click.option("--limit", default=LABEL_LIMIT, show_default=True, type=click.IntRange(min=2),
              help="images (or F(z) draws) per split to fit on and to measure strengths on")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="directions file to write (.npz; format: alae/edit/directions.py)")
@device_option
@exits_cleanly
def directions(model_path: str, method: str, data: str | None, labels_csv: str | None, top: int,
               layers: str, official_path: str | None, limit: int, seed: int, out: str,
               device: str) -> None:
    """Directions in W to edit along, written to --out: per label (svm, mean), from G alone
    (sefa), or the authors' FFHQ files (official)."""
    from alae.edit import directions as dirs
    from alae.edit.labelled import labelled_codes, unlabelled_codes
    from alae.edit.strips import edit_slots

    if method == "official" and official_path is None:
        raise UserError("--method official needs --official DIR (their principal_directions/)")
    if labels_csv is not None and method not in dirs.LABEL_METHODS:
        raise UserError(f"--labels: labels are for --method svm or mean, not {method}")
    model, _ = load_on_device(model_path, device)
    sha = file_sha256(model_path)
    if method in dirs.LABEL_METHODS:
        data = data if data is not None or labels_csv is not None else "data/shards"
        train, skipped = labelled_codes(model, data, labels_csv, "train", limit)
        test, more = labelled_codes(model, data, labels_csv, "test", limit)
        for line in skipped + more:
            click.echo(f"skipped: {line}", err=True)
        source = labels_csv or data
        result = dirs.from_labels(train, test, sha, f"E(x) of {len(train.codes)} train images "
                                  f"of {source}", seed, method)
        where = f"{len(train.codes)} train images, scored on {len(test.codes)} held out"
    else:
        codes, codes_from = unlabelled_codes(model, data, limit, seed)
        if method == "sefa":
            result = dirs.from_sefa(model, edit_slots(model, layers), layers, top, codes,
                                    codes_from, sha)
            where = f"the {layers} style slots' modulation"
        else:
            result = dirs.from_official(official_path, model.latent, codes, codes_from, sha)
            where = str(official_path)
    dirs.save_directions(result, out)
    for line in dirs.describe(result):
        click.echo(f"  {line}")
    note = dirs.quiet_note(result)
    if note:
        click.echo(f"note: {note}", err=True)
    click.echo(f"wrote {len(result.names)} directions ({method}, from {where}; strengths "
               f"measured on {result.codes_from}) to {out}")


@click.command()
@model_option
@click.argument("images", nargs=-1, required=True)
@click.option("--directions", "directions_path", required=True,
              type=click.Path(dir_okay=False), help="file of `alae directions`")
@click.option("--direction", "name", required=True,
              help="a name in the file, or A->B: from label A towards label B")
@click.option("--strength", default=2.0, show_default=True, type=float,
              help="the last column's move, -3..3, in standard deviations of the training "
                   "codes along the direction")
@click.option("--steps", default=7, show_default=True, type=click.IntRange(min=2),
              help="columns from strength 0 (the reconstruction) to --strength")
@click.option("--layers", type=click.Choice(["coarse", "middle", "fine", "all"]),
              help="the style slots to move (StyleALAE; an MLP has only all); default: the "
                   "file's (all, or the block SeFa factorised)")
@noise_option
@click.option("--scale", default=2, show_default=True, type=click.IntRange(min=1),
              help="enlarge each image N times (nearest neighbour)")
@convert_option
@device_option
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="the strips, one row per image; the suffix names the format")
@exits_cleanly
def edit(model_path: str, images: tuple[str, ...], directions_path: str, name: str,
         strength: float, steps: int, layers: str | None, noise: str, scale: int,
         convert: str | None, device: str, out: str) -> None:
    """Encode IMAGES, move their codes along a direction, decode: one titled strip per image,
    the input first, then strengths 0 .. --strength."""
    from alae.edit.directions import load_directions
    from alae.edit.strips import (check_strength, edit_images, edit_slots, row_label,
                                  strip_figure, strip_title)
    from alae.images import expand, image_names, save_image

    check_strength(strength)
    image_names(out)
    table = load_directions(directions_path)
    label, vector, std = table.resolve(name)
    found = expand(images)
    model, x, kept, note = model_and_images(model_path, device, [p for p, _ in found], convert,
                                            images)
    if table.latent != model.latent:
        raise UserError(f"{directions_path}: directions in a {table.latent}-d W, {model_path}'s "
                        f"is {model.latent}-d")
    if table.model_sha256 != file_sha256(model_path):
        click.echo(f"warning: {directions_path} was made for another model file", err=True)
    layers = layers or table.layers
    slots = edit_slots(model, layers)
    strengths = np.linspace(0.0, strength, steps)
    edited = edit_images(model, x, vector, std, strengths, slots, noise)
    names = [row_label(found[i][1].name) for i in kept]
    title = strip_title(label, std, strengths, layers, slots, model, noise)
    save_image(strip_figure(model, x, edited, names, title, scale), out)
    click.echo(f"wrote {len(kept)} strips along {label} (strength 0 .. {strength:g} std, "
               f"{steps} steps, layers {layers}) to {out}{note}")


@click.command()
@model_option
@click.argument("images", nargs=-1, required=True)
@click.option("--steps", default=200, show_default=True, type=click.IntRange(min=0),
              help="Adam steps per image")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="folder for codes.npz, images/, compare.png and distances.json")
@click.option("--distance", default="classifier", show_default=True,
              type=click.Choice(["classifier", "lpips"]),
              help="classifier: featurenet features + pixel MSE; lpips: LPIPS-VGG16 (needs the "
                   "lpips package and VGG16 weights; no fallback)")
@click.option("--featurenet", default="models/featurenet.pt", show_default=True,
              type=click.Path(dir_okay=False), help="the classifier distance's network")
@click.option("--w-plus", is_flag=True, help="one code per style slot (StyleALAE only)")
@click.option("--lr", default=0.01, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@convert_option
@device_option
@exits_cleanly
def project(model_path: str, images: tuple[str, ...], steps: int, out: str, distance: str,
            featurenet: str, w_plus: bool, lr: float, batch_size: int, convert: str | None,
            device: str) -> None:
    """Project IMAGES into W by optimising the code (and G's noise) from E(x); writes the codes,
    the projected images and the distance before and after."""
    from alae.edit.projection import load_distance, project as run_projection
    from alae.images import expand, output_paths
    from alae.progress import progress_bar

    found = expand(images)
    outs = output_paths(found, Path(out) / "images", ".png")
    model, x, kept, note = model_and_images(model_path, device, [p for p, _ in found], convert,
                                            images)
    if w_plus and not model.progressive:
        raise UserError("--w-plus: one code per style slot is a StyleALAE's; StyleALAE only")
    measure = load_distance(distance, featurenet, model.channels, x.device)
    names = [str(found[i][1]) for i in kept]
    outs = [outs[i] for i in kept]
    chunks = range(0, len(x), batch_size)
    results = []
    with progress_bar(total=steps * len(chunks), desc="project", unit="step") as bar:
        for first in chunks:
            results.append(run_projection(model, x[first:first + batch_size], measure, steps,
                                          w_plus, lr, first, lambda: bar.update()))
    report = _write_projection(Path(out), names, outs, x, results, measure.description,
                               dict(steps=steps, lr=lr, w_plus=w_plus, model=model_path))
    before, after = report["mean"]["before"], report["mean"]["after"]
    click.echo(f"projected {len(names)} images into {out} ({measure.description}; mean "
               f"distance {before['distance']:.4g} -> {after['distance']:.4g}, pixel MSE "
               f"{before['pixel_mse']:.4g} -> {after['pixel_mse']:.4g}){note}")


def _write_projection(out: Path, names: list[str], outs: list[Path], x: torch.Tensor, results,
                      description: str, settings: dict) -> dict:
    """OUT/images/*.png, OUT/codes.npz, OUT/compare.png and OUT/distances.json; the report."""
    from alae.figures import grid
    from alae.images import save_image, to_image

    images = torch.cat([r.images for r in results])
    start = torch.cat([r.start for r in results])
    for path, img in zip(outs, images):
        save_image(to_image(img), path)
    arrays = {"w": torch.cat([r.w for r in results]).cpu().numpy(),
              "names": np.asarray(names, dtype=str)}
    for k in range(len(results[0].noise)):
        arrays[f"noise{k}"] = torch.cat([r.noise[k] for r in results]).cpu().numpy()
    with atomic_open(out / "codes.npz", "wb") as f:
        np.savez(f, **arrays)
    rows, labels = [], []
    for i in range(0, len(x), 8):
        rows += [x[i:i + 8], start[i:i + 8], images[i:i + 8]]
        labels += ["x", "G(E(x))", "projected"]
    save_image(grid(rows, labels), out / "compare.png")

    def column(key: str, when: str) -> list[float]:
        return torch.cat([getattr(r, when)[key] for r in results]).double().cpu().tolist()

    terms = list(results[0].before)
    per = {when: {key: column(key, when) for key in terms} for when in ("before", "after")}
    report = {"distance": description, **settings, "count": len(names),
              "before": "G(E(x)): the encoder alone, with each image's start noise",
              "mean": {when: {k: float(np.mean(v)) for k, v in per[when].items()}
                       for when in per},
              "images": {n: {when: {k: per[when][k][i] for k in terms} for when in per}
                         for i, n in enumerate(names)}}
    write_json(out / "distances.json", report)
    return report


COMMANDS = (directions, edit, project)
