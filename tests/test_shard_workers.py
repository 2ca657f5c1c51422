"""The shard stage in worker processes (`data.workers`) and its encodings (`data.encoding`): the
same bytes from any number of workers, the default Fashion-MNIST shards pinned to what the
single-process writer wrote before workers existed, every encoding read back by the manifest."""
from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alae.config import ConfigError, DataConfig, parse_params
from alae.data import eval_batches, read_manifest, skipped_lines, train_batches, write_shards
from alae.data import shards as shards_module
from alae.data.encoding import AUTO_RAW_BELOW, AUTO_RAW_UP_TO, resolve
from alae.data.format import raw_samples, sample_image, shard_paths
from alae.errors import DataError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import synth_images  # noqa: E402

# sha256 of `write_shards(DataConfig(limit=300, shard_size=128), out)` on Debian's Fashion-MNIST,
# computed with the single-process writer before data.workers and data.encoding existed
# (commit 3da0990): the default shards must not change by a byte.
PINNED_300 = {
    "manifest.json": "bba4c78add87c9488f8058884a8a20a22109480ea5feb2b7a5d9c8be332b45fa",
    "test-000000.tar": "106061e61b137789ef7c124e34589b472cfce8bbaa3f6ebdb7cbc5f96559f889",
    "test-000001.tar": "2fe9d7eee5ae1a386eef2e66221ce1fa71be58ace2af60624554dc25ca4d86d1",
    "test-000002.tar": "98bc223a48e056131eb215c9cb51cd68148dc7e13592b31b634621793b5fe07b",
    "train-000000.tar": "d503eced6f9795fe2ab94b8eaa12a2b3cbc8a31e9eafc82d47403919df041a89",
    "train-000001.tar": "951c75c6322eb8ef7cbc2e46739f90ebcf27c15d3c4ac02463015b389790d40f",
    "train-000002.tar": "4fb86f1a6ac574d6d40e09697397682a62140920168d7a89ead1f6e53fc5eff5",
}


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def pixels(shards: Path, split: str) -> list[np.ndarray]:
    manifest = read_manifest(shards)
    return [np.asarray(sample_image(s, manifest))
            for s in raw_samples(shard_paths(shards, manifest, split), manifest)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, fashion_mnist) -> Path:
    """A real folder: synthetic scenes (JPEG and PNG, odd sizes and modes) plus files that pass
    the header check and fail to decode, so skips land between images in both splits."""
    root = tmp_path_factory.mktemp("scenes") / "images"
    synth_images.make_folder(root, 80, size=64, seed=5, workers=1)
    good = (root / "00000.png") if (root / "00000.png").exists() else next(root.glob("*.png"))
    for name in ("00010_cut.png", "00033_cut.png", "00061_cut.png"):
        (root / name).write_bytes(good.read_bytes()[:100])  # header fine, data truncated
    return root


@pytest.mark.parametrize("workers", [1, 2])
def test_default_fashion_mnist_shards_are_byte_identical_to_the_pinned_ones(
        fashion_mnist, tmp_path, workers):
    write_shards(DataConfig(limit=300, shard_size=128, workers=workers), tmp_path / "s")
    assert digests(tmp_path / "s") == PINNED_300
    assert "encoding" not in read_manifest(tmp_path / "s")  # PNG stays unnamed, as before


@pytest.mark.parametrize("encoding", ["png", "jpeg", "npy"])
def test_a_folder_gives_the_same_bytes_with_any_number_of_workers(folder, tmp_path, encoding):
    cfg = dict(source="folder", path=str(folder), resolution=32, channels=3, test_fraction=0.3,
               shard_size=20, encoding=encoding)
    one = write_shards(DataConfig(workers=1, **cfg), tmp_path / "one")
    assert len(one["skipped"]) == 3 and one["counts"]["train"] > 40
    assert sorted(s["path"] for s in one["skipped"]) == ["00010_cut.png", "00033_cut.png",
                                                         "00061_cut.png"]
    for workers in (2, 3):
        write_shards(DataConfig(workers=workers, **cfg), tmp_path / f"w{workers}")
        assert digests(tmp_path / f"w{workers}") == digests(tmp_path / "one")
    # data.limit stops at the same image (and records the same skips) in any number of workers
    limited = write_shards(DataConfig(workers=1, limit=30, **cfg), tmp_path / "l1")
    write_shards(DataConfig(workers=2, limit=30, **cfg), tmp_path / "l2")
    assert digests(tmp_path / "l1") == digests(tmp_path / "l2")
    assert limited["counts"]["train"] == 30


def test_fashion_mnist_with_a_limit_and_a_resize_is_the_same_in_workers(fashion_mnist, tmp_path):
    cfg = dict(limit=250, shard_size=100, resolution=16, channels=3)
    write_shards(DataConfig(workers=1, **cfg), tmp_path / "one")
    write_shards(DataConfig(workers=2, **cfg), tmp_path / "two")
    assert digests(tmp_path / "one") == digests(tmp_path / "two")


def test_encodings_read_back_by_the_manifest(folder, tmp_path):
    cfg = dict(source="folder", path=str(folder), resolution=32, channels=3, shard_size=30,
               workers=2)
    png = write_shards(DataConfig(encoding="png", **cfg), tmp_path / "png")
    npy = write_shards(DataConfig(encoding="npy", **cfg), tmp_path / "npy")
    jpeg = write_shards(DataConfig(encoding="jpeg", jpeg_quality=90, **cfg), tmp_path / "jpeg")
    assert "encoding" not in png and npy["encoding"] == "npy"
    assert (jpeg["encoding"], jpeg["jpeg_quality"]) == ("jpeg", 90)
    with tarfile.open(tmp_path / "jpeg" / "train-000000.tar") as tar:
        assert {Path(n).suffix for n in tar.getnames()} == {".jpg"}
    reference = pixels(tmp_path / "png", "test")
    assert all((a == b).all() for a, b in zip(pixels(tmp_path / "npy", "test"), reference))
    lossy = [np.abs(a.astype(int) - b).mean() for a, b in
             zip(pixels(tmp_path / "jpeg", "test"), reference)]
    assert len(lossy) == len(reference) and 0 < max(lossy) < 8
    # every reader decodes by the manifest: eval and train batches, and the shards source
    for name in ("png", "npy", "jpeg"):
        x, y = next(eval_batches(tmp_path / name, "test", 16, 8))
        assert x.shape == (8, 3, 16, 16) and y is None and -1 <= x.min() and x.max() <= 1
        assert next(train_batches(tmp_path / name, 32, 4, seed=0))[0].shape == (4, 3, 32, 32)
    x_png = next(eval_batches(tmp_path / "png", "test", 32, 64))[0]
    assert (next(eval_batches(tmp_path / "npy", "test", 32, 64))[0] == x_png).all()
    again = write_shards(DataConfig(source="shards", path=str(tmp_path / "jpeg"), resolution=32,
                                    channels=3, encoding="png"), tmp_path / "again")
    assert "encoding" not in again
    assert all((a == b).all() for a, b in zip(pixels(tmp_path / "again", "test"),
                                              pixels(tmp_path / "jpeg", "test")))


def test_auto_is_npy_from_128_to_256_px_and_png_otherwise():
    assert resolve("auto", 32) == "png" and resolve("auto", AUTO_RAW_BELOW // 2) == "png"
    assert resolve("auto", AUTO_RAW_BELOW) == "npy" and resolve("auto", AUTO_RAW_UP_TO) == "npy"
    assert resolve("auto", 1024) == "png" and resolve("jpeg", 32) == "jpeg"


def test_a_manifest_naming_an_unknown_encoding_is_one_line(tiny_shards, tmp_path):
    manifest = json.loads((tiny_shards / "manifest.json").read_text())
    manifest["encoding"] = "webp"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"manifest.json: encoding 'webp' is not one this code "
                                        r"reads \(png, jpeg, npy\)"):
        read_manifest(tmp_path)


def test_a_damaged_sample_in_a_worker_is_one_line_naming_shard_and_key(tiny_shards, tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    for p in tiny_shards.iterdir():
        (shards / p.name).write_bytes(p.read_bytes())
    shard = shards / "train-000001.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:
        for i, (member, payload) in enumerate(members):
            if member.name == "train_0000300.png":
                payload = b"\x89PNG not really"
                member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))
    with pytest.raises(DataError) as err:
        write_shards(DataConfig(source="shards", path=str(shards), workers=2), tmp_path / "out")
    message = str(err.value)
    assert f"{shard}: sample train_0000300 does not decode as PNG" in message
    assert "\n" not in message and not (tmp_path / "out").exists()


def gray(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels, "L")


def test_images_in_flight_are_bounded():
    """Reading the source waits for the oldest chunk: jobs pulled stay within the bound."""
    pulled = []

    def jobs():
        for i in range(10_000):
            pulled.append(i)
            yield np.full((4, 4), i % 256, np.uint8), i

    encoder = shards_module._Encoder(gray, "npy", 95)
    results = shards_module._in_workers(encoder, jobs(), workers=2)
    first = list(islice(results, 5))
    bound = (shards_module.IN_FLIGHT * 2 + 1) * shards_module.CHUNK
    assert len(pulled) <= bound
    rest = list(islice(results, 200))
    assert [label for _, label in first + rest] == list(range(205))
    assert len(pulled) <= 205 + bound
    results.close()


def test_skipped_lines_shows_five_then_counts_the_rest():
    skipped = [{"path": f"f{i}.png", "reason": "empty file (0 bytes)"} for i in range(7)]
    lines = skipped_lines(skipped, "/data", "shard", listed_in="manifest.json")
    assert lines[0] == "shard: skipped /data/f0.png: empty file (0 bytes)" and len(lines) == 6
    assert lines[-1] == ("shard: ... and 2 more skipped files (listed under \"skipped\" in "
                         "manifest.json)")
    assert skipped_lines(skipped[:2], "/d", "metrics") == [
        "metrics: skipped /d/f0.png: empty file (0 bytes)",
        "metrics: skipped /d/f1.png: empty file (0 bytes)"]


@pytest.mark.parametrize("raw, message", [
    ({"workers": -1}, "data.workers: -1 is not allowed (must be >= 0 (0: all cores))"),
    ({"workers": 1.5}, "data.workers: 1.5 has the wrong type (expected int)"),
    ({"encoding": "webp"}, "data.encoding: 'webp' is not one of 'auto', 'png', 'jpeg', 'npy'"),
    ({"jpeg_quality": 0}, "data.jpeg_quality: 0 is not allowed (must be in 1..100)"),
])
def test_bad_shard_params_are_one_line_naming_the_key(raw, message):
    with pytest.raises(ConfigError) as err:
        parse_params({"data": raw})
    assert str(err.value) == message


def test_bench_data_measures_one_configuration(folder):
    from benchmarks.data_speed import measure

    row = measure(folder, workers=2, encoding="auto")
    assert (row["encoding"], row["images"]) == ("npy", 80)  # 256 px: auto stores raw arrays
    assert row["mb_per_img"] == pytest.approx(256 * 256 * 3 / 1e6, rel=0.01)
    assert row["img_per_s"] > 0 and row["decode_img_per_s"] > 0 and row["pss_all_mib"] > 0
    assert not list(folder.parent.glob("bench-data-*"))  # its shards are removed
