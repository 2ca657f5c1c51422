"""Data layer: sources -> shards + manifest -> batches, with real files (no mocks)."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alae.config import ConfigError, DataConfig, parse_params
from alae.data import eval_batches, open_source, read_manifest, train_batches, write_shards
from alae.data.format import raw_samples, sample_image, shard_paths
from alae.data.sources import load_image
from alae.errors import DataError

REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------ helpers

def idx_bytes(images: np.ndarray | None = None, labels: np.ndarray | None = None,
              magic: int | None = None, dims: tuple | None = None) -> bytes:
    if images is not None:
        magic = 0x803 if magic is None else magic
        dims = images.shape if dims is None else dims
        return struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + images.tobytes()
    magic = 0x801 if magic is None else magic
    dims = labels.shape if dims is None else dims
    return struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + labels.tobytes()


def write_idx_set(folder: Path, n_train=7, n_test=5, seed=0) -> dict:
    """Four IDX files: train gzipped, test plain (both kinds must work). Returns the arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for split, prefix, n, gz in (("train", "train", n_train, True),
                                 ("test", "t10k", n_test, False)):
        images = rng.integers(1, 256, size=(n, 28, 28), dtype=np.uint8)  # no zeros: padding shows
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        for kind, payload in (("images-idx3", idx_bytes(images)),
                              ("labels-idx1", idx_bytes(labels=labels))):
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(payload))
            else:
                (folder / name).write_bytes(payload)
        data[split] = (images, labels)
    return data


def read_split(shards_dir: Path, split: str) -> list[tuple[str, np.ndarray, int | None]]:
    """Every stored sample of a split, in order: (key, uint8 pixels, label)."""
    manifest = read_manifest(shards_dir)
    return [(s["__key__"], np.asarray(sample_image(s, manifest)),
             int(s["cls"]) if "cls" in s else None)
            for s in raw_samples(shard_paths(shards_dir, manifest, split))]


def png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------- IDX

def test_idx_round_trip_exact_with_padding(tmp_path):
    data = write_idx_set(tmp_path / "idx")
    manifest = write_shards(DataConfig(source="mnist-idx", path=str(tmp_path / "idx"),
                                       shard_size=3), tmp_path / "out")
    assert manifest["counts"] == {"train": 7, "test": 5}
    assert manifest["label_names"] == [str(d) for d in range(10)]
    assert [s["count"] for s in manifest["shards"]["train"]] == [3, 3, 1]
    for split, (images, labels) in data.items():
        stored = read_split(tmp_path / "out", split)
        assert [k for k, _, _ in stored] == [f"{split}_{i:07d}" for i in range(len(images))]
        for (key, pixels, label), image, want in zip(stored, images, labels):
            assert pixels.shape == (32, 32)
            assert np.array_equal(pixels[2:30, 2:30], image)
            border = np.ones((32, 32), bool)
            border[2:30, 2:30] = False
            assert not pixels[border].any()  # the 2-px frame is zero
            assert label == int(want)


def test_idx_resized_and_rgb(tmp_path):
    write_idx_set(tmp_path / "idx", n_train=3, n_test=2)
    write_shards(DataConfig(source="mnist-idx", path=str(tmp_path / "idx"), resolution=16,
                            channels=3), tmp_path / "out")
    pixels = read_split(tmp_path / "out", "train")[0][1]
    assert pixels.shape == (16, 16, 3)
    assert np.array_equal(pixels[..., 0], pixels[..., 2])  # gray replicated into RGB


@pytest.mark.parametrize("damage", ["magic", "dims", "truncated", "truncated_gz", "count"])
def test_corrupt_idx_is_data_error_naming_file(tmp_path, damage):
    data = write_idx_set(tmp_path / "idx")
    images, labels = data["test"]
    target = tmp_path / "idx" / "t10k-images-idx3-ubyte"
    if damage == "magic":
        target.write_bytes(idx_bytes(images, magic=0x804))
    elif damage == "dims":
        target.write_bytes(idx_bytes(images, dims=(len(images), 27, 28)))
    elif damage == "truncated":
        target.write_bytes(idx_bytes(images)[:-100])
    elif damage == "count":
        target = tmp_path / "idx" / "t10k-labels-idx1-ubyte"
        target.write_bytes(idx_bytes(labels=labels[:-1]))
    else:  # a gzip stream cut short is only noticed while streaming: the write must roll back
        target = tmp_path / "idx" / "train-images-idx3-ubyte.gz"
        target.write_bytes(target.read_bytes()[:-30])
    with pytest.raises(DataError, match=target.name):
        write_shards(DataConfig(source="mnist-idx", path=str(tmp_path / "idx")), tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # nothing half-written left


def test_failed_rewrite_keeps_previous_shards(tmp_path):
    write_idx_set(tmp_path / "idx")
    cfg = DataConfig(source="mnist-idx", path=str(tmp_path / "idx"))
    first = write_shards(cfg, tmp_path / "out")
    gz = tmp_path / "idx" / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-30])
    with pytest.raises(DataError):
        write_shards(cfg, tmp_path / "out")
    assert read_manifest(tmp_path / "out") == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx", "out"]


def test_missing_dataset_names_path(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        write_shards(DataConfig(source="mnist-idx", path=str(tmp_path / "nowhere")), tmp_path / "o")
    (tmp_path / "half").mkdir()
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        open_source(DataConfig(source="mnist-idx", path=str(tmp_path / "half")))


def test_unknown_source_is_config_error():
    with pytest.raises(ConfigError, match="data.source"):
        parse_params({"data": {"source": "imagenet"}})


# ------------------------------------------------------------------------------------- folder

def make_mixed_folder(root: Path) -> dict[str, str]:
    """Images in every supported format and mode, plus junk. Returns {rel path: skip reason}."""
    cat, dog = root / "cat", root / "dog"
    (cat / "deeper").mkdir(parents=True)
    dog.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (30, 40), dtype=np.uint8), "L").save(cat / "gray.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(cat / "rgb.png")
    Image.new("RGBA", (20, 50), (255, 255, 255, 0)).save(cat / "clear.png")  # -> black
    Image.new("RGBA", (24, 24), (200, 100, 50, 255)).save(cat / "deeper" / "opaque.png")
    palette = Image.new("P", (33, 17), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.save(dog / "palette.png")
    clear_p = Image.new("P", (12, 12), 0)
    clear_p.putpalette([255, 255, 255] * 256)
    clear_p.save(dog / "clear_palette.png", transparency=0)  # white but transparent -> black
    Image.fromarray(np.full((20, 20), 257 * 100, np.uint16)).save(dog / "deep16.png")  # I;16
    Image.new("RGB", (64, 48), (0, 0, 255)).save(dog / "photo.jpg", quality=95)
    Image.new("RGB", (40, 40), (90, 90, 90)).save(dog / "pic.webp", lossless=True)
    Image.new("RGB", (16, 16), (255, 0, 0)).save(dog / "old.bmp")
    Image.new("LA", (18, 18), (255, 128)).save(dog / "half_alpha.png")
    Image.new("CMYK", (16, 16), (0, 0, 0, 0)).save(dog / "print.jpg")
    (dog / "mislabelled.txt").write_bytes(png_bytes(Image.new("L", (8, 8), 7)))  # PNG by content
    (dog / "notes.txt").write_text("not an image")
    (cat / "cut.png").write_bytes(png_bytes(Image.new("RGB", (64, 64), (1, 2, 3)))[:60])
    Image.new("L", (8, 8), 0).save(root / "orphan.png")  # top level beside class folders
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.png").write_bytes(png_bytes(Image.new("L", (8, 8))))
    return {"dog/notes.txt": "not an image", "cat/cut.png": "unreadable image",
            "orphan.png": "top level"}


def test_folder_images_decoded_to_stored_format(tmp_path):
    make_mixed_folder(tmp_path)
    load = lambda rel, ch=3: np.asarray(load_image(tmp_path / rel, 16, ch))  # noqa: E731
    assert load("cat/clear.png").shape == (16, 16, 3) and not load("cat/clear.png").any()
    assert (load("cat/deeper/opaque.png") == [200, 100, 50]).all()
    assert (load("dog/deep16.png", 1) == 100).all()  # 16-bit scaled to 8 bits
    assert (load("dog/half_alpha.png", 1) == 128).all()  # white at half alpha over black
    assert Image.open(tmp_path / "dog/clear_palette.png").mode == "P"
    assert not load("dog/clear_palette.png").any()
    assert (load("dog/palette.png") == [10, 200, 30]).all()
    assert (load("dog/old.bmp") == [255, 0, 0]).all()
    assert (load("dog/pic.webp") == 90).all()
    assert (load("dog/print.jpg") == 255).all()  # CMYK 0,0,0,0 is white
    assert np.abs(load("dog/photo.jpg").astype(int) - [0, 0, 255]).max() <= 3
    assert load("cat/gray.png", 1).shape == (16, 16)


def test_folder_round_trip_labels_and_skips(tmp_path):
    skips = make_mixed_folder(tmp_path / "src")
    cfg = DataConfig(source="folder", path=str(tmp_path / "src"), resolution=16, channels=3,
                     test_fraction=0.5)
    manifest = write_shards(cfg, tmp_path / "out")
    assert manifest["label_names"] == ["cat", "dog"]
    assert sorted(s["path"] for s in manifest["skipped"]) == sorted(skips)
    for entry in manifest["skipped"]:
        assert skips[entry["path"]] in entry["reason"]
    # What went in comes out: every usable file, with its label, exactly once across splits.
    usable = [p for p in (tmp_path / "src").rglob("*") if p.is_file() and ".hidden" not in str(p)
              and p.relative_to(tmp_path / "src").as_posix() not in skips]
    want = sorted((np.asarray(load_image(p, 16, 3)).tobytes(),
                   ["cat", "dog"].index(p.relative_to(tmp_path / "src").parts[0])) for p in usable)
    got = [(px.tobytes(), label) for split in ("train", "test")
           for _, px, label in read_split(tmp_path / "out", split)]
    assert sorted(got) == want
    assert manifest["counts"]["train"] > 0 and manifest["counts"]["test"] > 0
    assert sum(manifest["counts"].values()) == len(usable) == 13


def test_folder_split_deterministic(tmp_path):
    make_mixed_folder(tmp_path / "src")
    cfg = DataConfig(source="folder", path=str(tmp_path / "src"), test_fraction=0.5)
    a = write_shards(cfg, tmp_path / "a")
    b = write_shards(cfg, tmp_path / "b")
    assert a["shards"] == b["shards"]  # byte-identical tars (same sha256)
    before = open_source(cfg).items
    Image.new("L", (9, 9), 3).save(tmp_path / "src" / "dog" / "new.png")
    after = open_source(cfg).items
    for split in ("train", "test"):  # a new file moves no existing one to the other split
        assert set(before[split]) <= set(after[split])


def test_folder_without_subfolders_has_no_labels(tmp_path):
    for i in range(12):
        Image.new("L", (10, 12), i * 20).save(tmp_path / f"im{i}.png")
    manifest = write_shards(DataConfig(source="folder", path=str(tmp_path), test_fraction=0.5),
                            tmp_path.parent / f"{tmp_path.name}_out")
    assert manifest["label_names"] is None
    assert sum(manifest["counts"].values()) == 12
    x, y = next(eval_batches(tmp_path.parent / f"{tmp_path.name}_out", "train", 8, 4))
    assert y is None and x.shape[1:] == (1, 8, 8)


@pytest.mark.parametrize("content", ["missing", "empty", "junk"])
def test_folder_without_images_is_data_error(tmp_path, content):
    src = tmp_path / "src"
    if content != "missing":
        (src / "a").mkdir(parents=True)
    if content == "junk":
        (src / "a" / "x.txt").write_text("hello")
        (src / "y.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match="src"):
        write_shards(DataConfig(source="folder", path=str(src)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- manifest, shards

def test_manifest_matches_files(tiny_shards):
    manifest = read_manifest(tiny_shards)
    assert manifest["source"] == "fashion-mnist" and manifest["format_version"] == 1
    assert manifest["counts"] == {"train": 600, "test": 600}
    assert (manifest["resolution"], manifest["channels"]) == (32, 1)
    assert manifest["label_names"][0] == "T-shirt/top" and len(manifest["label_names"]) == 10
    assert manifest["skipped"] == []
    listed = []
    for split in ("train", "test"):
        assert [s["count"] for s in manifest["shards"][split]] == [250, 250, 100]
        for entry in manifest["shards"][split]:
            path = tiny_shards / entry["name"]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
            assert sum(1 for _ in raw_samples([path])) == entry["count"]
            listed.append(entry["name"])
    assert sorted(listed + ["manifest.json"]) == sorted(p.name for p in tiny_shards.iterdir())


def test_missing_manifest_or_shard_is_data_error(tiny_shards, tmp_path):
    with pytest.raises(DataError, match="manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="manifest.json"):
        next(eval_batches(tmp_path, "test", 32, 8))
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "manifest.json").write_text((tiny_shards / "manifest.json").read_text())
    with pytest.raises(DataError, match="train-000000.tar"):
        train_batches(partial, 32, 8, seed=0)


def test_shards_source_rewrites_at_new_format(tiny_shards, tmp_path):
    manifest = write_shards(DataConfig(source="shards", path=str(tiny_shards), resolution=16,
                                       channels=3, limit=100), tmp_path / "re")
    assert manifest["counts"] == {"train": 100, "test": 100}
    assert manifest["label_names"] == read_manifest(tiny_shards)["label_names"]
    old = read_split(tiny_shards, "test")[:100]
    new = read_split(tmp_path / "re", "test")
    assert [o[2] for o in old] == [n[2] for n in new]
    assert new[0][1].shape == (16, 16, 3)


# --------------------------------------------------------------------------------------- loader

@pytest.mark.parametrize("resolution", [4, 8, 16, 32])
def test_loader_shapes_and_range(tiny_shards, resolution):
    x, y = next(train_batches(tiny_shards, resolution, 16, seed=0))
    assert x.shape == (16, 1, resolution, resolution) and x.dtype == torch.float32
    assert y.shape == (16,) and y.dtype == torch.long and 0 <= int(y.min()) <= int(y.max()) < 10
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    if resolution == 32:
        assert float(x.min()) == -1.0  # the zero padding


def test_area_downsampling_on_known_image(tmp_path):
    image = (np.arange(28 * 28, dtype=np.int64).reshape(28, 28) * 7 % 256).astype(np.uint8)
    folder = tmp_path / "idx"
    folder.mkdir()
    for prefix in ("train", "t10k"):
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(image[None]))
        labels = idx_bytes(labels=np.array([3], np.uint8))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(labels)
    write_shards(DataConfig(source="mnist-idx", path=str(folder)), tmp_path / "out")
    padded = np.pad(image, 2).astype(np.float64) / 127.5 - 1.0
    for res in (32, 16, 8, 4):
        f = 32 // res
        want = padded.reshape(res, f, res, f).mean(axis=(1, 3))
        x, y = next(eval_batches(tmp_path / "out", "test", res, 1))
        assert y.tolist() == [3]
        np.testing.assert_allclose(x[0, 0].numpy(), want, atol=1e-6)


@pytest.mark.parametrize("resolution", [64, 12, 0])
def test_unavailable_resolution_is_data_error(tiny_shards, resolution):
    with pytest.raises(DataError, match=str(resolution)):
        train_batches(tiny_shards, resolution, 8, seed=0)
    with pytest.raises(DataError):
        eval_batches(tiny_shards, "test", resolution, 8)


def test_train_batches_seeded(tiny_shards):
    def first(seed, n=5):
        it = train_batches(tiny_shards, 8, 32, seed=seed, shuffle_buffer=200)
        return [next(it) for _ in range(n)]

    a, b, c = first(1), first(1), first(2)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))
    # Endless: 600 images, batches of 32, well past one epoch.
    it = train_batches(tiny_shards, 4, 32, seed=0)
    assert all(next(it)[0].shape[0] == 32 for _ in range(40))


def test_train_ranks_partition_an_epoch(tiny_shards):
    # 3 shards of 250/250/100 on 3 ranks: one shard each per epoch, disjoint, together everything.
    firsts = [next(train_batches(tiny_shards, 32, 100, seed=5, rank=r, world_size=3,
                                 shuffle_buffer=1))[0] for r in range(3)]
    rows = {x.numpy().tobytes() for batch in firsts for x in batch}
    assert len(rows) == 300  # each rank read its own shard


def test_eval_covers_split_once_in_order(tiny_shards):
    stored = read_split(tiny_shards, "test")
    xs, ys = zip(*eval_batches(tiny_shards, "test", 32, 64))
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape[0] == len(stored) == 600 and [len(b) for b in xs][-1] == 600 - 9 * 64
    want = np.stack([px for _, px, _ in stored])
    assert np.array_equal(np.rint((x[:, 0].numpy() + 1) * 127.5), want)
    assert y.tolist() == [label for _, _, label in stored]
    limited = list(eval_batches(tiny_shards, "test", 16, 50, limit=120))
    assert [len(b[0]) for b in limited] == [50, 50, 20]


# ---------------------------------------------------------------------------------------- stage

def run_stage(tmp_path, data: dict) -> subprocess.CompletedProcess:
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"data": data}))  # JSON is YAML
    return subprocess.run([sys.executable, str(REPO / "stages" / "shard.py"), "--params",
                           str(params), "--out", str(tmp_path / "shards")],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def test_stage_missing_dataset_one_line_error(tmp_path):
    result = run_stage(tmp_path, {"source": "mnist-idx", "path": str(tmp_path / "absent")})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "absent" in lines[0]
    assert not (tmp_path / "shards").exists()


def test_stage_writes_shards(tmp_path):
    write_idx_set(tmp_path / "idx")
    result = run_stage(tmp_path, {"source": "mnist-idx", "path": str(tmp_path / "idx")})
    assert result.returncode == 0, result.stderr
    assert "7 train + 5 test" in result.stdout
    assert read_manifest(tmp_path / "shards")["counts"] == {"train": 7, "test": 5}
