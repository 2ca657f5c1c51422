"""Faulty shards stop the loader with one line naming the shard and the sample."""
import io
import re
import shutil
import tarfile

import pytest

from alae.data import eval_batches, train_batches
from alae.errors import DataError


@pytest.fixture
def shards(tiny_shards, tmp_path):
    out = tmp_path / "shards"
    shutil.copytree(tiny_shards, out)
    return out


def test_truncated_shard_names_the_file_and_says_it_changed(shards):
    shard = shards / "test-000000.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2 + 100])
    with pytest.raises(DataError) as err:
        for _ in eval_batches(shards, "test", 32, 64):
            pass
    message = str(err.value)
    assert str(shard) in message and "changed since it was written" in message
    assert "unreadable shard after sample test_" in message and "@ <" not in message
    assert "\n" not in message


def test_undecodable_sample_names_shard_and_key(shards):
    shard = shards / "train-000000.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    bad_key = None
    with tarfile.open(shard, "w") as tar:  # every member kept, one PNG's bytes replaced
        for i, (member, payload) in enumerate(members):
            if member.name.endswith(".png") and i > 200 and bad_key is None:
                bad_key, payload = member.name[:-4], b"\x89PNG not really"
                member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))
    message = same_error_with_and_without_workers(shards)
    assert str(shard) in message and f"sample {bad_key} does not decode" in message
    assert "sha256 differs" in message


def test_truncated_train_shard_stops_loader_workers_in_the_same_place(shards):
    shard = shards / "train-000001.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2 + 100])
    message = same_error_with_and_without_workers(shards)
    assert str(shard) in message and "changed since it was written" in message


def same_error_with_and_without_workers(shards) -> str:
    """The DataError the training stream raises, the same in one process and from decoding
    workers (one line, after the same good batches); returns it."""
    messages, drawn = [], []
    for workers in (0, 2):
        batches = train_batches(shards, 32, 16, seed=0, shuffle_buffer=1, workers=workers)
        with pytest.raises(DataError) as err:
            for n in range(100):
                next(batches)
        messages.append(str(err.value))
        drawn.append(n)
    same = [re.sub(r"0x[0-9a-f]+", "0x", m) for m in messages]  # PIL names its BytesIO's address
    assert same[1] == same[0] and "\n" not in messages[0] and drawn[1] == drawn[0] > 0, drawn
    return messages[0]
