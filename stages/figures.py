"""DVC stage `figures`: sample grid and reconstructions from the EMA model."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click  # noqa: E402

from alae.checkpoint import load_model  # noqa: E402
from alae.config import load_params  # noqa: E402
from alae.errors import exits_cleanly  # noqa: E402
from alae.figures import reconstructions_figure, samples_figure, save_png  # noqa: E402
from alae.tracking import pipeline_run  # noqa: E402


@click.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--model", "model_path", default="models/alae.pt", show_default=True)
@click.option("--shards", default="data/shards", show_default=True)
@click.option("--out", default="figures", show_default=True)
@exits_cleanly
def main(params_path: str, model_path: str, shards: str, out: str) -> None:
    params = load_params(params_path)
    model, _, meta = load_model(model_path)
    out_dir = Path(out)
    with pipeline_run(params, "figures") as run:
        figures = {
            "samples.png": samples_figure(model, params.figures),
            "reconstructions.png": reconstructions_figure(model, shards, params.figures),
        }
        for name, image in figures.items():
            save_png(image, out_dir / name)
            run.log_artifact(out_dir / name, "figures")
        if meta.get("run_key") != run.key:
            run.set_tags({"alae.trained_by": meta.get("run_id", "unknown")})
    click.echo(f"wrote {', '.join(figures)} to {out_dir}")


if __name__ == "__main__":
    main()
