"""Several processes on one SQLite MLflow store (`dvc queue start -j N`): a fresh store created by
racing processes, and retries while SQLite says "database is locked"."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy.exc
from mlflow.exceptions import MlflowException

from alae import tracking
from alae.errors import UserError
from alae.tracking import RetryingClient, retry_locked

ROOT = Path(__file__).resolve().parents[1]

# One stage's worth of tracking, started by a go-file so that every process has imported mlflow and
# torch and reaches the store at the same moment.
WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from alae.config import parse_params
    from alae.tracking import pipeline_run
    lr, folder = float(sys.argv[1]), Path(sys.argv[2])
    (folder / f"ready-{lr}").touch()
    while not (folder / "go").exists():
        time.sleep(0.005)
    with pipeline_run(parse_params({"lr": lr}), "train") as run:
        run.log_metrics({"loss_d": lr}, step=1)
""")


def locked(n: int, result: str = "ok"):
    """A callable that fails `n` times the way MLflow's SQLAlchemy store does, then succeeds."""
    calls = []

    def fn(*args, **kwargs):
        calls.append((args, kwargs))
        if len(calls) <= n:
            cause = sqlalchemy.exc.OperationalError("INSERT ...", {}, Exception("database is locked"))
            raise MlflowException(str(cause)) from cause
        return result

    return fn, calls


@pytest.fixture
def no_sleep(monkeypatch):
    monkeypatch.setattr(tracking, "LOCK_BACKOFF_S", 0.0)


def test_locked_store_is_retried_until_it_answers(no_sleep):
    fn, calls = locked(3)
    assert retry_locked("log_batch", fn, "run", metrics=[1]) == "ok"
    assert calls == [(("run",), {"metrics": [1]})] * 4


def test_other_errors_are_not_retried(no_sleep):
    calls = []

    def fn():
        calls.append(1)
        raise MlflowException("RESOURCE_ALREADY_EXISTS: experiment 'alae' exists")

    with pytest.raises(MlflowException):
        retry_locked("create_experiment", fn)
    assert calls == [1]


def test_a_store_that_stays_locked_gives_one_line(no_sleep):
    fn, calls = locked(100)
    with pytest.raises(UserError) as e:
        RetryingClient(type("C", (), {"log_batch": staticmethod(fn)})()).log_batch("run")
    assert len(calls) == tracking.LOCK_ATTEMPTS
    assert "\n" not in str(e.value) and "(log_batch)" in str(e.value)
    assert "tracking server" in str(e.value)


def test_processes_racing_on_a_fresh_store_all_get_their_run(tmp_path):
    """Without the store lock, MLflow's schema migration fails in every racing process."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    lrs = ("0.001", "0.002", "0.003")
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, lr, str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for lr in lrs]
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("ready-*"))) < len(lrs):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.05)
        (tmp_path / "go").touch()
        outputs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    assert [e.name for e in client.search_experiments()].count("alae") == 1
    runs = client.search_runs([client.get_experiment_by_name("alae").experiment_id])
    assert sorted(r.data.params["lr"] for r in runs) == list(lrs)
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.data.metrics["loss_d"] for r in runs) == [0.001, 0.002, 0.003]
