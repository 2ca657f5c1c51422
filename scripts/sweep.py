"""`make sweep GRID=sweeps/<name>.yaml`: queue every candidate x seed of a grid as a DVC
experiment, run the queue one experiment at a time, export the MLflow runs to
sweeps/<name>.csv, and regenerate the README's table and sweeps/fid_vs_time.png (alae.sweep).

    python scripts/sweep.py all sweeps/default.yaml        # queue, run, export, report
    python scripts/sweep.py queue sweeps/default.yaml --only mlp
    python scripts/sweep.py export sweeps/default.yaml     # after `dvc queue start` by hand
    python scripts/sweep.py report                          # every sweeps/*.csv
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
    runs = grid.experiments(only or None)
    if seeds:
        runs = [(name, o) for name, o in runs if o["seed"] in seeds]
        if not runs:
            raise UserError(f"--seed {', '.join(map(str, seeds))}: no such seed among the "
                            "chosen candidates' seeds")
    for name, overrides in runs:
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
    rows = sw.rows_of_runs(grid, exported_runs(f"{grid.name}-"))
    out = out or str(ROOT / "sweeps" / f"{grid.name}.csv")
    sw.write_csv(rows, out)
    click.echo(f"exported {len(rows)} runs to {out}")


@main.command()
@click.argument("csvs", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--readme", default=str(ROOT / "README.md"), show_default=True)
@click.option("--figure", default=str(ROOT / "sweeps" / "fid_vs_time.png"), show_default=True)
@exits_cleanly
def report(csvs: tuple[str, ...], readme: str, figure: str) -> None:
    """The README's sweep table and the FID-vs-time figure from CSVS (default: sweeps/*.csv)."""
    paths = list(csvs) or sorted(str(p) for p in (ROOT / "sweeps").glob("*.csv"))
    rows = sw.read_csvs(paths)
    sw.write_readme_table(readme, sw.summary_table(rows),
                          [str(Path(p).resolve().relative_to(ROOT)) for p in paths])
    sw.plot_fid_vs_time(rows, figure)
    click.echo(f"wrote the table into {readme} and {figure} from {len(rows)} runs")


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
