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
from alae.figures import (interpolation_figure, reconstructions_figure, samples_figure,  # noqa: E402
                          progress_figure, save_png, style_mixing_figure, titled)
from alae.tracking import pipeline_run  # noqa: E402


def _metric(metrics: dict, key: str, text: str) -> str:
    return f"{text} {metrics[key]:.4g}" if isinstance(metrics.get(key), (int, float)) else ""


def titles(name: str, params, meta: dict, metrics_path: str) -> list[str]:
    """Title lines of figure `name`: the run (short key), images seen, model, what is drawn,
    and the evaluate stage's number for it where there is one."""
    try:
        metrics = json.loads(Path(metrics_path).read_text())
    except (OSError, ValueError):
        metrics = {}
    m, f = params.model, params.figures
    seen = f" | {meta['images_seen'] / 1000:.0f} kimg" if "images_seen" in meta else ""
    run = f"run {str(meta.get('run_key', '?'))[:8]}{seen} | {m.kind} ALAE, latent {m.latent}"
    space = params.evaluate.features
    n = f"{params.evaluate.num_images // 1000}k" if params.evaluate.num_images >= 1000 \
        else str(params.evaluate.num_images)
    what = {
        "samples.png": [f"samples G(F(z)), truncated: psi {f.psi} on the first {f.cutoff} "
                        "style slots" if f.psi is not None else "samples G(F(z)), no truncation"],
        "samples_untruncated.png": ["samples G(F(z)), no truncation (what FID measures)",
                                    _metric(metrics, f"fid_{space}", f"FID ({space}, {n}):")],
        "reconstructions.png": ["test images x and their reconstructions G(E(x))",
                                " | ".join(filter(None, (
                                    _metric(metrics, f"rec_fid_{space}", f"rec FID ({space}, {n}):"),
                                    _metric(metrics, "mse", "mse:"))))],
        "interpolation.png": [f"E(x_a) -> E(x_b) in W, decoded in {f.columns} steps; the real "
                              "x_a and x_b at the ends"],
        "style_mixing.png": ["row: the left image with the styles of the source above copied "
                             "in (coarse, middle or fine, as labelled)"],
        "progress.png": ["fixed-seed samples at the end of each level of detail"],
    }
    return [run, *what.get(name, [])]


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
        figures = {name: titled(image, titles(name, params, meta, metrics_path))
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
