"""Parallel experiments on the default SQLite store: `dvc exp run --queue` twice, then
`dvc queue start -j 2`. Both workers run train, evaluate and figures at the same time in temporary
copies, writing one `mlflow.db` at the real repository's root (DVC_ROOT) that neither has yet."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from pipeline_helpers import copy_repo, run

pytestmark = pytest.mark.slow

LRS = ("0.001", "0.003")
EVAL_KEYS = ("fid_classifier", "rec_fid_classifier", "mse", "probe_acc")


def wait_for_queue(repo: Path, timeout: float = 540) -> str:
    """Poll `dvc queue status` until nothing is queued or running; its last output."""
    deadline = time.monotonic() + timeout
    while True:
        status = run(["dvc", "queue", "status"], repo).stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"queue still busy after {timeout:.0f} s:\n{status}")
        time.sleep(3)


@pytest.fixture(scope="module")
def queued(reproduced_repo, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    repo = copy_repo(reproduced_repo, tmp_path_factory.mktemp("queue") / "repo")
    assert not (repo / "mlflow.db").exists()  # the racing workers create the store
    names = {}
    for lr in LRS:
        out = run(["dvc", "exp", "run", "--queue", "-S", f"lr={lr}"], repo).stdout
        names[lr] = re.search(r"Queued experiment '([^']+)'", out).group(1)
    try:
        run(["dvc", "queue", "start", "-j", "2"], repo)
        status = wait_for_queue(repo)
    finally:
        run(["dvc", "queue", "stop", "--kill"], repo, check=False)
    for lr, name in names.items():
        assert re.search(rf"\b{name}\b.*\bSuccess\b", status), \
            f"{name} (lr={lr}):\n{status}\n{run(['dvc', 'queue', 'logs', name], repo, check=False).stdout}"
    return repo, names


def test_each_queued_experiment_has_its_own_complete_run(queued):
    from mlflow.tracking import MlflowClient

    repo, names = queued
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("alae").experiment_id])
    by_lr = {r.data.params["lr"]: r for r in runs}
    assert sorted(by_lr) == sorted(LRS) and len(runs) == len(LRS)
    for lr, r in by_lr.items():
        assert r.info.status == "FINISHED", r.data.tags.get("alae.error")
        assert r.data.tags["dvc.exp_name"] == names[lr]
        for key in (*EVAL_KEYS, "loss_d"):
            assert key in r.data.metrics, (lr, key)
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"model", "figures", "params.yaml"} <= artifacts, (lr, artifacts)
        assert client.list_artifacts(r.info.run_id, "model")
    a, b = by_lr.values()  # the two workers really ran at the same time
    assert a.info.start_time < b.info.end_time and b.info.start_time < a.info.end_time
    assert (repo / "mlartifacts").is_dir() and (repo / "mlflow.db.lock").exists()


def test_dvc_exp_show_lists_both_experiments_with_the_metrics_mlflow_has(queued):
    from mlflow.tracking import MlflowClient

    repo, names = queued
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    listed = {}  # experiment name -> (its lr, its metrics/eval.json)
    for rev in shown:
        for exp in rev.get("experiments") or []:
            for exp_rev in exp["revs"]:
                data = exp_rev["data"]
                listed[exp_rev["name"]] = (data["params"]["params.yaml"]["data"]["lr"],
                                           data["metrics"]["metrics/eval.json"]["data"])
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("alae").experiment_id])
    mlflow_fid = {r.data.tags["dvc.exp_name"]: r.data.metrics["fid_classifier"] for r in runs}
    for lr, name in names.items():
        assert name in listed, (name, sorted(listed))
        exp_lr, metrics = listed[name]
        assert exp_lr == float(lr)
        assert metrics["fid_classifier"] == pytest.approx(mlflow_fid[name])
