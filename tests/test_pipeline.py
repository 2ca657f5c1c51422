"""End to end: the real `dvc repro` and `dvc exp run` in a temporary git repository, on real
Fashion-MNIST, with tiny params; then the outputs and the MLflow store are read back.
`dvc exp run -S lr=...` with two learning rates is tested in test_queue.py (queued, two workers)."""
import json
from pathlib import Path

import pytest

from alae.metrics import METRICS_PROTOCOL
from pipeline_helpers import run

EVAL_KEYS = ("fid_classifier", "rec_fid_classifier", "fid_floor_classifier", "mse",
             "ppl_full_classifier", "ppl_end_classifier", "probe_acc", "probe_acc_pixels",
             "kid_classifier", "kid_std_classifier", "precision_classifier", "recall_classifier",
             "rec_distance_classifier")

FIGURES = ("samples.png", "samples_untruncated.png", "reconstructions.png", "interpolation.png",
           "style_mixing.png", "progress.png")  # the default StyleALAE: mixing and growing apply

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(reproduced_repo) -> Path:
    """The session's reproduced tiny pipeline (conftest), read here, never changed: the tests
    that change a pipeline (`dvc exp run`, a remote, the queue) work on copies of it."""
    return reproduced_repo


def mlflow_client(repo: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")


def runs(repo: Path):
    client = mlflow_client(repo)
    exp = client.get_experiment_by_name("alae")
    return client, client.search_runs([exp.experiment_id])


def test_repro_writes_metrics_figures_and_model(repo):
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    assert set(metrics) == {*EVAL_KEYS, "metrics_protocol"}
    assert metrics["metrics_protocol"] == METRICS_PROTOCOL
    for key in EVAL_KEYS:   # KID's unbiased estimate may dip below 0, not a tiny model's
        assert isinstance(metrics[key], float) and metrics[key] >= 0, key
    assert (repo / "models/refstats_classifier.npz").is_file()   # the refstats stage's output
    featurenet = json.loads((repo / "metrics/featurenet.json").read_text())
    assert 0.3 < featurenet["accuracy"] <= 1.0  # 4 short epochs on 400 images: well above chance (0.1)
    for name in FIGURES:
        assert (repo / "figures" / name).stat().st_size > 1000
    rows = (repo / "plots/train.csv").read_text().splitlines()
    assert rows[0].split(",") == ["kimg", "loss_d", "loss_g", "lae", "img_per_s",
                                  "lod", "alpha", "resolution", "batch_size"]
    assert len(rows) == 1 + 4  # 1 kimg in ticks of 0.25 kimg


def test_one_mlflow_run_with_params_tick_metrics_and_artifacts(repo):
    client, found = runs(repo)
    assert len(found) == 1
    run = found[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.002"
    assert run.data.params["train.batch_size"] == "32"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss_d")]
    assert steps == [256, 512, 768, 1024]  # one value per tick, at the images-seen step
    quick = [m.step for m in client.get_metric_history(run.info.run_id, "fid_quick_classifier")]
    assert quick == [512, 1024]  # train.fid_every_kimg 0.5
    images = {int(a.path.split("+")[2]) for a in client.list_artifacts(run.info.run_id, "images")}
    assert images == {256, 512, 768, 1024}  # the grid at the end of each level, with its step
    for key in (*EVAL_KEYS, "img_per_s"):
        assert key in run.data.metrics
    assert run.data.tags["alae.run_key"] and run.data.tags["git.commit"]
    assert run.data.tags["alae.features"] == run.data.tags["alae.ppl_distance"] == "classifier"
    assert run.data.tags["alae.metrics_protocol"] == str(METRICS_PROTOCOL)
    assert len(run.data.tags["alae.featurenet_sha256"]) == 64
    assert json.loads(run.data.tags["alae.protocol.kid"])["subset_size"] == 200   # num_images
    assert json.loads(run.data.tags["alae.protocol.pr"])["k"] == 3
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"params.yaml", "figures", "model"} <= artifacts
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert figures == {f"figures/{name}" for name in FIGURES}
    # artifacts land beside the store at the repo root, not in ./mlruns of some stage's cwd
    assert (repo / "mlartifacts").is_dir() and not (repo / "mlruns").exists()


def test_second_repro_runs_nothing(repo):
    out = run(["dvc", "repro"], repo)
    assert "Running stage" not in out.stdout
    assert run(["dvc", "status"], repo).stdout.strip().endswith("up to date.")


def test_dvc_plots_show_draws_losses_and_figures(repo, tmp_path):
    out = tmp_path / "plots"
    run(["dvc", "plots", "show", "-o", str(out)], repo)
    page = (out / "index.html").read_text()
    assert "loss_d" in page and "lae" in page
    for name in FIGURES:
        assert name in page  # image plots are copied beside the page and linked with <img>
