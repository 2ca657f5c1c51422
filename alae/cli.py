"""The `alae` command for people using a trained model (`alae --help`), and `alae preset`,
which writes a reference configuration into params.yaml."""
from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import click
import torch
import yaml

from alae import __version__
from alae.checkpoint import load_model
from alae.config import ConfigError, FiguresConfig, Params, parse_params
from alae.errors import exits_cleanly
from alae.figures import samples_figure, save_png
from alae.io import atomic_open

PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"


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


def preset_path(name: str, params_path: str | Path = "params.yaml") -> Path:
    """presets/NAME.yaml beside the params file, else in this checkout; or a path to a file."""
    candidates = [Path(name)] if name.endswith((".yaml", ".yml")) else [
        Path(params_path).resolve().parent / "presets" / f"{name}.yaml", PRESETS_DIR / f"{name}.yaml"]
    for path in candidates:
        if path.is_file():
            return path
    known = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
    raise ConfigError(f"preset {name!r}: not found (known: {', '.join(known)})")


def _deep_merge(base: Any, new: dict) -> Any:
    """Write `new`'s values into `base` in place, keeping base's order and comments."""
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def _read_preset(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a preset is a mapping of params.yaml sections")
    return raw


def merged_preset(name: str, params_path: str | Path = "params.yaml") -> Params:
    """params.yaml with the preset written in, validated (nothing is written)."""
    base = yaml.safe_load(Path(params_path).read_text()) or {}
    return parse_params(_deep_merge(copy.deepcopy(base), _read_preset(preset_path(name, params_path))))


def apply_preset(name: str, params_path: str | Path = "params.yaml") -> Params:
    """Write the preset's values into params.yaml (comments and order kept where ruamel.yaml, a
    DVC dependency, is there to round-trip them), after validating the result."""
    params_path = Path(params_path)
    preset = _read_preset(preset_path(name, params_path))
    text = params_path.read_text() if params_path.is_file() else ""
    params = parse_params(_deep_merge(copy.deepcopy(yaml.safe_load(text) or {}), preset))
    try:
        from ruamel.yaml import YAML
        from ruamel.yaml.comments import CommentedSeq
    except ImportError:  # plain YAML: valid and complete, without the comments
        out = yaml.safe_dump(_deep_merge(yaml.safe_load(text) or {}, preset), sort_keys=False)
    else:
        rt = YAML()
        rt.preserve_quotes = True
        doc = rt.load(text) or {}

        def flow(value: Any) -> Any:  # tables as one-line lists, like the rest of params.yaml
            if isinstance(value, dict):
                return {k: flow(v) for k, v in value.items()}
            if isinstance(value, list):
                seq = CommentedSeq(value)
                seq.fa.set_flow_style()
                return seq
            return value

        _deep_merge(doc, flow(preset))
        buf = io.StringIO()
        rt.dump(doc, buf)
        out = buf.getvalue()
    if parse_params(yaml.safe_load(out)) != params:  # the file must say exactly what we checked
        raise ConfigError(f"{params_path}: writing preset {name!r} would not round-trip")
    mode = params_path.stat().st_mode & 0o777 if params_path.is_file() else 0o644
    with atomic_open(params_path, "w") as f:
        f.write(out)
    params_path.chmod(mode)  # the temporary file's 0600 would otherwise stay
    return params


@main.command()
@click.argument("name")
@click.option("--params", "params_path", default="params.yaml", show_default=True,
              type=click.Path(dir_okay=False), help="params file to write the preset into")
@exits_cleanly
def preset(name: str, params_path: str) -> None:
    """Write preset NAME (presets/NAME.yaml: mlp, mnist, celeba-hq256, ffhq) into params.yaml."""
    apply_preset(name, params_path)
    click.echo(f"wrote preset {name} into {params_path}")



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
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N")
@click.option("--save-stats", is_flag=True,
              help="write PATH_A's statistics to the .npz PATH_B instead (as pytorch-fid)")
@exits_cleanly
def fid(path_a: str, path_b: str, features: str, featurenet: str, dims: int, batch_size: int,
        device: str, save_stats: bool) -> None:
    """FID between PATH_A and PATH_B, each a folder of images or an .npz with mu and sigma: the
    command shape of `python -m pytorch_fid`. The output line names the feature space; classifier
    numbers are not comparable with Inception FIDs in papers."""
    from alae.metrics.features import load_extractor, resolve_device, space_name
    from alae.metrics.folder import describe, fid_of_paths, save_path_stats

    space = space_name(features, dims)

    def extractor():
        return load_extractor(features, featurenet, resolve_device(device), dims)

    if save_stats:
        stats = save_path_stats(path_a, path_b, space, extractor(), batch_size)
        click.echo(f"saved statistics of {stats.n} images ({space} features) to {path_b}")
        return
    value, meta = fid_of_paths(path_a, path_b, space, extractor, batch_size)
    click.echo(f"FID:  {value}  ({describe(space, meta)})")

if __name__ == "__main__":
    main()
