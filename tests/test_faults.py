"""Faults a user can meet, end to end: damaged shards and source files, bad params, pipe: URLs.

Each must stop with one line naming the file (and the sample key, where a sample is hit), no
traceback unless ALAE_DEBUG=1, and no output that DVC would take for a finished one.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alae.config import ConfigError, DataConfig, parse_params
from alae.data import eval_batches, read_manifest, train_batches, write_shards
from alae.data.format import raw_samples
from alae.data.sources import FolderSource
from alae.errors import DataError
from test_data import write_idx_set

REPO = Path(__file__).resolve().parent.parent
KEY = r"sample (train|test)_\d{7}"
CHANGED = "the file changed since it was written (sha256 differs from manifest.json)"


# ------------------------------------------------------------------------------------ helpers

@pytest.fixture
def shards(tiny_shards, tmp_path) -> Path:
    """A private copy of the real Fashion-MNIST tiny shards, free to damage."""
    out = tmp_path / "in-shards"
    shutil.copytree(tiny_shards, out)
    return out


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    """One sqlite store for this module's stage runs (creating one costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('faults-mlflow') / 'mlflow.db'}"


def flip_middle(path: Path, n: int = 64) -> None:
    """Invert `n` bytes from the middle of a file: damage a checksum-free copy would not see."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + n] = bytes(b ^ 0xFF for b in data[middle:middle + n])
    path.write_bytes(bytes(data))


def damage_header(shard: Path, member_name: str) -> None:
    """Overwrite 64 bytes of a member's 512-byte tar header (its checksum no longer matches)."""
    with tarfile.open(shard) as tar:
        offset = tar.getmember(member_name).offset
    data = bytearray(shard.read_bytes())
    data[offset + 100:offset + 164] = b"\xff" * 64
    shard.write_bytes(bytes(data))


def drain(batches) -> int:
    return sum(len(x) for x, _ in batches)


def one_line(message: str) -> str:
    assert "\n" not in message
    return message


def run_stage(tmp_path: Path, mlflow_uri: str, stage: str, params: dict, *args: str,
              debug: bool = False) -> subprocess.CompletedProcess:
    """Run `stages/<stage>.py` on a params file written from `params` (JSON is YAML)."""
    params_path = tmp_path / "params.yaml"
    params_path.write_text(json.dumps(params))
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri, "DVC_ROOT": str(tmp_path)}
    env.pop("ALAE_DEBUG", None)
    if debug:
        env["ALAE_DEBUG"] = "1"
    return subprocess.run([sys.executable, str(REPO / "stages" / f"{stage}.py"), "--params",
                           str(params_path), *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300)


PROGRESS = re.compile(r"\w+ (train|test): +\d+%\|")  # a progress bar's state (tqdm)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The single stderr line of a stage that failed on a user error: the last one, on a line
    of its own, and nothing else but progress bars."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert all(PROGRESS.match(line) for line in lines[:-1]), result.stderr
    return lines[-1]


def shard_stage(tmp_path: Path, mlflow_uri: str, data: dict) -> subprocess.CompletedProcess:
    return run_stage(tmp_path, mlflow_uri, "shard", {"data": data}, "--out",
                     str(tmp_path / "shards"))


def no_partial_output(tmp_path: Path) -> bool:
    """Nothing that looks like a shard folder was left behind (the temporary one included)."""
    return not (tmp_path / "shards").exists() and not list(tmp_path.glob(".shards.*"))


# --------------------------------------------------------------------------- damaged shards

def test_flipped_bytes_name_shard_key_and_changed_sha(shards):
    shard = shards / "test-000000.tar"
    flip_middle(shard)
    with pytest.raises(DataError) as err:
        drain(eval_batches(shards, "test", 32, 64))
    message = one_line(str(err.value))
    assert message.startswith(f"{shard}: ") and re.search(KEY, message) and CHANGED in message


def test_flipped_bytes_through_train_batches(shards):
    shard = shards / "train-000001.tar"
    flip_middle(shard)
    with pytest.raises(DataError) as err:
        batches = train_batches(shards, 32, 50, seed=0, shuffle_buffer=1)
        for _ in range(30):  # 1500 images: every shard is read
            next(batches)
    message = one_line(str(err.value))
    assert message.startswith(f"{shard}: ") and re.search(KEY, message) and CHANGED in message


def test_damaged_tar_header_is_not_a_silent_end_of_shard(shards):
    """Tar read as a stream takes a bad header for the end of the archive: without the count
    check the shard would just be shorter."""
    shard = shards / "test-000000.tar"
    damage_header(shard, "test_0000100.cls")  # the first file of sample 100
    with pytest.raises(DataError) as err:
        drain(eval_batches(shards, "test", 32, 64))
    message = one_line(str(err.value))
    assert message.startswith(f"{shard}: shard ends after sample test_0000099 "
                              "(100 of the 250 samples manifest.json lists)")
    assert CHANGED in message


def test_bad_label_names_shard_and_key(shards):
    shard = shards / "train-000000.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:
        for member, payload in members:
            if member.name == "train_0000003.cls":
                payload, member.size = b"x", 1
            tar.addfile(member, io.BytesIO(payload))
    with pytest.raises(DataError) as err:
        drain(eval_batches(shards, "train", 32, 8))
    message = one_line(str(err.value))
    assert message.startswith(f"{shard}: sample train_0000003 has label b'x', not an integer "
                              "in 0..9") and CHANGED in message


def test_stage_reading_corrupt_shards_keeps_previous_output(shards, tmp_path, mlflow_uri):
    """A failed shard stage leaves the previous complete shard folder exactly as it was."""
    previous = tmp_path / "shards"
    shutil.copytree(shards, previous)
    before = {p.name: p.read_bytes() for p in previous.iterdir()}
    damaged = shards / "train-000000.tar"
    flip_middle(damaged)
    result = run_stage(tmp_path, mlflow_uri, "shard",
                       {"data": {"source": "shards", "path": str(shards)}},
                       "--out", str(previous))
    line = error_line(result)
    assert line.startswith(f"error: {damaged}: ") and re.search(KEY, line) and CHANGED in line
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before
    assert not list(tmp_path.glob(".shards.*"))


def test_stage_reading_truncated_shard(shards, tmp_path, mlflow_uri):
    damaged = shards / "train-000001.tar"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    line = error_line(shard_stage(tmp_path, mlflow_uri, {"source": "shards", "path": str(shards)}))
    assert line.startswith(f"error: {damaged}: ") and re.search(KEY, line) and CHANGED in line
    assert no_partial_output(tmp_path)


# ---------------------------------------------------------------------------- source files

def write_folder(root: Path, n: int = 12) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / ("cats" if i % 2 else "dogs")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(folder / f"{i:02d}.png")


def test_empty_image_is_skipped_with_its_reason(tmp_path, mlflow_uri):
    """Policy: a file that is not a usable image is skipped, named in manifest.json with the
    reason, and listed by the stage; an empty file is one of those, not an error."""
    root = tmp_path / "images"
    write_folder(root)
    (root / "cats" / "empty.png").write_bytes(b"")
    result = shard_stage(tmp_path, mlflow_uri, {"source": "folder", "path": str(root),
                                                "resolution": 8, "channels": 3,
                                                "test_fraction": 0.5})
    assert result.returncode == 0, result.stderr
    assert f"shard: skipped {root.resolve()}/cats/empty.png: empty file (0 bytes)" in result.stderr
    manifest = read_manifest(tmp_path / "shards")
    assert manifest["skipped"] == [{"path": "cats/empty.png", "reason": "empty file (0 bytes)"}]
    assert sum(manifest["counts"].values()) == 12


def test_folder_of_empty_files_names_them(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(DataError) as err:
        FolderSource(DataConfig(source="folder", path=str(tmp_path)))
    assert one_line(str(err.value)) == (f"{tmp_path}: no usable image found (1 files skipped, "
                                        "e.g. a.png: empty file (0 bytes))")


def test_stage_wrong_idx_magic(tmp_path, mlflow_uri):
    idx = tmp_path / "idx"
    write_idx_set(idx)
    labels = idx / "t10k-labels-idx1-ubyte"
    labels.write_bytes(b"\x00\x00\x08\x03" + labels.read_bytes()[4:])
    line = error_line(shard_stage(tmp_path, mlflow_uri, {"source": "mnist-idx", "path": str(idx)}))
    assert line == (f"error: {labels}: not an IDX label file (magic 0x00000803, "
                    "expected 0x00000801)")
    assert no_partial_output(tmp_path)


# ------------------------------------------------------------------------------ pipe: URLs

def test_pipe_path_refused_without_allow_pipe(tmp_path, mlflow_uri):
    marker = tmp_path / "ran"
    url = f"pipe:touch {marker}; cat {{split}}.tar"
    with pytest.raises(ConfigError) as err:
        parse_params({"data": {"source": "shards", "path": url}})
    assert str(err.value) == (f"data.path: {url!r} runs a shell command (webdataset pipe: URL); "
                              "set data.allow_pipe: true to allow it")
    line = error_line(shard_stage(tmp_path, mlflow_uri, {"source": "shards", "path": url}))
    assert line == f"error: {err.value}"
    assert not marker.exists() and no_partial_output(tmp_path)


@pytest.mark.parametrize("data, message", [
    ({"source": "folder", "path": "pipe:cat {split}.tar", "allow_pipe": True},
     "is a pipe: URL, which only data.source: shards reads (not 'folder')"),
    ({"source": "shards", "path": "pipe:cat x.tar", "allow_pipe": True},
     "needs {split} in it (replaced by train and test"),
    ({"allow_pipe": "yes"}, "data.allow_pipe: 'yes' has the wrong type (expected bool)"),
])
def test_pipe_params_checked(data, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_params({"data": data})


def test_manifest_cannot_turn_a_shard_into_a_command(shards, tmp_path, monkeypatch):
    """A shard folder `.` and a manifest entry `pipe:...` would make the webdataset URL
    `pipe:...`: the manifest is refused, and the loader never hands webdataset a name."""
    marker = tmp_path / "ran"
    manifest_path = shards / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["shards"]["test"][0]["name"] = f"pipe:touch {marker}"
    manifest_path.write_text(json.dumps(manifest))
    monkeypatch.chdir(shards)
    with pytest.raises(DataError) as err:
        drain(eval_batches(".", "test", 32, 64))
    assert one_line(str(err.value)) == (
        f"manifest.json: shard name 'pipe:touch {marker}' in the test split is not a plain file "
        "name (letters, digits, _ . -; no folder, no URL scheme)")
    with pytest.raises(DataError, match="unreadable shard"):
        next(raw_samples([Path(f"pipe:touch {marker}")]))
    assert not marker.exists()


def test_pipe_url_pattern_reads_shards(shards, tmp_path):
    """`{split}` and brace ranges expand to one command per shard; the copy is byte-identical."""
    url = f"pipe:cat {shards}/{{split}}-{{000000..000002}}.tar"
    out = tmp_path / "copy"
    manifest = write_shards(parse_params({"data": {"source": "shards", "path": url,
                                                   "allow_pipe": True, "shard_size": 250}}).data,
                            out)
    original = read_manifest(shards)
    assert manifest["counts"] == original["counts"] and manifest["source_path"] == url
    assert manifest["label_names"] == [str(c) for c in range(10)]
    assert manifest["shards"] == original["shards"]  # same samples, same bytes, same sha256
    limited = write_shards(DataConfig(source="shards", path=url, allow_pipe=True, limit=100),
                           tmp_path / "limited")  # stops reading early: no error from `cat`
    assert limited["counts"] == {"train": 100, "test": 100}


def test_pipe_damaged_tar_header_is_not_a_silent_end(shards, tmp_path):
    """Without a manifest to count against, data after the tar's end marks the damage."""
    shard = shards / "test-000000.tar"
    damage_header(shard, "test_0000100.cls")
    url = f"pipe:cat {shards}/{{split}}-000000.tar"
    with pytest.raises(DataError) as err:
        write_shards(DataConfig(source="shards", path=url, allow_pipe=True), tmp_path / "out")
    assert one_line(str(err.value)) == (f"pipe:cat {shard}: data after the end of the tar, after "
                                        "sample test_0000099 (a damaged tar header?)")


def test_pipe_command_failure_is_one_line(tmp_path):
    url = f"pipe:cat {tmp_path}/missing-{{split}}.tar 2>/dev/null"
    with pytest.raises(DataError) as err:
        write_shards(DataConfig(source="shards", path=url, allow_pipe=True), tmp_path / "out")
    assert one_line(str(err.value)).startswith(
        f"pipe:cat {tmp_path}/missing-train.tar 2>/dev/null: the command exited with status 1")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ bad params

def test_train_stage_bad_param_one_line_no_output(tmp_path, mlflow_uri, tiny_shards):
    outputs = ("--shards", str(tiny_shards), "--out", str(tmp_path / "alae.pt"),
               "--plots", str(tmp_path / "train.csv"))
    params = {"train": {"kimgs": 1}}
    line = error_line(run_stage(tmp_path, mlflow_uri, "train", params, *outputs))
    assert line == "error: train.kimgs: unknown key (did you mean train.kimg?)"
    debug = run_stage(tmp_path, mlflow_uri, "train", params, *outputs, debug=True)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == line
    assert not (tmp_path / "alae.pt").exists() and not (tmp_path / "train.csv").exists()


def test_train_stage_params_not_fitting_shards(tmp_path, mlflow_uri, tiny_shards):
    line = error_line(run_stage(tmp_path, mlflow_uri, "train", {"train": {"batch_size": 1024}},
                                "--shards", str(tiny_shards), "--out", str(tmp_path / "alae.pt"),
                                "--plots", str(tmp_path / "train.csv")))
    assert line == (f"error: train.batch_size: 1024 is larger than the 600 training images of "
                    f"the shards in {tiny_shards}")
    assert not (tmp_path / "alae.pt").exists() and not (tmp_path / ".alae").exists()
