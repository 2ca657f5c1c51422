"""DVC stage `refstats`: mean and covariance of the whole `evaluate.reference` split (test by
default, train for the paper's protocol) in the `evaluate.features` space (resized as
`evaluate.resize` says), written once per dataset, split and feature space
(`models/refstats_<features>.npz`, pytorch-fid's layout plus provenance: the space's full name and
the split are inside, and the evaluate stage refuses a file of another) and reused by every
evaluation (alae/metrics/refstats.py). The file name keeps `evaluate.features` only, so the
default run's path does not move; DVC reruns the stage when `evaluate.resize` or
`evaluate.reference` changes, and its run-cache restores an earlier choice's file."""
import sys
from pathlib import Path

# This checkout's `alae`, even under `dvc exp run --temp` where an installed copy would be stale.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click  # noqa: E402

from alae.config import load_params  # noqa: E402
from alae.errors import exits_cleanly  # noqa: E402
from alae.devices import resolve_device  # noqa: E402
from alae.metrics.features import load_extractor  # noqa: E402
from alae.metrics.refstats import write_reference  # noqa: E402


@click.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--featurenet", default="models/featurenet.pt", show_default=True,
              help="the classifier space's network (unused for inception)")
@click.option("--shards", default="data/shards", show_default=True)
@click.option("--out", required=True, help="the .npz to write, e.g. models/refstats_classifier.npz")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(min=1),
              help="images per batch (the statistics do not depend on it beyond float rounding)")
@exits_cleanly
def main(params_path: str, featurenet: str, shards: str, out: str, batch_size: int) -> None:
    params = load_params(params_path)
    device = resolve_device(params.evaluate.device, "evaluate.device")
    cfg = params.evaluate
    extractor = load_extractor(cfg.features, featurenet, device, resize=cfg.resize)
    stats = write_reference(out, extractor, shards, batch_size, cfg.reference)
    click.echo(f"refstats: {stats.n} {cfg.reference} images in the {extractor.name} space -> {out}")


if __name__ == "__main__":
    main()
