"""`alae metrics`: any registered metric (alae/metrics) of any model file, the counterpart of
stylegan2-ada's `calc_metrics.py`. Each metric's result is printed and, with `--out`, appended
as one JSON line beside everything that fixes it (model file and its sha256, data and its
digest, feature space and featurenet sha256, sample sizes, seed, the metric's own parameters,
the metrics protocol version), so lines written months apart can be compared, or told apart.

`--data` is a shard folder or a folder of images (alae/image_folder.py: written to temporary
shards at the model's resolution and channels, every image in the test split). A folder has no
train split, so the metrics that read one (the data floor, the probe) are left out of `default`
and `all` with a note, and refused when named.
"""
from __future__ import annotations

import contextlib
import datetime
import re
from pathlib import Path

import click

from alae.config import EVALUATE_CHOICES, ConfigError, EvaluateConfig
from alae.errors import UserError, exits_cleanly

DEFAULTS = EvaluateConfig()


def choice_option(key: str, help: str | None = None):
    """`--<key>` for the evaluate key `key`: its choices and default, as params.yaml has them."""
    return click.option(f"--{key.replace('_', '-')}", key, default=getattr(DEFAULTS, key),
                        show_default=True, type=click.Choice(EVALUATE_CHOICES[key]), help=help)


def metric_list(value: str) -> list[str]:
    """The names of `--metrics`, groups expanded; an unknown one is a one-line error."""
    from alae.metrics import default_metrics, metric_names, resolve_names

    if value in ("default", "all"):
        return default_metrics() if value == "default" else metric_names()
    try:
        return resolve_names([n.strip() for n in value.split(",") if n.strip()])
    except ValueError as e:
        raise UserError(f"--metrics {value}: {e}") from None


def options_config(**options) -> EvaluateConfig:
    """The evaluate section these options make, checked as params.yaml's is; a bad combination is
    one line naming the options (`--resize`), not the params keys."""
    cfg = EvaluateConfig(**options)
    try:
        cfg.check()
    except ConfigError as e:
        raise UserError(re.sub(r"evaluate\.(\w+)",
                               lambda m: "--" + m.group(1).replace("_", "-"), str(e))) from None
    return cfg


def reference_only(names: list[str], data: str, named: bool) -> list[str]:
    """`names` less the metrics that read the train split, which an image folder does not have
    (it is all reference): left out with a note when they came from `default` or `all`, refused in
    one line when `named` (asked for by name: the user expects a number)."""
    from alae.metrics import FLOOR, PROBE, metric_uses

    train = [n for n in names if metric_uses([n]) & {FLOOR, PROBE}]
    if not train:
        return names
    listed = ", ".join(train)
    why = (f"{'it reads' if len(train) == 1 else 'they read'} the train split"
           f"{' (the probe: labelled train images)' if 'probe' in train else ''}, which an image "
           f"folder ({data}) does not have (all its images are the test split): shard it with the "
           "shard stage (data.source: folder) for both splits")
    if named:
        raise UserError(f"--metrics {listed}: {why}")
    click.echo(f"metrics: left out {listed}: {why}", err=True)
    return [n for n in names if n not in train]


@click.command("metrics")
@click.option("--model", "model_path", default="models/alae.pt", show_default=True,
              type=click.Path(dir_okay=False), help="model file (train stage or import-official)")
@click.option("--metrics", "names", default="default", show_default=True,
              help="comma-separated registered metrics, e.g. fid,kid,pr,rec_fid,ppl,probe "
                   "(ppl = ppl_full,ppl_end); default: the evaluate stage's; all: every one")
@click.option("--data", default="data/shards", show_default=True, metavar="SHARDS_OR_FOLDER",
              help="shard folder (the shard stage's) or folder of images (recursive; class "
                   "sub-folders are labels), read at the model's resolution as the test split")
@choice_option("features", "feature space (classifier or selfsup: the featurenet file's kind)")
@click.option("--featurenet", default="models/featurenet.pt", show_default=True,
              type=click.Path(dir_okay=False), help="the classifier or selfsup space's network")
@click.option("--num-images", default=DEFAULTS.num_images, show_default=True,
              type=click.IntRange(min=2), help="samples (and reconstructions) per metric")
@click.option("--seed", default=DEFAULTS.seed, show_default=True, type=click.IntRange(min=0))
@click.option("--ppl-samples", default=DEFAULTS.ppl_samples, show_default=True,
              type=click.IntRange(min=2))
@choice_option("ppl_distance")
@click.option("--probe-train", default=DEFAULTS.probe_train, show_default=True,
              type=click.IntRange(min=2))
@choice_option("resize", "Inception's resize to 299: pytorch-fid's bilinear (legacy) or "
                         "clean-fid's PIL bicubic (clean)")
@choice_option("reference", "the split FID, KID and P/R compare with (train: the paper's)")
@choice_option("rec_distance", "rec_distance's distance of x to G(E(x))")
@choice_option("ppl_crop", "face: StyleGAN's central face crop before PPL's distance")
@click.option("--batch-size", default=DEFAULTS.batch_size, show_default=True,
              type=click.IntRange(min=1), help="no number depends on it")
@click.option("--device", default="auto", show_default=True,
              help="auto | cpu | cuda | cuda:N; auto is CUDA when there is one")
@click.option("--out", type=click.Path(dir_okay=False),
              help="append one JSON line per metric to this file (e.g. results.jsonl)")
@exits_cleanly
def metrics(model_path: str, names: str, data: str, features: str, featurenet: str,
            num_images: int, seed: int, ppl_samples: int, ppl_distance: str, probe_train: int,
            resize: str, reference: str, rec_distance: str, ppl_crop: str,
            batch_size: int, device: str, out: str | None) -> None:
    """Compute registered metrics of a model file on DATA's splits, as the evaluate stage does."""
    from alae.image_folder import IMAGES, ImageFolder, data_kind

    requested, names = names, metric_list(names)   # before anything loads
    cfg = options_config(num_images=num_images, batch_size=batch_size, features=features,
                         seed=seed, ppl_samples=ppl_samples, ppl_distance=ppl_distance,
                         probe_train=probe_train, device=device, resize=resize,
                         reference=reference, rec_distance=rec_distance, ppl_crop=ppl_crop)
    kind = data_kind(data)
    if kind == IMAGES:
        if reference == "train":
            raise UserError(f"--reference train: an image folder ({data}) has no train split "
                            "(all its images are the test split)")
        names = reference_only(names, data, named=requested not in ("default", "all"))
    from alae.checkpoint import load_model
    from alae.devices import resolve_device
    from alae.io import append_jsonl, file_sha256
    from alae.metrics import (PPL, REC_DISTANCE, METRICS_PROTOCOL, metric_uses, provenance,
                              run_metrics)
    from alae.metrics.features import load_extractor
    from alae.metrics.ppl import load_distance
    from alae.metrics.stats import StatsCache, dataset_digest
    from alae.tracking import repo_root

    where = resolve_device(device, "--device")
    model, _, meta = load_model(model_path, where)
    folder = None
    if kind == IMAGES:   # read before the feature network loads: a folder without images stops
        folder = ImageFolder(data, int(model.resolution), int(model.channels))
        warning = folder.size_warning(meta.get("official_config"))
        if warning:
            click.echo(f"metrics: {warning}", err=True)
    extractor = load_extractor(features, featurenet, where, resize=resize)
    classifier = extractor if features == "classifier" else None
    distance = rec = None
    if PPL in metric_uses(names):
        distance = load_distance(ppl_distance, classifier, where)
    if REC_DISTANCE in metric_uses(names):
        rec = load_distance(rec_distance, classifier, where, "evaluate.rec_distance")
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    with folder.as_shards() if folder else contextlib.nullcontext(data) as shards:
        if folder:
            for line in folder.skipped_lines("metrics"):
                click.echo(line, err=True)
        about_data = folder.provenance() if folder else {"dataset": dataset_digest(data)}
        if reference == "train":   # the reference images are the train split's
            about_data["dataset_train"] = dataset_digest(data, "train")
        common = {"model": str(model_path), "model_sha256": file_sha256(model_path),
                  "data": str(data), "data_kind": kind, **about_data,
                  **provenance(extractor, distance, rec), "metrics_protocol": METRICS_PROTOCOL}
        results = run_metrics(model, extractor, shards, cfg, names, ppl_distance=distance,
                              rec_distance=rec, cache=StatsCache.default(repo_root()))
    for r in results:
        click.echo(f"{r.metric}: " + (", ".join(f"{k}={v:.6g}" for k, v in r.values.items())
                                       or "skipped"))
    if out is not None:
        append_jsonl(out, [{"metric": r.metric, "values": r.values,
                            "protocol": {**common, **r.protocol}, "time": when}
                           for r in results])
        click.echo(f"appended {len(results)} lines to {out}")
