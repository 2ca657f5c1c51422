"""DVC stage `figures`: samples (with and without truncation), reconstructions, interpolations
and, for the StyleALAE, style mixing, all from the EMA networks with fixed seeds."""
import json
import sys
from pathlib import Path

# This checkout's `alae`, even under `dvc exp run --temp` where an installed copy would be stale.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click  # noqa: E402

from alae.checkpoint import load_model, load_snapshots  # noqa: E402
from alae.config import load_params  # noqa: E402
from alae.errors import exits_cleanly  # noqa: E402
from alae.figures import (figure_set, figure_titles, first_test_images, reals_needed,  # noqa: E402
                          save_png, titled)
from alae.tracking import pipeline_run  # noqa: E402


def _metrics(path: str) -> dict:
    """The evaluate stage's numbers for the titles; none when it has not run."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


@click.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--model", "model_path", default="models/alae.pt", show_default=True)
@click.option("--shards", default="data/shards", show_default=True)
@click.option("--metrics", "metrics_path", default="metrics/eval.json", show_default=True,
              help="the evaluate stage's metrics, quoted in the figures' titles")
@click.option("--out", default="figures", show_default=True)
@exits_cleanly
def main(params_path: str, model_path: str, shards: str, metrics_path: str, out: str) -> None:
    params = load_params(params_path)
    model, _, meta = load_model(model_path)
    out_dir = Path(out)
    with pipeline_run(params, "figures") as run:
        reals = first_test_images(model, shards, reals_needed(params.figures))
        figures, skipped = figure_set(model, params.figures, reals, load_snapshots(model_path))
        for line in skipped:
            click.echo(f"figures: not written: {line}")
        metrics = _metrics(metrics_path)
        figures = {name: titled(image, figure_titles(name, params, meta, metrics))
                   for name, image in figures.items()}
        for stale in set(p.name for p in out_dir.glob("*.png")) - set(figures):
            (out_dir / stale).unlink()  # a figure of another model kind must not linger
        for name, image in figures.items():
            save_png(image, out_dir / name)
            run.log_artifact(out_dir / name, "figures")
        if meta.get("run_key") != run.key:
            run.set_tags({"alae.trained_by": meta.get("run_id", "unknown")})
    click.echo(f"wrote {', '.join(figures)} to {out_dir}")


if __name__ == "__main__":
    main()
