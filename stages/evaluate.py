"""DVC stage `evaluate`: FID of generations and reconstructions, the data floor and the
reconstruction error of the EMA model, in the featurenet's feature space."""
import sys
from pathlib import Path

# This checkout's `alae`, even under `dvc exp run --temp` where an installed copy would be stale.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click  # noqa: E402

from alae.checkpoint import load_model  # noqa: E402
from alae.config import load_params  # noqa: E402
from alae.errors import exits_cleanly  # noqa: E402
from alae.io import write_json  # noqa: E402
from alae.metrics import evaluate_model, provenance  # noqa: E402
from alae.metrics.features import ClassifierFeatures  # noqa: E402
from alae.tracking import pipeline_run  # noqa: E402


@click.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--model", "model_path", default="models/alae.pt", show_default=True)
@click.option("--featurenet", default="models/featurenet.pt", show_default=True)
@click.option("--shards", default="data/shards", show_default=True)
@click.option("--out", default="metrics/eval.json", show_default=True)
@exits_cleanly
def main(params_path: str, model_path: str, featurenet: str, shards: str, out: str) -> None:
    params = load_params(params_path)
    model, _, meta = load_model(model_path)
    extractor = ClassifierFeatures.from_file(featurenet)
    with pipeline_run(params, "evaluate") as run:
        metrics = evaluate_model(model, extractor, shards, params.evaluate)
        write_json(out, metrics)
        run.log_metrics(metrics)
        # Every classifier-space number is tied to the exact featurenet file it came from.
        run.set_tags({f"alae.{k}": v for k, v in provenance(extractor).items()})
        if meta.get("run_key") != run.key:
            run.set_tags({"alae.trained_by": meta.get("run_id", "unknown")})
    click.echo("evaluate: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))


if __name__ == "__main__":
    main()
