"""Training from Python is one call (`alae.train.run.train_pipeline`, what the stage calls)."""
from __future__ import annotations

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
