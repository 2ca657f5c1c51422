"""`alae metrics --data FOLDER`: a folder of images scores exactly as the shard stage's shards of
the same images, an imported model of the authors' layout runs on an RGB folder in the Inception
space (stand-in weights in a temporary TORCH_HOME: no number here is an Inception FID), bad
`--data` stops in one line writing nothing, and images unlike the model's get one warning line."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from alae.checkpoint import save_model
from alae.cli import main as cli
from alae.config import DataConfig, parse_params
from alae.data import eval_batches, open_source, read_manifest, write_shards
from alae.featurenet import Featurenet, save_featurenet
from alae.image_folder import ImageFolder
from alae.nn import build_model
from alae.official import import_official
from benchmarks.standin import write_standin_weights
from official_fixture import save_their_checkpoint


@pytest.fixture(scope="module")
def fashion(tiny_shards) -> np.ndarray:
    """40 real Fashion-MNIST test images, uint8 (40, 32, 32)."""
    x, _ = next(eval_batches(tiny_shards, "test", 32, 40))
    return x.add(1).mul(127.5).round().byte()[:, 0].numpy()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, Path]:
    """An untrained 32 px grayscale MLP ALAE and an untrained 8-d featurenet: their numbers mean
    nothing, but they depend on every pixel of the data."""
    root = tmp_path_factory.mktemp("model")
    params = parse_params({"model": {"kind": "mlp", "latent": 8, "mapping_layers": 2,
                                     "hidden": 32}})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        save_model(root / "m.pt", build_model(params.model, 1, 32), params, meta={})
        save_featurenet(Featurenet(1, 32, 10, features=8), root / "featurenet.pt")
    return root / "m.pt", root / "featurenet.pt"


def run_metrics(model: Path, data: Path, out: Path, *options: str, featurenet: Path | None = None):
    args = ["metrics", "--model", str(model), "--data", str(data), "--device", "cpu",
            "--batch-size", "16", "--out", str(out), *options]
    if featurenet is not None:
        args += ["--featurenet", str(featurenet)]
    return CliRunner().invoke(cli, args)


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("metrics: warning")]


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def save_images(folder: Path, images, size: tuple[int, int], mode: str = "L") -> None:
    """Each image resized to `size` (w, h); every third as JPEG, the others as PNG."""
    folder.mkdir()
    for i, img in enumerate(images):
        im = Image.fromarray(img).resize(size, Image.BICUBIC).convert(mode)
        if i % 3 == 0:
            im.save(folder / f"{i:02d}.jpg", quality=90)
        else:
            im.save(folder / f"{i:02d}.png")


# ------------------------------------------------------------ the same numbers as the shard stage's

def test_a_folder_scores_as_the_shard_stage_shards_of_its_images(fashion, files, tmp_path):
    model, featurenet = files
    # 64 px grayscale JPEGs and PNGs: the folder source resizes them to the model's 32 px.
    save_images(tmp_path / "all", fashion, (64, 64))
    cfg = DataConfig(source="folder", path=str(tmp_path / "all"), resolution=32, channels=1,
                     test_fraction=0.5)
    write_shards(cfg, tmp_path / "shards")      # the shard stage: a hash split into train, test
    test_files = [rel for rel, _ in open_source(cfg).items["test"]]
    assert 10 <= len(test_files) < len(fashion)
    folder = tmp_path / "folder"                # the shards' test images, as a plain folder
    folder.mkdir()
    for rel in test_files:
        shutil.copy(tmp_path / "all" / rel, folder / rel)
    (folder / "broken.png").write_bytes(b"")    # refused by the folder source, and said so

    # 12 of ~20 test images reconstructed: the first 12 in stored order, so order counts too.
    options = ["--metrics", "fid,kid,pr,rec_fid,mse", "--num-images", "12"]
    on_folder = run_metrics(model, folder, tmp_path / "f.jsonl", *options, featurenet=featurenet)
    on_shards = run_metrics(model, tmp_path / "shards", tmp_path / "s.jsonl", *options,
                            featurenet=featurenet)
    assert on_folder.exit_code == 0, on_folder.output
    assert on_shards.exit_code == 0, on_shards.output
    f, s = lines_of(tmp_path / "f.jsonl"), lines_of(tmp_path / "s.jsonl")
    assert [r["metric"] for r in f] == ["fid", "kid", "pr", "rec_fid", "mse"]
    assert [r["values"] for r in f] == [r["values"] for r in s]
    assert f[0]["values"]["fid_classifier"] > 0 and f[4]["values"]["mse"] > 0
    protocol = f[0]["protocol"]
    shard_counts = read_manifest(tmp_path / "shards")["counts"]
    assert protocol["n_ref"] == len(test_files) == shard_counts["test"]
    assert protocol["data"] == str(folder) and protocol["data_kind"] == "images"
    assert protocol["data_images"] == len(test_files) and protocol["data_skipped"] == 1
    assert re.fullmatch(r"[0-9a-f]{64}", protocol["dataset"])
    assert s[0]["protocol"]["data_kind"] == "shards"
    assert f"metrics: skipped {folder / 'broken.png'}: empty file (0 bytes)" in on_folder.stderr
    assert warning_lines(on_folder.stderr) == []   # square, and larger than the model's 32 px


def test_the_folder_digest_changes_with_any_image_and_only_with_images(fashion, tmp_path):
    save_images(tmp_path / "f", fashion[:4], (32, 32))

    def digest() -> str:
        return ImageFolder(tmp_path / "f", 32, 1).digest()

    first = digest()
    (tmp_path / "f" / "notes.txt").write_text("not an image")
    assert digest() == first
    pixels = np.asarray(Image.open(tmp_path / "f" / "01.png")).copy()
    pixels[0, 0] ^= 1                            # one pixel, one bit
    Image.fromarray(pixels).save(tmp_path / "f" / "01.png")
    changed = digest()
    assert changed != first
    (tmp_path / "f" / "01.png").rename(tmp_path / "f" / "09.png")
    assert digest() not in (first, changed)


# ------------------------------------------------------- the authors' model, the Inception space

@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """A temporary TORCH_HOME holding the stand-in Inception weights, for this module."""
    home = tmp_path_factory.mktemp("torch_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(home))
        write_standin_weights()
        yield home


def test_an_imported_model_scores_an_rgb_folder_in_the_inception_space(torch_home, fashion,
                                                                        tmp_path):
    # Their celeba configuration, the smallest RGB one: 128 px, as their checkpoints are laid out.
    save_their_checkpoint(tmp_path / "theirs.pth", "celeba", seed=0)
    import_official(tmp_path / "theirs.pth", "celeba", tmp_path / "celeba.pt")
    folder = tmp_path / "faces"
    tinted = [np.stack([img, img // 2, 255 - img], axis=-1) for img in fashion[:6]]
    save_images(folder, tinted, (128, 128), mode="RGB")
    Image.fromarray(tinted[0]).resize((100, 80)).save(folder / "wide.png")   # not square
    result = run_metrics(tmp_path / "celeba.pt", folder, tmp_path / "r.jsonl", "--features",
                         "inception", "--metrics", "kid,mse", "--num-images", "4")
    assert result.exit_code == 0, result.output
    lines = lines_of(tmp_path / "r.jsonl")
    assert [r["metric"] for r in lines] == ["kid", "mse"]
    assert set(lines[0]["values"]) == {"kid_inception", "kid_std_inception"}
    assert all(np.isfinite(v) for r in lines for v in r["values"].values())
    for r in lines:
        p = r["protocol"]
        assert p["data"] == str(folder) and p["data_kind"] == "images" and p["data_images"] == 7
        assert p["features"] == "inception" and re.fullmatch(r"[0-9a-f]{64}", p["dataset"])
    assert lines[0]["protocol"]["n_ref"] == 7
    warnings = warning_lines(result.stderr)
    assert len(warnings) == 1 and "1 not square (e.g. wide.png 100x80)" in warnings[0]
    assert "square 128x128 RGB images" in warnings[0] and "FFHQ-aligned" in warnings[0]


# ------------------------------------------------------------------------ refusals and the warning

def _bad(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "data"
    if kind == "empty":
        path.mkdir()
    elif kind == "no images":
        path.mkdir()
        (path / "readme.txt").write_text("no images here")
    elif kind == "file":
        path.write_bytes(b"\x89PNG not really")
    return path   # "missing": nothing there


@pytest.mark.parametrize("kind", ["missing", "empty", "no images", "file"])
def test_bad_data_is_one_line_exit_1_and_writes_nothing(files, tmp_path, kind):
    model, featurenet = files
    data = _bad(tmp_path, kind)
    out = tmp_path / "out" / "results.jsonl"
    out.parent.mkdir()
    out.write_text('{"earlier": 1}\n')
    result = run_metrics(model, data, out, "--metrics", "mse", featurenet=featurenet)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {data}: "), lines
    assert out.read_text() == '{"earlier": 1}\n' and list(out.parent.iterdir()) == [out]


def test_metrics_that_read_a_train_split_are_refused_when_named_left_out_of_default(
        fashion, files, tmp_path):
    model, featurenet = files
    save_images(tmp_path / "f", fashion[:12], (32, 32))
    for named, refused in (("probe", "probe"), ("fid_floor,mse", "fid_floor")):
        result = run_metrics(model, tmp_path / "f", tmp_path / "r.jsonl", "--metrics", named,
                             featurenet=featurenet)
        assert result.exit_code == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: --metrics {refused}: "), lines
        assert "it reads the train split" in lines[0]
        assert f"which an image folder ({tmp_path / 'f'}) does not have" in lines[0]
    assert not (tmp_path / "r.jsonl").exists()
    result = run_metrics(model, tmp_path / "f", tmp_path / "r.jsonl", "--num-images", "10",
                         "--ppl-samples", "20", featurenet=featurenet)
    assert result.exit_code == 0, result.output
    assert "metrics: left out fid_floor, probe: they read the train split" in result.stderr
    ran = [r["metric"] for r in lines_of(tmp_path / "r.jsonl")]
    assert ran and "probe" not in ran and "fid_floor" not in ran and "fid" in ran


@pytest.mark.parametrize("size, expected", [
    ((32, 32), None),                                       # the model's own shape
    ((48, 32), "12 not square (e.g. 00.jpg 48x32)"),
    ((12, 12), "12 smaller than 16 px (e.g. 00.jpg 12x12)"),
])
def test_images_unlike_the_models_get_one_warning_line(fashion, files, tmp_path, size, expected):
    model, featurenet = files
    save_images(tmp_path / "f", fashion[:12], size)
    result = run_metrics(model, tmp_path / "f", tmp_path / "r.jsonl", "--metrics", "mse",
                         "--num-images", "4", featurenet=featurenet)
    assert result.exit_code == 0, result.output
    warnings = warning_lines(result.stderr)
    if expected is None:
        assert warnings == []
        return
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"metrics: warning: {tmp_path / 'f'}: of 12 images, {expected}")
    assert "the model expects square 32x32 grayscale images" in warnings[0]
    assert "FFHQ" not in warnings[0]   # not a face model
