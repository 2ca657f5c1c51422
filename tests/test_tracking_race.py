"""Several processes on one SQLite MLflow store (`dvc queue start -j N`): a fresh store created by
racing processes, and retries while SQLite says "database is locked"."""
from __future__ import annotations

import time

import pytest
import sqlalchemy.exc
from mlflow.exceptions import MlflowException

from alae import tracking
from alae.errors import UserError
from alae.tracking import RetryingClient, retry_locked
from race_helpers import assert_one_experiment_one_run_each, race_pipeline_runs


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
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    lrs = ("0.001", "0.002", "0.003")
    race_pipeline_runs(uri, lrs, tmp_path, "alae")
    assert_one_experiment_one_run_each(MlflowClient(uri), lrs, "alae")


@pytest.mark.slow
def test_a_real_locked_sqlite_store_is_waited_out(tmp_path, monkeypatch):
    """Another connection holds SQLite's exclusive lock longer than MLflow's 20 s busy timeout:
    the logging call fails with MLflow's own "database is locked" error, and the retry succeeds
    once the lock is gone."""
    import sqlite3
    import threading

    from alae.config import parse_params
    from alae.tracking import pipeline_run

    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    seen = []
    real = tracking._is_locked
    monkeypatch.setattr(tracking, "_is_locked", lambda e: seen.append(real(e)) or seen[-1])
    holding, done = threading.Event(), threading.Event()

    def hold(seconds: float) -> None:
        con = sqlite3.connect(db, isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        holding.set()
        time.sleep(seconds)
        con.execute("COMMIT")
        con.close()
        done.set()

    with pipeline_run(parse_params({"lr": 0.004}), "train") as run:
        thread = threading.Thread(target=hold, args=(24.0,))
        thread.start()
        holding.wait(10)
        run.log_metrics({"loss_d": 0.5}, step=1)
        assert done.is_set()  # it did wait the lock out
    thread.join()
    assert True in seen  # MLflow's error was recognised as a lock and retried
    from mlflow.tracking import MlflowClient

    assert MlflowClient(f"sqlite:///{db}").get_run(run.run_id).data.metrics["loss_d"] == 0.5
