"""The `alae` command on one's own image files."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alae.checkpoint import load_model, save_model
from alae.config import parse_params
from alae.images import load_images
from alae.nn import build_model

STYLE = {"model": {"kind": "style", "latent": 8, "mapping_layers": 2, "start_channels": 4,
                   "max_channels": 8}}


def alae(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alae.cli", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    params = parse_params(STYLE)
    torch.manual_seed(0)
    save_model(root / "alae.pt", build_model(params.model, channels=1, resolution=32), params,
               meta={})
    rng = np.random.default_rng(0)
    imgs = root / "imgs"
    imgs.mkdir()
    Image.fromarray(rng.integers(0, 255, (40, 50), dtype=np.uint8)).save(imgs / "a.png")
    Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(imgs / "b.jpg")
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / "colour.png")
    (root / "junk.png").write_bytes(b"not an image")
    return root


def test_reconstruct_gives_model_resolution(files, tmp_path):
    out = alae("reconstruct", "--model", str(files / "alae.pt"), str(files / "imgs"), "--out",
               str(tmp_path / "rec"))
    assert out.returncode == 0, out.stderr
    for name in ("a.png", "b.png"):
        assert Image.open(tmp_path / "rec" / name).size == (32, 32)


def test_encode_matches_the_evaluate_stage_encoder(files, tmp_path):
    out = alae("encode", "--model", str(files / "alae.pt"), str(files / "imgs"), "--out",
               str(tmp_path / "codes.npy"))
    assert out.returncode == 0, out.stderr
    codes = np.load(tmp_path / "codes.npy")
    names = (tmp_path / "codes.npy.txt").read_text().split()
    assert codes.shape == (2, 8) and [Path(n).name for n in names] == ["a.png", "b.jpg"]
    model, _, _ = load_model(files / "alae.pt")
    x = load_images([Path(n) for n in names], 32, 1)
    with torch.no_grad():
        assert np.allclose(codes, model.encode(x).numpy(), atol=1e-5)


def test_interpolate_and_mix(files, tmp_path):
    a, b = str(files / "imgs/a.png"), str(files / "imgs/b.jpg")
    assert alae("interpolate", "--model", str(files / "alae.pt"), a, b, "--steps", "5",
                str(tmp_path / "i.png")).returncode == 0
    assert Image.open(tmp_path / "i.png").width > 7 * 64
    ok = alae("mix", "--model", str(files / "alae.pt"), a, b, "--styles", "coarse",
              str(tmp_path / "m.png"))
    assert ok.returncode == 0, ok.stderr
    bad = alae("mix", "--model", str(files / "alae.pt"), a, b, "--styles", "fine",
               str(tmp_path / "f.png"))
    assert bad.returncode == 1 and "only coarse, middle styles" in bad.stderr


@pytest.mark.parametrize("name, message", [("junk.png", "unreadable image"),
                                           ("colour.png", "colour image, but the model")])
def test_bad_images_are_one_line_errors(files, tmp_path, name, message):
    out = alae("reconstruct", "--model", str(files / "alae.pt"), str(files / name), "--out",
               str(tmp_path / "rec"))
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and name in lines[0]
    assert not (tmp_path / "rec").exists()
