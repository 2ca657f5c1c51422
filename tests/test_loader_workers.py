"""`data.loader_workers` and `data.flip`: decoding in worker processes changes nothing a run sees
(the same batches in the same order, over a level change and after a resume from any
checkpoint), the workers end with their stream, and flips are drawn from the seeded stream.
All on real Fashion-MNIST shards."""
from __future__ import annotations

import hashlib
import multiprocessing
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from test_resume import RAW as RESUME_RAW

from alae.config import parse_params
from alae.data import train_batches

ROOT = Path(__file__).resolve().parents[1]
# test_resume's 8x8 StyleALAE with batch 16 at 4x4 and 8 at 8x8: 4x4 until 512 images, then the
# 8x8 level (a new stream at another resolution and batch size) blends in over 250 images, until
# 0.75 kimg; a checkpoint at every tick.
RAW = {**RESUME_RAW, "train": {
    **RESUME_RAW["train"], "kimg": 0.75, "batch_size": [16, 8], "transition_kimg": 0.25,
    "stabilize_kimg": 0.25, "tick_kimg": 0.12, "checkpoint_kimg": 0.12}}


def digest(batch) -> str:
    x, y = batch
    return hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()[:16]


def first(n: int, shards, *args, **kwargs) -> list[str]:
    batches = train_batches(shards, *args, **kwargs)
    try:
        return [digest(next(batches)) for _ in range(n)]
    finally:
        batches.close()


def our_children() -> list:
    return multiprocessing.active_children()  # also reaps the ones that ended


# --------------------------------------------------------------------------- the loader alone

def test_the_default_stream_is_the_one_before_workers_and_flips(tiny_shards):
    """Digests of the first batches as the loader gave them before `workers` and `flip` existed
    (commit 3da0990, same shards): the default (0 workers, no flips) stream is unchanged."""
    assert first(3, tiny_shards, 32, 16, seed=0) == [
        "2905b40f702395cf", "90a11e0e2af9f451", "ca4c43e27969093f"]


@pytest.mark.parametrize("resolution, batch, skip", [(32, 16, 0), (16, 10, 37), (8, 7, 333)])
def test_same_batches_for_0_1_2_workers_and_after_any_skip(tiny_shards, resolution, batch, skip):
    """600 images, so 12 batches go past an epoch; a skip that is not a multiple of a batch or
    of the worker count fast-forwards every worker alike."""
    args = (tiny_shards, resolution, batch)
    want = first(12, *args, seed=7, shuffle_buffer=100, skip=skip)
    assert len(set(want)) == 12
    for workers in (1, 2):
        assert first(12, *args, seed=7, shuffle_buffer=100, skip=skip, workers=workers) == want
    assert first(12 - 3, *args, seed=7, shuffle_buffer=100, skip=skip + 3 * batch,
                 workers=2) == want[3:]
    assert not our_children()


def test_closing_the_stream_ends_its_workers(tiny_shards):
    batches = train_batches(tiny_shards, 32, 16, seed=0, workers=2)
    next(batches)
    assert len(our_children()) == 2
    batches.close()
    assert not our_children()


def test_workers_outlive_group_signals_and_never_hold_up_the_exit(tiny_shards):
    """Ctrl-C in a terminal, and many schedulers' SIGTERM, reach the whole process group: the
    training process stops after its batch, so its workers must go on serving. A process that
    exits (normally or not) without closing its stream must not wait for them forever."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        from alae.data import train_batches
        for sig in (signal.SIGINT, signal.SIGTERM):  # as the training loop's stop request
            signal.signal(sig, lambda *_: None)
        batches = train_batches({str(tiny_shards)!r}, 32, 16, seed=0, workers=2)
        next(batches)
        if sys.argv[1] == "signals":
            os.killpg(0, signal.SIGINT)
            os.killpg(0, signal.SIGTERM)
            for _ in range(6):
                next(batches)
        if sys.argv[1] == "raise":
            raise SystemExit("failed while the workers were decoding ahead")
    """)
    for how in ("signals", "return", "raise"):
        done = subprocess.run([sys.executable, "-c", script, how], cwd=ROOT, timeout=60,
                              capture_output=True, text=True, start_new_session=True)
        assert done.returncode == (1 if how == "raise" else 0), done.stderr
        assert "Traceback" not in done.stderr, done.stderr


# ------------------------------------------------------------------------------------ flips

def test_flips_mirror_about_half_the_images_of_the_same_stream(tiny_shards):
    plain = train_batches(tiny_shards, 32, 50, seed=4, shuffle_buffer=100)
    flipped = train_batches(tiny_shards, 32, 50, seed=4, shuffle_buffer=100, flip=True)
    mirrored = total = 0
    for _ in range(6):
        (x, y), (xf, yf) = next(plain), next(flipped)
        assert torch.equal(y, yf)  # the same samples in the same order...
        for a, b in zip(x, xf):    # ...each as it was or mirrored left to right
            same, mirror = torch.equal(a, b), torch.equal(a.flip(-1), b)
            assert same or mirror
            mirrored += mirror and not same
            total += 1
    assert 0.4 < mirrored / total < 0.6, mirrored


def test_flips_are_reproducible_for_any_workers_and_skip(tiny_shards):
    args = (tiny_shards, 16, 16)
    want = first(8, *args, seed=2, flip=True)
    assert first(8, *args, seed=2, flip=True) == want
    assert first(8, *args, seed=2, flip=True, workers=2) == want
    assert first(5, *args, seed=2, flip=True, skip=3 * 16, workers=2) == want[3:]
    assert first(8, *args, seed=2) != want


# ------------------------------------------------------------------------------ in training

@pytest.fixture
def recorded(monkeypatch):
    """The digest of every batch the training loop draws, in order."""
    import alae.train.loop as loop

    seen: list[str] = []

    def recording(*args, **kwargs):
        inner = train_batches(*args, **kwargs)

        def batches():
            try:
                for batch in inner:
                    seen.append(digest(batch))
                    yield batch
            finally:
                inner.close()

        return batches()

    monkeypatch.setattr(loop, "train_batches", recording)
    return seen


def with_workers(workers: int, flip: bool = False):
    return parse_params({**RAW, "data": {**RAW["data"], "loader_workers": workers,
                                         "flip": flip}})


@pytest.mark.parametrize("flip", [False, True])
def test_training_sees_the_same_batches_with_0_and_2_workers_and_after_resume(
        shards8, recorded, flip):
    from alae.train.loop import Hooks, Trainer

    runs, checkpoints = {}, []
    for workers in (0, 2):
        recorded.clear()
        result = Trainer(with_workers(workers, flip), shards8).run(Hooks(
            checkpoint=lambda t: checkpoints.append(t.state()) if workers == 2 else None),
            progress=False)
        runs[workers] = list(recorded), result.model.state_dict()
        assert not our_children()
    want, weights = runs[0]
    assert len(want) == 512 // 16 + (750 - 512) // 8 + 1 and len(set(want)) == len(want)
    assert runs[2][0] == want
    for name, w in weights.items():  # the same batches and the same random stream
        assert torch.equal(runs[2][1][name], w), name
    # Every tick's checkpoint (both levels, before and after the switch): a resumed stream with
    # two workers goes on with the batches the uninterrupted run drew next.
    drawn = [s["images_seen"] // 16 if s["lod"] == 0 else 32 + (s["images_seen"] - 512) // 8
             for s in checkpoints]
    assert {s["lod"] for s in checkpoints} == {0, 1} and len(drawn) >= 6
    for state, n in zip(checkpoints, drawn):
        level_end = 32 if state["lod"] == 0 else len(want)
        if n >= level_end:  # at the end of a level: the next batch opens the next one
            continue
        recorded.clear()
        resumed = Trainer(with_workers(2, flip), shards8, resume={"training": state,
                                                                  "ema": state["model"]})
        for _ in range(min(3, level_end - n)):
            next(resumed.batches)
        resumed.close()
        assert recorded == want[n:min(n + 3, level_end)], state["images_seen"]
