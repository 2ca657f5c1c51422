"""Reliability of training: resume after SIGKILL, polite stops on SIGTERM/Ctrl-C, divergence,
metrics kept while the tracking store is away, and periodic hooks that leave the weights alone.

The kill tests run the real train stage as a subprocess (its own MLflow store and working folder
under tmp_path, via MLFLOW_TRACKING_URI and DVC_ROOT), on real Fashion-MNIST shards at 8x8.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from alae.checkpoint import RunCheckpoints, load_checkpoint, load_training_state
from alae.config import parse_params

ROOT = Path(__file__).resolve().parents[1]
# 8x8 StyleALAE: 4x4 for 1 kimg, then 8x8 (0.5 kimg blend) until 3 kimg; ticks of 0.25 kimg.
RAW = {
    "seed": 3,
    "data": {"resolution": 8, "limit": 2000, "shard_size": 1000},
    "model": {"kind": "style", "latent": 8, "mapping_layers": 2, "start_channels": 4,
              "max_channels": 8},
    "train": {"kimg": 3.0, "batch_size": 16, "transition_kimg": 0.5, "stabilize_kimg": 0.5,
              "tick_kimg": 0.25, "checkpoint_kimg": 0.5, "ema_kimg": 0.5, "threads": 1,
              "fid_every_kimg": 0},
}
TOTAL = 3008  # 188 batches of 16: training ends at the first batch boundary past 3 kimg


class Stage:
    """The train stage of one working folder, run as a subprocess."""

    def __init__(self, tmp: Path, shards: Path, raw: dict = RAW):
        self.tmp, self.shards = tmp, shards
        self.params = tmp / "params.yaml"
        self.params.write_text(yaml.safe_dump(raw))
        self.out, self.plots = tmp / "models" / "alae.pt", tmp / "plots" / "train.csv"
        self.store = f"sqlite:///{tmp / 'mlflow.db'}"
        self.env = {**os.environ, "DVC_ROOT": str(tmp), "MLFLOW_TRACKING_URI": self.store}

    def start(self) -> subprocess.Popen:
        cmd = [sys.executable, str(ROOT / "stages" / "train.py"), "--params", str(self.params),
               "--shards", str(self.shards), "--featurenet", str(self.tmp / "none.pt"),
               "--out", str(self.out), "--plots", str(self.plots)]
        return subprocess.Popen(cmd, cwd=self.tmp, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def run(self) -> subprocess.CompletedProcess:
        proc = self.start()
        out, err = proc.communicate(timeout=300)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def checkpoints(self) -> list[Path]:
        return sorted((self.tmp / ".alae" / "runs").glob("*/ckpt-*.pt"))

    def newest_images(self) -> int:
        paths = self.checkpoints()
        return int(paths[-1].stem.split("-")[1]) if paths else -1

    def wait_for_checkpoint_after(self, images: int, proc: subprocess.Popen,
                                  timeout: float = 120) -> bool:
        """Until a checkpoint newer than `images` exists; False if the process ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.newest_images() > images:
                return True
            if proc.poll() is not None:
                return False
            time.sleep(0.05)
        raise AssertionError("no new checkpoint in time")

    def mlflow_run(self):
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.store)
        runs = client.search_runs([client.get_experiment_by_name("alae").experiment_id])
        assert len(runs) == 1, "one configuration, one MLflow run"
        return client, runs[0]

    def history(self) -> list[dict]:
        with open(self.plots) as f:
            return list(csv.DictReader(f))


def uninterrupted(shards: Path):
    from alae.train.loop import Trainer

    return Trainer(parse_params(RAW), shards).run(progress=False)


def assert_complete(stage: Stage, reference) -> None:
    """The run finished once: images add up, one value per step, the table covers it all, and
    the weights are those of an uninterrupted run."""
    model, ema, _, state = load_training_state(stage.out)
    assert state["images_seen"] == TOTAL and state["finished"]
    rows = stage.history()
    kimg = [float(r["kimg"]) for r in rows]
    assert kimg == sorted(set(kimg)) and kimg[-1] == TOTAL / 1000
    client, run = stage.mlflow_run()
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss_d")]
    assert sorted(steps) == sorted(set(steps)), "a step logged twice"
    assert sorted(steps) == [round(k * 1000) for k in kimg]
    # Same seed, one CPU thread, and the data stream fast-forwarded to the same sample: the
    # resumed run repeats the uninterrupted one operation for operation, so it matches exactly
    # here; on a GPU, or with several threads, reductions may sum in another order and leave
    # differences of float rounding, hence a tolerance rather than equality.
    for name, ref in reference.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], ref, rtol=1e-5, atol=1e-6, msg=name)
    for name, ref in reference.ema.state_dict().items():
        torch.testing.assert_close(ema.state_dict()[name], ref, rtol=1e-5, atol=1e-6, msg=name)


def test_sigkill_at_three_random_moments_then_resume_completes_the_same_run(shards8, tmp_path):
    stage = Stage(tmp_path, shards8)
    rng = random.Random(20261125)
    seen = -1
    for _ in range(3):
        proc = stage.start()
        alive = stage.wait_for_checkpoint_after(seen, proc)
        time.sleep(rng.uniform(0.0, 0.6))  # somewhere between two checkpoints, mid-batch or not
        proc.kill()
        proc.communicate()
        assert alive, "the run ended before it could be killed: make it longer"
        assert proc.returncode == -signal.SIGKILL
        newest = stage.newest_images()
        assert newest > seen
        load_checkpoint(stage.checkpoints()[-1])  # a kill never leaves a broken newest file
        seen = newest
    assert len(stage.checkpoints()) <= 3  # train.keep_checkpoints
    done = stage.run()
    assert done.returncode == 0, done.stderr
    assert f"resuming at {seen} images" in done.stderr
    assert_complete(stage, uninterrupted(shards8))
    again = stage.run()  # a finished run is not trained again
    assert again.returncode == 0 and f"already finished at {TOTAL} images" in again.stderr
    assert "%|" not in again.stderr  # no progress bar: nothing trained


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_checkpoints_marks_killed_and_resumes(shards8, tmp_path, sig):
    stage = Stage(tmp_path, shards8)
    proc = stage.start()
    assert stage.wait_for_checkpoint_after(-1, proc)
    time.sleep(0.3)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"stopped: {signal.Signals(sig).name} at ")
    stopped_at = int(line.split(" at ")[1].split()[0])
    assert stage.newest_images() == stopped_at  # the checkpoint of that moment
    assert load_checkpoint(stage.checkpoints()[-1])["training"]["images_seen"] == stopped_at
    client, run = stage.mlflow_run()
    assert run.info.status == "KILLED"
    if sig == signal.SIGINT:
        return  # the stop is what differs between the two signals; one resume tells the rest
    done = stage.run()
    assert done.returncode == 0, done.stderr
    assert f"resuming at {stopped_at} images" in done.stderr
    _, run = stage.mlflow_run()
    assert run.info.status == "FINISHED"
    # The stop closed its tick early, so this run's table has one row more than the reference's.
    kimg = [float(r["kimg"]) for r in stage.history()]
    assert stopped_at / 1000 in kimg and kimg[-1] == TOTAL / 1000 and kimg == sorted(set(kimg))


def _load_stage(name: str):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digests(paths: list[Path]) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def test_nan_loss_stops_within_a_tick_keeps_last_checkpoint_and_fails_the_run(
        shards8, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from alae.train import losses

    stage = Stage(tmp_path, shards8)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stage.store)
    real_loss, calls = losses.generator_loss, {"n": 0}
    saved: dict[str, str] = {}

    def poisoned(logits):
        calls["n"] += 1
        loss = real_loss(logits)
        return loss * float("nan") if calls["n"] > 70 else loss  # batch 71: 1120 images

    real_save = RunCheckpoints.save

    def save(self, *args, **kwargs):
        path = real_save(self, *args, **kwargs)
        saved.clear()
        saved.update(_digests(self.paths()))
        return path

    monkeypatch.setattr(losses, "generator_loss", poisoned)
    monkeypatch.setattr(RunCheckpoints, "save", save)
    train_stage = _load_stage("train")
    result = CliRunner().invoke(train_stage.main, [
        "--params", str(stage.params), "--shards", str(shards8), "--featurenet", "none.pt",
        "--out", str(stage.out), "--plots", str(stage.plots)])
    assert result.exit_code == 1
    message = result.output.strip().splitlines()[-1]
    # NaN from batch 71 (1136 images) on; the tick ending at 1264 images sees it
    assert message.startswith("error: training diverged at 1264 images (a loss is not finite")
    assert _digests(stage.checkpoints()) == saved  # untouched since the last good save...
    assert stage.newest_images() == 1008  # ...which is the one at the 1 kimg mark
    assert not stage.out.exists() and not stage.plots.exists()  # nothing that looks complete
    _, run = stage.mlflow_run()
    assert run.info.status == "FAILED" and "diverged" in run.data.tags["alae.error"]


def test_a_non_finite_weight_stops_training_within_one_tick(shards8):
    from alae.train.loop import Hooks, Trainer, TrainingDiverged

    trainer = Trainer(parse_params(RAW), shards8)

    # The 8x8 output layer is not used at 4x4: the losses stay finite, only the weight check
    # can see it.
    unused = trainer.model.synthesis.to_rgb[-1].weight

    def report(nimg, row):
        if nimg == 256:
            with torch.no_grad():
                unused.view(-1)[0] = float("inf")

    with pytest.raises(TrainingDiverged, match=r"diverged at 512 images \(a weight is not finite"):
        trainer.run(Hooks(report=report), progress=False)


def test_resume_from_a_checkpoint_in_process_matches_the_uninterrupted_run(shards8, tmp_path):
    """Crash right after the 1.5 kimg checkpoint (mid-transition at 8x8), resume in a new
    Trainer from the file: same weights, EMA, history and level snapshots as one go."""
    from alae.train.loop import Hooks, Trainer

    params = parse_params(RAW)
    store = RunCheckpoints(tmp_path, keep=2)

    class Crash(Exception):
        pass

    def checkpoint(t):
        store.save(t.ema, params, {}, t.state())
        if t.nimg >= 1500:
            raise Crash

    with pytest.raises(Crash):
        Trainer(params, shards8).run(Hooks(checkpoint=checkpoint), progress=False)
    path, ckpt = store.latest(params)
    assert ckpt["training"]["images_seen"] == 1504 and ckpt["training"]["lod"] == 1
    assert ckpt["training"]["batches_drawn"] == (1504 - 1008) // 16
    resumed = Trainer(params, shards8, resume=ckpt)
    result = resumed.run(progress=False)
    reference = uninterrupted(shards8)
    for a, b in zip(result.model.state_dict().values(), reference.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(result.ema.state_dict().values(), reference.ema.state_dict().values()):
        assert torch.equal(a, b)
    strip = [{k: v for k, v in row.items() if k != "img_per_s"} for row in result.history]
    assert strip == [{k: v for k, v in row.items() if k != "img_per_s"}
                     for row in reference.history]
    assert result.snapshots.keys() == reference.snapshots.keys() == {0, 1}
    for lod in (0, 1):
        assert torch.equal(result.snapshots[lod], reference.snapshots[lod])


def test_every_periodic_hook_on_ends_on_the_weights_of_a_run_without_them(
        shards8, featurenet8, tmp_path):
    """Periodic work never perturbs training (DESIGN.md): the quick FID, level snapshots (4x4,
    then 8x8 blending in) and checkpoints every 0.25 kimg, wired as the stage wires them, leave
    weights, EMA and snapshots exactly as a run without them. (Two processes: test_distributed.)"""
    from alae.figures import snapshot_grid
    from alae.train.loop import Hooks, Trainer
    from alae.train.run import QUICK_FID, quick_fid_hook

    every = {"kimg": 0.75, "transition_kimg": 0.25, "stabilize_kimg": 0.25,
             "checkpoint_kimg": 0.25, "fid_every_kimg": 0.25, "fid_images": 64}
    params = parse_params({**RAW, "train": {**RAW["train"], **every}})
    without = Trainer(params, shards8).run(progress=False)

    trainer = Trainer(params, shards8)
    store = RunCheckpoints(tmp_path)
    reports, grids = [], []
    hooks = Hooks(
        report=lambda nimg, row: reports.append(row),
        snapshot=lambda nimg, lod, images: grids.append(snapshot_grid(images, f"{lod}")),
        checkpoint=lambda t: store.save(t.ema, params, {}, t.state()),
        # built after the Trainer, as the stage does: the featurenet is loaded mid-run
        quick_fid=quick_fid_hook(params, trainer, str(shards8), str(featurenet8)))
    with_hooks = trainer.run(hooks, progress=False)

    assert sum(QUICK_FID in row for row in reports) == 3
    assert len(grids) == 2 and len(store.paths()) == 3
    for name, ref in without.model.state_dict().items():
        assert torch.equal(with_hooks.model.state_dict()[name], ref), name
    for name, ref in without.ema.state_dict().items():
        assert torch.equal(with_hooks.ema.state_dict()[name], ref), name
    for lod, images in without.snapshots.items():
        assert torch.equal(with_hooks.snapshots[lod], images), lod


def test_checkpoint_of_other_params_is_refused(shards8, tmp_path):
    from alae.errors import CheckpointError
    from alae.train.loop import Trainer

    params = parse_params(RAW)
    trainer = Trainer(params, shards8)
    store = RunCheckpoints(tmp_path)
    store.save(trainer.ema, params, {}, trainer.state())
    other = parse_params({**RAW, "seed": 4})
    with pytest.raises(CheckpointError, match="other params"):
        store.latest(other)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mlflow_server(tmp: Path, port: int) -> subprocess.Popen:
    import urllib.request

    mlflow = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen([str(mlflow), "server", "--backend-store-uri",
                             f"sqlite:///{tmp / 'server.db'}", "--artifacts-destination",
                             str(tmp / "server-artifacts"), "--host", "127.0.0.1", "--port",
                             str(port), "--workers", "1"], cwd=tmp, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
            return proc
        except OSError:
            time.sleep(0.3)
    _stop(proc)
    raise AssertionError("mlflow server did not start")


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the server and its uvicorn workers
    except ProcessLookupError:
        pass
    proc.wait()


def test_tracking_server_going_away_mid_training_loses_no_metric(shards8, tmp_path):
    """A real `mlflow server` killed after the first checkpoint: training goes on, the stage
    ends saying what waits, and once the server is back the stage (not retraining) sends it."""
    stage = Stage(tmp_path, shards8)
    port = _free_port()
    stage.store = f"http://127.0.0.1:{port}"
    stage.env.update(MLFLOW_TRACKING_URI=stage.store, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    server = _mlflow_server(tmp_path, port)
    try:
        proc = stage.start()
        assert stage.wait_for_checkpoint_after(-1, proc)
        _stop(server)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 1
        assert "not reachable" in err and "pending_metrics.jsonl" in err
        assert err.strip().splitlines()[-1].startswith(f"error: tracking store {stage.store}")
        pending = next((tmp_path / ".alae" / "runs").glob("*/pending_metrics.jsonl"))
        assert pending.stat().st_size > 0
        server = _mlflow_server(tmp_path, port)
        done = stage.run()
        assert done.returncode == 0, done.stderr
        assert f"already finished at {TOTAL} images" in done.stderr
        assert "waiting metric records" in done.stderr and not pending.exists()
        client, run = stage.mlflow_run()
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss_d")]
        assert len(steps) == len(set(steps)), "a step logged twice"
        assert sorted(steps) == [round(float(r["kimg"]) * 1000) for r in stage.history()]
        assert run.info.status == "FINISHED"
    finally:
        _stop(server)
