"""Team mode: `scripts/team_server.sh` (what `make team-server` runs) starts a real PostgreSQL and a
real `mlflow server --serve-artifacts` over it; the pipeline records through
MLFLOW_TRACKING_URI=http://... and everything is read back with MlflowClient.

Skips, saying why, only where PostgreSQL's binaries are missing and cannot be installed."""
from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from alae.config import parse_params
from alae.tracking import pipeline_run
from race_helpers import assert_one_experiment_one_run_each, race_pipeline_runs
from server_helpers import free_port, wait_until_healthy

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts/team_server.sh"
pytestmark = pytest.mark.slow


def postgres_installed() -> bool:
    return bool(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


def ensure_postgres() -> None:
    """Install Debian's postgresql when missing and we may (root), as `.ci/run` does."""
    if not postgres_installed() and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "postgresql"]):
            if subprocess.run(cmd, env=env, capture_output=True, timeout=900).returncode != 0:
                break
    if not postgres_installed():
        pytest.skip("PostgreSQL is not installed and could not be (apt-get install postgresql; "
                    ".ci/run does it as root)")


def stop(proc: subprocess.Popen, team_dir: Path) -> None:
    """SIGTERM lets the script stop both servers; whatever is left after a minute is killed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    pid_file = team_dir / "mlflow.pid"
    if pid_file.exists():
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    if (team_dir / "pgdata/postmaster.pid").exists():
        pg_ctl = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))[-1]
        cmd = [pg_ctl, "-D", str(team_dir / "pgdata"), "-m", "immediate", "stop"]
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd,
                       capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def team_server() -> Iterator[tuple[str, Path]]:
    """The tracking server's URL and the team folder (cluster, artifacts, logs)."""
    ensure_postgres()
    # Not under pytest's tmp folder: that is private to root, and the postgres user must enter it.
    team_dir = Path(tempfile.mkdtemp(prefix="alae-team-"))
    team_dir.chmod(0o755)
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "TEAM_DIR": str(team_dir), "PG_PORT": str(free_port()), "PORT": str(port),
           "WORKERS": "1"}
    log_path = team_dir / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(SCRIPT)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc, log_path, timeout=180)
        yield url, team_dir
    finally:
        stop(proc, team_dir)
        print(log_path.read_text())  # the server log, shown with a failure (or with -s)
        shutil.rmtree(team_dir, ignore_errors=True)


def test_pipeline_run_records_over_http_into_postgres(team_server, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    url, team_dir = team_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    (tmp_path / "model.txt").write_text("weights")
    params = parse_params({"lr": 0.0025})
    with pipeline_run(params, "train") as run:
        for step in (256, 512):
            run.log_metrics({"loss_d": step / 1000}, step=step)
        run.log_artifact(tmp_path / "model.txt", "model")
    with pipeline_run(params, "evaluate") as again:
        again.log_metrics({"fid_classifier": 12.5})
    assert again.run_id == run.run_id

    client = MlflowClient(url)
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params["lr"] == "0.0025" and "train.kimg" in got.data.params
    assert got.data.metrics["fid_classifier"] == 12.5
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "loss_d")] == \
        [(256, 0.256), (512, 0.512)]
    # proxied artifacts: the client only speaks HTTP; the server wrote them to its destination
    assert client.get_experiment(got.info.experiment_id).artifact_location.startswith("mlflow-artifacts:")
    local = client.download_artifacts(run.run_id, "model/model.txt", str(tmp_path / "down"))
    assert Path(local).read_text() == "weights"
    assert [p.read_text() for p in (team_dir / "artifacts").rglob("model.txt")] == ["weights"]


def test_a_real_stage_records_into_the_team_server(team_server, tmp_path, fashion_mnist):
    from mlflow.tracking import MlflowClient

    url, _ = team_server
    (tmp_path / "params.yaml").write_text("data: {limit: 20, shard_size: 10}\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": url}
    out = subprocess.run([sys.executable, str(ROOT / "stages/shard.py"), "--params",
                          str(tmp_path / "params.yaml"), "--out", str(tmp_path / "shards")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    client = MlflowClient(url)
    exp = client.get_experiment_by_name("alae")
    runs = client.search_runs([exp.experiment_id], filter_string="params.`data.limit` = '20'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics["data_train_images"] == 20
    manifest = client.download_artifacts(runs[0].info.run_id, "data/manifest.json", str(tmp_path))
    assert '"train"' in Path(manifest).read_text()


def test_workers_racing_to_create_the_experiment_on_the_server(team_server, tmp_path):
    """PostgreSQL refuses the second `create_experiment`; the loser takes the winner's."""
    from mlflow.tracking import MlflowClient

    url, _ = team_server
    lrs = ("0.001", "0.002", "0.003")
    race_pipeline_runs(url, lrs, tmp_path, "alae-race")
    assert_one_experiment_one_run_each(MlflowClient(url), lrs, "alae-race")
