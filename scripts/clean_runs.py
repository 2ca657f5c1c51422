"""`make clean-runs`: delete the working folders of old runs (`.alae/runs/<run key>/`: resumable
checkpoints), keeping the run of the current params and code. A folder is kept, and named, when
a process is training in it or when it holds metrics still waiting for the tracking server.
DVC's cache is another matter: `dvc gc -w` (README).

    python scripts/clean_runs.py [--params params.yaml] [--dry-run]
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click  # noqa: E402

from alae.checkpoint import RunCheckpoints  # noqa: E402
from alae.config import load_params  # noqa: E402
from alae.errors import UserError, exits_cleanly  # noqa: E402
from alae.tracking import PENDING, repo_root, run_dir, run_key  # noqa: E402


def clean_runs(runs: Path, keep: str, dry_run: bool = False) -> list[tuple[Path, str]]:
    """(folder, what was done) for every run folder under `runs` but `keep`."""
    done = []
    folders = sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
    for folder in folders:
        pending = folder / PENDING
        if folder.name == keep:
            continue
        if pending.is_file() and pending.stat().st_size:
            done.append((folder, f"kept: metrics waiting to be sent ({PENDING})"))
        elif dry_run:
            done.append((folder, "would remove"))
        else:
            try:
                with RunCheckpoints(folder).exclusive():  # held while deleting: no trainer starts
                    shutil.rmtree(folder)
                done.append((folder, "removed"))
            except UserError:
                done.append((folder, "kept: a process is training this run"))
    return done


@click.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True,
              help="the run of these params (and this code) is kept")
@click.option("--dry-run", is_flag=True, help="only say what would be removed")
@exits_cleanly
def main(params_path: str, dry_run: bool) -> None:
    keep = run_key(load_params(params_path))
    runs = run_dir(keep).parent
    for folder, what in clean_runs(runs, keep, dry_run):
        click.echo(f"{what} {folder.relative_to(repo_root())}")
    click.echo(f"kept the current run {keep}" + (" (no folder yet)" if not (runs / keep).is_dir()
                                                 else ""))


if __name__ == "__main__":
    main()
