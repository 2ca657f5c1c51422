"""MLflow: one run per pipeline configuration, its status, and a dead server failing fast."""
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alae.config import parse_params
from alae.tracking import KEY_TAG, KIND, KIND_TAG, pipeline_run, run_key

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri), tmp_path


def test_same_configuration_continues_one_run_and_a_change_starts_another(store):
    client, _ = store
    a, b = parse_params({"lr": 0.001}), parse_params({"lr": 0.003})
    with pipeline_run(a, "train") as run1:
        run1.log_metrics({"loss_d": 1.0}, step=10)
    with pipeline_run(a, "evaluate") as run2:
        run2.log_metrics({"fid_classifier": 5.0})
    with pipeline_run(b, "train") as run3:
        pass
    assert run1.run_id == run2.run_id != run3.run_id
    assert run_key(a) != run_key(b) and run_key(a) == run_key(parse_params({"lr": 0.001}))
    run = client.get_run(run1.run_id)
    assert run.data.tags[KEY_TAG] == run_key(a)
    assert run.data.params["lr"] == "0.001" and "train.kimg" in run.data.params
    seconds = {k: v for k, v in run.data.metrics.items() if k.startswith("stage_seconds_")}
    assert {k: v for k, v in run.data.metrics.items() if k not in seconds} == {
        "loss_d": 1.0, "fid_classifier": 5.0}
    # each stage's wall time, counted from when the process imported alae
    assert sorted(seconds) == ["stage_seconds_evaluate", "stage_seconds_train"]
    assert all(v > 0 for v in seconds.values())
    assert run.info.status == "FINISHED"


def test_failed_stage_marks_the_run_and_the_next_success_clears_it(store):
    client, _ = store
    params = parse_params({"seed": 3})
    with pytest.raises(RuntimeError):
        with pipeline_run(params, "train") as run:
            raise RuntimeError("boom")
    failed = client.get_run(run.run_id)
    assert failed.info.status == "FAILED" and failed.data.tags["alae.error"] == "train: boom"
    with pipeline_run(params, "train"):
        pass
    ok = client.get_run(run.run_id)
    assert ok.info.status == "FINISHED" and ok.data.tags["alae.error"] == ""


def test_artifacts_live_beside_the_sqlite_store(store, tmp_path):
    _, folder = store
    (tmp_path / "note.txt").write_text("hi")
    with pipeline_run(parse_params({}), "figures") as run:
        run.log_artifact(tmp_path / "note.txt")
    assert list((folder / "mlartifacts").rglob("note.txt"))


def test_the_experiment_is_marked_as_model_training_new_or_old(store):
    client, _ = store
    with pipeline_run(parse_params({}), "train") as run:
        pass
    exp_id = client.get_run(run.run_id).info.experiment_id
    assert client.get_experiment(exp_id).tags[KIND_TAG] == KIND == "custom_model_development"
    client.delete_experiment_tag(exp_id, KIND_TAG)  # as made before the tag was set
    with pipeline_run(parse_params({}), "train"):
        pass
    assert client.get_experiment(exp_id).tags[KIND_TAG] == KIND


def test_unreachable_server_fails_within_seconds_naming_the_uri(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    (tmp_path / "params.yaml").write_text("data: {limit: 10}\n")
    start = time.monotonic()
    out = subprocess.run([sys.executable, str(ROOT / "stages/shard.py"), "--params",
                          str(tmp_path / "params.yaml"), "--out", str(tmp_path / "shards")],
                         capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "MLFLOW_TRACKING_URI": uri})
    assert time.monotonic() - start < 10
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: MLFLOW_TRACKING_URI {uri}: ")
    assert not (tmp_path / "shards").exists()


def test_metrics_wait_while_the_store_is_away_and_arrive_in_order(store, tmp_path, monkeypatch,
                                                                   capsys):
    client, _ = store
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    params = parse_params({"seed": 5})
    with pytest.raises(Exception, match="records still wait"):
        with pipeline_run(params, "train") as run:
            real_log_batch = run.client.log_batch

            def down(*args, **kwargs):
                raise ConnectionError("Connection refused")

            monkeypatch.setattr(run.client, "log_batch", down)
            for step in (1, 2, 3):
                run.log_metrics({"loss_d": float(step)}, step=step)
            assert run.pending_count() == 3 and run.logged_steps("loss_d") == {1, 2, 3}
            run._retry_at = 0.0  # the store is back before the stage ends
            monkeypatch.setattr(run.client, "log_batch", real_log_batch)
            run.log_metrics({"loss_d": 4.0}, step=4)
            assert not run.pending.exists()
            monkeypatch.setattr(run.client, "log_batch", down)  # ...and gone again at the end
            run.log_metrics({"loss_d": 5.0}, step=5)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "not reachable" in line]
    assert len(warnings) == 2  # once per outage (not per metric), naming the file
    assert all(str(run.pending) in w for w in warnings)
    history = client.get_metric_history(run.run_id, "loss_d")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == \
        [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
    with pipeline_run(params, "train"):  # the next stage of the run sends what waits
        pass
    steps = sorted(m.step for m in client.get_metric_history(run.run_id, "loss_d"))
    assert steps == [1, 2, 3, 4, 5] and not run.pending.exists()
    assert client.get_run(run.run_id).info.status == "FINISHED"


def test_a_moved_repository_writes_artifacts_beside_its_store(tmp_path, monkeypatch):
    """MLflow keeps absolute artifact paths: after `mv repo elsewhere`, new runs must not write
    into the old folder (which may be gone, or another user's copy)."""
    from mlflow.tracking import MlflowClient

    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    (tmp_path / "note.txt").write_text("hi")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{old / 'mlflow.db'}")
    with pipeline_run(parse_params({"seed": 1}), "figures") as first:
        first.log_artifact(tmp_path / "note.txt")
    old.rename(new)
    uri = f"sqlite:///{new / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pipeline_run(parse_params({"seed": 2}), "figures") as second:
        second.log_artifact(tmp_path / "note.txt")
    assert not old.exists()
    client = MlflowClient(uri)
    for run in (first, second):
        info = client.get_run(run.run_id).info
        assert info.artifact_uri.startswith((new / "mlartifacts").as_uri()), info.artifact_uri
        assert (Path(info.artifact_uri[len("file://"):]) / "note.txt").read_text() == "hi"
    assert client.get_experiment_by_name("alae").artifact_location == (new / "mlartifacts").as_uri()


def test_an_artifact_location_that_is_not_the_projects_is_refused(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from alae.errors import UserError

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    MlflowClient(uri).create_experiment("alae", artifact_location=(tmp_path / "elsewhere").as_uri())
    with pytest.raises(UserError, match="elsewhere.*not beside the store"):
        with pipeline_run(parse_params({}), "figures"):
            pass
