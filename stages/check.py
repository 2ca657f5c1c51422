"""Stage `check`: validate params.yaml before DVC touches any other stage's outputs.

DVC deletes a stage's outputs just before it runs the stage, so a value that the stage's own
check refuses (say `dvc exp run -S lr=-1`) would already have removed `models/alae.pt`. This stage
depends on every params section and every other stage depends on its output, so DVC runs it
first: a bad value fails here, in one line, with every output still in place. Its output is the
same bytes for every valid params file, so a params change reruns only the stages that use it.

    python stages/check.py --params params.yaml --out .alae/params_checked
"""
from __future__ import annotations

import sys
from pathlib import Path

# This checkout's `alae`, even under `dvc exp run --temp` where an installed copy would be stale.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click  # noqa: E402

from alae.config import load_params  # noqa: E402
from alae.errors import exits_cleanly  # noqa: E402
from alae.io import atomic_open  # noqa: E402

CHECKED = "params.yaml passed alae.config's checks\n"  # constant: see the module docstring


@click.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True,
              type=click.Path(dir_okay=False))
@click.option("--out", default=".alae/params_checked", show_default=True)
@exits_cleanly
def main(params_path: str, out: str) -> None:
    load_params(params_path)
    with atomic_open(out, "w") as f:
        f.write(CHECKED)


if __name__ == "__main__":
    main()
