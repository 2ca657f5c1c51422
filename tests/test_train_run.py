"""Training from Python is one call (`alae.train.run.train_pipeline`, what the stage calls)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from alae.errors import UserError
from test_resume import RAW as RESUME_RAW

# test_resume's 8x8 StyleALAE, cut to 0.5 kimg: 4x4, then 8x8 blending in
RAW = {**RESUME_RAW, "train": {**RESUME_RAW["train"], "kimg": 0.5, "transition_kimg": 0.25,
                               "stabilize_kimg": 0.25}}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("LOCAL_RANK", raising=False)  # not under torchrun
    return tmp_path


def test_one_call_trains_writes_the_outputs_and_a_second_finds_the_run_finished(
        shards8, workdir, capsys):
    from alae.checkpoint import load_training_state
    from alae.train.run import train_pipeline

    params = workdir / "params.yaml"
    params.write_text(yaml.safe_dump(RAW))
    out, plots = workdir / "alae.pt", workdir / "train.csv"
    args = (str(params), str(shards8), str(workdir / "none.pt"), str(out), str(plots))
    done = train_pipeline(*args)
    assert done.images_seen == 512 and done.out == str(out)
    model, ema, _, state = load_training_state(out)
    assert state["images_seen"] == 512 and len(plots.read_text().splitlines()) == 1 + 2

    again = train_pipeline(*args)  # same params and code: the finished run, not a new one
    assert "already finished at 512 images" in capsys.readouterr().err
    assert again.images_seen == 512
    _, ema2, _, _ = load_training_state(out)
    for name, value in ema.state_dict().items():
        assert torch.equal(ema2.state_dict()[name], value), name


def test_several_processes_outside_torchrun_need_a_command_to_relaunch(shards8, workdir):
    from alae.train.run import train_pipeline

    params = workdir / "params.yaml"
    params.write_text(yaml.safe_dump({**RAW, "train": {**RAW["train"], "nproc": 2}}))
    with pytest.raises(UserError, match=r"^train.nproc: 2 processes need torchrun"):
        train_pipeline(str(params), str(shards8), "none.pt", "alae.pt", "train.csv")


def _train(workdir, shards, raw: dict, name: str):
    from alae.train.run import train_pipeline

    params = workdir / f"{name}.yaml"
    params.write_text(yaml.safe_dump(raw))
    out, plots = workdir / f"{name}.pt", workdir / f"{name}.csv"
    return train_pipeline(str(params), str(shards), str(workdir / "none.pt"),
                          str(out), str(plots)), out, plots


def test_a_longer_run_goes_on_from_a_shorter_one_and_ends_as_one_go_would(
        shards8, workdir, capsys):
    """test_resume's 3 kimg run, after a 1.5 kimg run of the same params (keeping another number
    of checkpoints too): it starts from that run's last checkpoint and ends on the weights, EMA,
    level snapshots and per-tick table of the 3 kimg run trained in one go, with the whole run
    in its MLflow run and its model file naming where it started."""
    from mlflow.tracking import MlflowClient

    from alae.checkpoint import load_model, load_snapshots, load_training_state
    from alae.config import parse_params
    from alae.tracking import run_key
    from test_resume import TOTAL, uninterrupted

    short = {**RESUME_RAW, "train": {**RESUME_RAW["train"], "kimg": 1.5, "keep_checkpoints": 1}}
    first, _, _ = _train(workdir, shards8, short, "short")
    assert first.images_seen == 1504
    capsys.readouterr()
    done, out, plots = _train(workdir, shards8, RESUME_RAW, "long")
    err = capsys.readouterr().err
    short_key = run_key(parse_params(short))
    assert f"train: extending run {short_key} (1504 images trained, train.kimg 1.5)" in err
    assert "resuming at 1504 images" in err and done.images_seen == TOTAL

    reference = uninterrupted(shards8)
    model, ema, _, state = load_training_state(out)
    for name, value in reference.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    for name, value in reference.ema.state_dict().items():
        assert torch.equal(ema.state_dict()[name], value), name
    snapshots = load_snapshots(out)
    assert snapshots.keys() == reference.snapshots.keys() == {0, 1}
    for lod, images in reference.snapshots.items():
        assert torch.equal(snapshots[lod], images), lod
    rows = plots.read_text().splitlines()[1:]
    assert [float(r.split(",")[0]) for r in rows] == [r["kimg"] for r in reference.history]
    assert state["seconds"] > first.seconds  # the shorter run's training time counts

    origin = f"{short_key}/ckpt-000000001504.pt"
    assert load_model(out)[2]["extended_from"] == origin
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    key = run_key(parse_params(RESUME_RAW))
    runs = client.search_runs([client.get_experiment_by_name("alae").experiment_id],
                              filter_string=f"tags.`alae.run_key` = '{key}'")
    assert len(runs) == 1 and runs[0].data.tags["alae.extended_from"] == origin
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss_d")]
    assert sorted(steps) == [round(r["kimg"] * 1000) for r in reference.history]


def test_only_a_run_of_the_same_params_but_length_and_of_this_code_is_gone_on_from(
        shards8, workdir):
    """Which checkpoints a new 3 kimg run may start from: one of a 1.5 kimg run, or one short of
    3 kimg of a 4 kimg run; never one of other params, of other code (its folder's name is not
    the key its params give now), nor one at or past the run's own end."""
    from alae.checkpoint import RunCheckpoints
    from alae.config import parse_params
    from alae.tracking import run_dir, run_key
    from alae.train.loop import Trainer
    from alae.train.run import shorter_run_checkpoint

    params = parse_params(RESUME_RAW)
    own = run_dir(run_key(params))
    state = Trainer(params, shards8).state()

    def save(raw: dict, images: int, folder: str | None = None) -> Path:
        other = parse_params(raw)
        store = RunCheckpoints(own.parent / (folder or run_key(other)))
        return store.save(Trainer(other, shards8).ema, other, {},
                          {**state, "images_seen": images})

    def train(**changes) -> dict:
        return {**RESUME_RAW, "train": {**RESUME_RAW["train"], **changes}}

    assert shorter_run_checkpoint(params, own) is None  # no runs at all
    save({**RESUME_RAW, "seed": 4}, 1000)
    save(train(kimg=1.5), 1200, folder="0123456789abcdef")  # other code
    save(train(kimg=4.0), 3008)  # at the run's own end: nothing left to train
    save(train(lr_multiplier=0.5), 1300)
    assert shorter_run_checkpoint(params, own) is None
    short = save(train(kimg=1.5, keep_checkpoints=7), 800)
    assert shorter_run_checkpoint(params, own)[0] == short
    longer = save(train(kimg=4.0), 2000)  # a longer run's checkpoint before 3 kimg: newer
    found, ckpt = shorter_run_checkpoint(params, own)
    assert found == longer and ckpt["training"]["images_seen"] == 2000
