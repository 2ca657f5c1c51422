"""DVC stage `featurenet`: train the network whose features are the offline FID space
(`featurenet.kind`: a classifier on the labels, or `selfsup`, contrastive without labels).

Writes the network (`--out`) and `{"kind": ..., "accuracy": ..., "sha256": ...}` (`--metrics`;
a selfsup net's accuracy is the k-NN accuracy of its features, absent without labels). A dataset
without labels cannot train a classifier: the stage then succeeds with a placeholder network file
that the evaluate stage refuses with a clear message (choose `selfsup`, or `evaluate.features:
inception`), and the metrics file says `{"skipped": "no labels"}`.
"""
import sys
import time
from pathlib import Path

# This checkout's `alae`, even under `dvc exp run --temp` where an installed copy would be stale.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click  # noqa: E402
import torch  # noqa: E402

from alae.config import load_params  # noqa: E402
from alae.data import read_manifest  # noqa: E402
from alae.errors import exits_cleanly  # noqa: E402
from alae.featurenet import KNN, save_featurenet, save_skipped, train_featurenet  # noqa: E402
from alae.io import file_sha256, write_json  # noqa: E402
from alae.tracking import pipeline_run  # noqa: E402


def record(params, metrics: dict, model_path: str, seconds: float = 0.0) -> None:
    """Into the configuration's MLflow run: accuracy, the featurenet's sha256 as a tag."""
    with pipeline_run(params, "featurenet") as run:
        if "sha256" in metrics:
            run.log_metrics({"featurenet_seconds": seconds})
        if "accuracy" in metrics:
            run.log_metrics({"featurenet_accuracy": metrics["accuracy"]})
        run.set_tags({"alae.featurenet_sha256": metrics.get("sha256", metrics.get("skipped"))})


@click.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--shards", default="data/shards", show_default=True)
@click.option("--out", default="models/featurenet.pt", show_default=True)
@click.option("--metrics", "metrics_path", default="metrics/featurenet.json", show_default=True)
@click.option("--device", default="cpu", show_default=True,
              help="torch device; the net is small enough that the CPU is the default")
@exits_cleanly
def main(params_path: str, shards: str, out: str, metrics_path: str, device: str) -> None:
    params = load_params(params_path)
    kind = params.featurenet.kind
    if kind == "classifier" and not read_manifest(shards).get("label_names"):
        save_skipped(out)
        metrics = {"skipped": "no labels"}
        write_json(metrics_path, metrics)
        record(params, metrics, out)
        click.echo(f"featurenet: {shards} has no labels; wrote a placeholder {out} "
                   "(FID needs featurenet.kind and evaluate.features: selfsup, or "
                   "evaluate.features: inception)")
        return
    start = time.perf_counter()
    net, acc = train_featurenet(shards, params.featurenet, torch.device(device))
    save_featurenet(net, out)
    seconds = time.perf_counter() - start
    # Only reproducible values in the DVC metrics file; the wall time goes to `record`.
    metrics = {"kind": kind, **({} if acc is None else {"accuracy": acc}),
               "sha256": file_sha256(out)}
    write_json(metrics_path, metrics)
    record(params, metrics, out, seconds)
    what = {"classifier": "test accuracy", "selfsup": f"test {KNN}-NN accuracy"}[kind]
    click.echo(f"featurenet ({kind}): " + (f"{what} {acc:.4f}" if acc is not None else
                                           "no labels to score it on")
               + f", {seconds:.0f} s -> {out}")


if __name__ == "__main__":
    main()
