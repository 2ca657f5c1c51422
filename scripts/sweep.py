"""`make sweep GRID=sweeps/<name>.yaml`: queue every candidate x seed of a grid as a DVC
experiment, run the queue one experiment at a time, export the MLflow runs to
sweeps/<name>.csv, and regenerate the README's table and sweeps/fid_vs_time.png (alae.sweep).

    python scripts/sweep.py all sweeps/default.yaml        # queue, run, export, report
    python scripts/sweep.py queue sweeps/default.yaml --only mlp
    python scripts/sweep.py export sweeps/default.yaml     # after `dvc queue start` by hand
    python scripts/sweep.py report                          # every sweeps/*.csv
    python scripts/sweep.py frontier default-frontier-720k-s0 --marks 180,360,720
    python scripts/sweep.py frontier-tables                # the frontier's README tables again
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import click  # noqa: E402

from alae.errors import UserError, exits_cleanly  # noqa: E402
from alae import sweep as sw  # noqa: E402

grid_arg = click.argument("grid_path", type=click.Path(exists=True, dir_okay=False))
grid_opt = click.option("--grid", "grid_path", default=str(ROOT / "sweeps" / "default.yaml"),
                        show_default=True,
                        help="the grid whose candidates name the budget table's configurations")
only_opt = click.option("--only", multiple=True, help="candidate(s) of the grid (default: all)")


def _env() -> dict[str, str]:
    """PATH with this Python's folder first (the project's .venv), so that dvc, its queue
    workers and the stages' `python` are the project's even when the venv is not activated."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    if shutil.which("dvc", path=path) is None:
        raise UserError("dvc not found beside this Python or on PATH: run `make setup`, "
                        "then `source .venv/bin/activate`")
    return {**os.environ, "PATH": path}


def _dvc(*args: str) -> str:
    out = subprocess.run(["dvc", *args], cwd=ROOT, capture_output=True, text=True, env=_env())
    if out.returncode != 0:
        raise UserError(f"dvc {' '.join(args)} failed: {(out.stderr or out.stdout).strip()[-500:]}")
    return out.stdout


@click.group()
def main() -> None:
    """Sweeps through `dvc exp run --queue`, recorded in MLflow and exported to sweeps/*.csv."""


@main.command()
@grid_arg
@only_opt
@click.option("--seed", "seeds", multiple=True, type=int,
              help="only these seeds of the candidates (default: each candidate's seeds)")
@exits_cleanly
def queue(grid_path: str, only: tuple[str, ...], seeds: tuple[int, ...]) -> None:
    """Queue the grid's experiments (nothing runs yet)."""
    grid = sw.load_grid(grid_path, ROOT / "params.yaml")
    for name, overrides in grid.experiments(only or None, seeds or None):
        _dvc(*sw.queue_command(name, overrides)[1:])
        click.echo(f"queued {name}")


@main.command()
@click.option("--poll", default=10.0, show_default=True, help="seconds between status checks")
@exits_cleanly
def start(poll: float) -> None:
    """Run the queue with one worker (comparable wall times) and wait until it is empty."""
    _dvc("queue", "start", "-j", "1")
    while True:
        status = _dvc("queue", "status")
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(poll)
    click.echo(status)
    if re.search(r"\bFailed\b", status):
        click.echo("some experiments failed: `dvc queue logs NAME` says why", err=True)


@main.command()
@grid_arg
@click.option("--out", type=click.Path(dir_okay=False), help="default: sweeps/<grid name>.csv")
@exits_cleanly
def export(grid_path: str, out: str | None) -> None:
    """Write the grid's finished runs (params, metrics, stage times, run key, commit) to a CSV."""
    from alae.tracking import exported_runs

    grid = sw.load_grid(grid_path, ROOT / "params.yaml")
    runs = exported_runs(f"{grid.name}-")
    spaces = featurenets_of_runs()
    for run in runs:
        run["featurenet"] = spaces.get(run["run_key"], "")
    rows = sw.rows_of_runs(grid, runs, sw.this_machine())
    out = out or str(ROOT / "sweeps" / f"{grid.name}.csv")
    if not rows:
        raise UserError(f"{grid_path}: no finished experiment of this grid in the MLflow store")
    merged = sw.merge_sweep_csv(out, rows)
    click.echo(f"exported {len(rows)} runs to {out} ({len(merged)} rows with those kept from "
               f"earlier exports)")


def featurenets_of_runs() -> dict[str, str]:
    """run key -> sha256 of the featurenet its metrics were measured with (the evaluate stage's
    MLflow tag), for every run of the store."""
    from mlflow.tracking import MlflowClient

    from alae.tracking import EXPERIMENT, KEY_TAG, tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri())
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], max_results=5000) if exp else []
    return {r.data.tags.get(KEY_TAG, ""): r.data.tags.get("alae.featurenet_sha256", "")
            for r in runs}


@main.command()
@click.argument("csvs", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--readme", default=str(ROOT / "README.md"), show_default=True)
@click.option("--figure", default=str(ROOT / "sweeps" / "fid_vs_time.png"), show_default=True)
@exits_cleanly
def report(csvs: tuple[str, ...], readme: str, figure: str) -> None:
    """The README's sweep table and the FID-vs-time figure from CSVS (default: the exports,
    sweeps/*.csv but the frontier's)."""
    paths = list(csvs) or sorted(str(p) for p in (ROOT / "sweeps").glob("*.csv")
                                 if p.name != "frontier.csv")
    rows = sw.read_csvs(paths)
    sw.write_readme_table(readme, sw.summary_table(rows),
                          [str(Path(p).resolve().relative_to(ROOT)) for p in paths])
    sw.plot_fid_vs_time(rows, figure)
    click.echo(f"wrote the table into {readme} and {figure} from {len(rows)} runs")


@main.command()
@click.argument("experiment")
@click.option("--marks", default="180,360,720", show_default=True,
              help="kimg at which to evaluate the run's kept checkpoints (the first at or after each)")
@click.option("--csv", "csv_path", default=str(ROOT / "sweeps" / "frontier.csv"), show_default=True)
@grid_opt
@click.option("--params", "params_path", default=str(ROOT / "params.yaml"), show_default=True,
              help="its `evaluate` section is the protocol (the evaluate stage's)")
@click.option("--featurenet", default=str(ROOT / "models" / "featurenet.pt"), show_default=True)
@click.option("--refstats", default=str(ROOT / "models" / "refstats_classifier.npz"), show_default=True)
@click.option("--shards", default=str(ROOT / "data" / "shards"), show_default=True)
@exits_cleanly
def frontier(experiment: str, marks: str, csv_path: str, grid_path: str, params_path: str,
             featurenet: str, refstats: str, shards: str) -> None:
    """The evaluate stage's metrics of one run at several budgets, from its kept checkpoints.

    The schedule is a function of images seen alone, so a long run passes through the state of
    every shorter run of the same params and seed: its checkpoint at 180 kimg is the model a
    180 kimg run ends with. Rows go to --csv (replacing the same experiment and mark), the
    README's frontier table is regenerated from it."""
    import json

    from alae.checkpoint import load_checkpoint, load_model
    from alae.config import load_params
    from alae.devices import resolve_device
    from alae.metrics import evaluate_model, provenance
    from alae.metrics.features import load_extractor
    from alae.metrics.ppl import load_distance
    from alae.metrics.refstats import load_reference
    from alae.metrics.stats import StatsCache
    from alae.tracking import exported_runs

    runs = [r for r in exported_runs(experiment) if r["exp_name"] == experiment and r["run_key"]]
    if not runs:
        raise UserError(f"{experiment}: no run of that experiment in the MLflow store")
    key = max(runs, key=lambda r: r["start_time"])["run_key"]
    folder = ROOT / ".alae" / "runs" / key
    kept = {int(p.stem.split("-")[1]): p for p in sorted(folder.glob("ckpt-*.pt"))}
    cfg = load_params(params_path).evaluate
    device = resolve_device(cfg.device, "evaluate.device")
    extractor = load_extractor(cfg.features, featurenet, device, resize=cfg.resize)
    distance = load_distance(cfg.ppl_distance, extractor, device)
    chosen = {}   # every mark's checkpoint found before any is evaluated
    for mark in (float(m) for m in marks.split(",")):
        seen = [n for n in kept if n >= mark * 1000]
        if not seen:
            raise UserError(f"{folder}: no kept checkpoint at or after {mark:g} kimg "
                            f"(kept: {', '.join(f'{n / 1000:g}' for n in kept) or 'none'})")
        chosen[mark] = min(seen)
    rows = []
    for mark, images in chosen.items():
        path = kept[images]
        model, _, _ = load_model(path, device)
        reference = load_reference(refstats, extractor, shards, int(model.resolution),
                                   cfg.reference)
        metrics = evaluate_model(model, extractor, shards, cfg, reference=reference,
                                 ppl_distance=distance, cache=StatsCache.default(ROOT))
        seconds = load_checkpoint(path)["training"]["seconds"]
        rows.append({"experiment": experiment, "run_key": key, "kimg": f"{mark:g}",
                     "images_seen": images, "train_seconds": seconds,
                     "featurenet": provenance(extractor).get("featurenet_sha256", cfg.features)[:12],
                     "machine": sw.this_machine(),
                     **metrics})
        click.echo(f"{experiment} at {images} images: " + json.dumps(
            {k: round(v, 4) for k, v in metrics.items()}))
    sw.merge_frontier_csv(csv_path, rows)
    write_frontier_tables(csv_path, grid_path, params_path)
    click.echo(f"wrote {len(rows)} rows to {csv_path} and the README's frontier tables")


def write_frontier_tables(csv_path: str, grid_path: str, params_path: str) -> None:
    """The README's frontier table (one line per run and mark) and its budget table (mean ± sd
    over seeds per configuration and mark), both from the frontier CSV."""
    from alae.config import load_params

    rows = sw.read_csvs([csv_path])
    source = [str(Path(csv_path).resolve().relative_to(ROOT))]
    grid = sw.load_grid(grid_path, params_path)
    default_kimg = load_params(params_path).train.kimg
    sw.write_readme_table(ROOT / "README.md", sw.frontier_table(rows), source, which="frontier")
    sw.write_readme_table(ROOT / "README.md", sw.budget_table(rows, grid, default_kimg),
                          [*source, str(Path(grid_path).resolve().relative_to(ROOT))],
                          which="budget")


@main.command(name="frontier-tables")
@click.option("--csv", "csv_path", default=str(ROOT / "sweeps" / "frontier.csv"), show_default=True)
@grid_opt
@click.option("--params", "params_path", default=str(ROOT / "params.yaml"), show_default=True)
@exits_cleanly
def frontier_tables(csv_path: str, grid_path: str, params_path: str) -> None:
    """The README's two frontier tables again from --csv, evaluating nothing."""
    write_frontier_tables(csv_path, grid_path, params_path)
    click.echo("wrote the README's frontier and budget tables")


@main.command(name="all")
@grid_arg
@only_opt
@click.pass_context
def all_(ctx: click.Context, grid_path: str, only: tuple[str, ...]) -> None:
    """queue, start, export, report."""
    ctx.invoke(queue, grid_path=grid_path, only=only)
    ctx.invoke(start)
    ctx.invoke(export, grid_path=grid_path)
    ctx.invoke(report)


if __name__ == "__main__":
    main()
