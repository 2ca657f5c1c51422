"""DVC stage `figures`: samples (with and without truncation), reconstructions, interpolations
and, for the StyleALAE, style mixing, all from the EMA networks with fixed seeds."""
import sys
from pathlib import Path

# This checkout's `alae`, even under `dvc exp run --temp` where an installed copy would be stale.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click  # noqa: E402

from alae.checkpoint import load_model, load_snapshots  # noqa: E402
from alae.config import load_params  # noqa: E402
from alae.errors import exits_cleanly  # noqa: E402
from alae.figures import (interpolation_figure, reconstructions_figure, samples_figure,  # noqa: E402
                          progress_figure, save_png, style_mixing_figure)
from alae.tracking import pipeline_run  # noqa: E402


@click.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--model", "model_path", default="models/alae.pt", show_default=True)
@click.option("--shards", default="data/shards", show_default=True)
@click.option("--out", default="figures", show_default=True)
@exits_cleanly
def main(params_path: str, model_path: str, shards: str, out: str) -> None:
    params = load_params(params_path)
    cfg = params.figures
    model, _, meta = load_model(model_path)
    out_dir = Path(out)
    with pipeline_run(params, "figures") as run:
        figures = {
            "samples.png": samples_figure(model, cfg, truncate=True),
            "samples_untruncated.png": samples_figure(model, cfg, truncate=False),
            "reconstructions.png": reconstructions_figure(model, shards, cfg),
            "interpolation.png": interpolation_figure(model, shards, cfg),
        }
        if model.progressive:
            figures["style_mixing.png"] = style_mixing_figure(model, shards, cfg)
            snapshots = load_snapshots(model_path)
            if snapshots:
                figures["progress.png"] = progress_figure(snapshots, cfg.columns)
            else:
                click.echo(f"figures: {model_path} holds no per-level samples (not written by "
                           "the train stage?); progress.png not written")
        else:
            click.echo("figures: style_mixing.png and progress.png do not apply to model.kind "
                       f"{params.model.kind!r} (one w for the whole image, no growing); "
                       "not written")
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
