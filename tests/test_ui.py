"""The real MLflow UI, opened in headless Chromium, compares two pipeline runs.

Skips, saying why, where Debian's chromium is not installed (`.ci/run` installs it)."""
import json
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from alae.config import parse_params
from alae.tracking import experiment_url, pipeline_run
from server_helpers import CHROMIUM, chromium, free_port, keep_screenshot, wait_until_healthy

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed "
                                 "(apt-get install chromium; .ci/run does it)")]

RUNS = {0.001: 12.5, 0.003: 34.25}  # lr -> fid_classifier


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """One store and one `mlflow ui` for the module's tests (a server start is the slow part)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield from _ui(tmp_path_factory.mktemp("ui"), monkeypatch)


def _ui(tmp_path, monkeypatch):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    run_ids = []
    for lr, fid in RUNS.items():
        with pipeline_run(parse_params({"lr": lr}), "evaluate") as run:
            run.log_metrics({"fid_classifier": fid})
            run_ids.append(run.run_id)
    port = free_port()
    log = open(tmp_path / "ui.log", "w")
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui",
                               "--backend-store-uri", store, "--host", "127.0.0.1",
                               "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, server, tmp_path / "ui.log", timeout=90)
        yield base, run_ids
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_compare_view_shows_both_runs(ui, tmp_path):
    base, run_ids = ui
    from mlflow.tracking import MlflowClient

    exp_id = MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_experiment_by_name("alae").experiment_id
    query = urllib.parse.urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps([exp_id])})
    url = f"{base}/#/compare-runs?{query}"
    dom = chromium("--dump-dom", url, profile=tmp_path / "profile-dom").stdout
    for lr, fid in RUNS.items():
        assert str(lr) in dom, f"lr {lr} not on the comparison page"
        assert str(fid) in dom, f"fid_classifier {fid} not on the comparison page"
    shot = tmp_path / "compare-runs.png"
    chromium(f"--screenshot={shot}", "--window-size=1400,1000", url, profile=tmp_path / "profile-shot")
    assert shot.stat().st_size > 10_000


def test_experiment_page_opens_on_the_runs_table(ui, tmp_path):
    """MLflow 3 shows an experiment as GenAI traces by default, where run names do not appear."""
    base, run_ids = ui
    from mlflow.tracking import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    names = [client.get_run(r).info.run_name for r in run_ids]
    url = experiment_url(base, client.get_run(run_ids[0]).info.experiment_id)
    dom = chromium("--dump-dom", url, profile=tmp_path / "profile-dom").stdout
    for name in names:
        assert name in dom, f"run {name} not on the experiment page {url} (traces view?)"
    # the table's first columns are the results (VIEW): without it MLflow shows dates, sources
    # and models, and the metric columns lie off-screen, outside the page's DOM
    assert "You're viewing a shared view" in dom, f"{url}: the view state tag was not read"
    for fid in RUNS.values():
        assert str(fid) in dom, f"fid_classifier {fid} not a column of the runs table {url}"
    shot = tmp_path / "experiment-runs.png"
    chromium(f"--screenshot={shot}", "--window-size=1400,800", url, profile=tmp_path / "profile-shot")
    assert shot.stat().st_size > 10_000
    keep_screenshot(shot)
