"""Several processes opening their pipeline run at the same moment, as `dvc queue start -j N`
workers do: the harness for the SQLite and the tracking-server race tests."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# One stage's worth of tracking, started by a go-file so that every process has imported mlflow and
# torch first and all reach the store together.
WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from alae import tracking
    from alae.config import parse_params
    lr, folder, tracking.EXPERIMENT = float(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    (folder / f"ready-{lr}").touch()
    while not (folder / "go").exists():
        time.sleep(0.005)
    with tracking.pipeline_run(parse_params({"lr": lr}), "train") as run:
        run.log_metrics({"loss_d": lr}, step=1)
""")


def race_pipeline_runs(uri: str, lrs: tuple[str, ...], folder: Path, experiment: str) -> None:
    """One process per learning rate, released together; each must exit 0."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, lr, str(folder), experiment],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for lr in lrs]
    try:
        deadline = time.monotonic() + 120
        while len(list(folder.glob("ready-*"))) < len(lrs):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.05)
        (folder / "go").touch()
        outputs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out


def assert_one_experiment_one_run_each(client: Any, lrs: tuple[str, ...], experiment: str) -> None:
    assert [e.name for e in client.search_experiments()].count(experiment) == 1
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert sorted(r.data.params["lr"] for r in runs) == sorted(lrs)
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.data.metrics["loss_d"] for r in runs) == sorted(float(lr) for lr in lrs)
