"""Inception space without the real weights: a stand-in weights file (random convolutions,
batch-norm statistics calibrated so features vary) in a temporary TORCH_HOME, where pytorch-fid
looks. It checks the plumbing (lookup, input conventions, parity with `python -m pytorch_fid`),
never an Inception number: no value computed here is an FID anyone should quote."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from alae.cli import main as cli
from alae.config import DataConfig, EvaluateConfig
from alae.data import write_shards
from alae.errors import UserError
from alae.metrics import evaluate_model
from alae.metrics import inception as inc
from alae.metrics.features import load_extractor
from alae.metrics.inception import InceptionFeatures, weights_path
from alae.pixels import to_uint8
from benchmarks import standin
from benchmarks.standin import write_standin_weights

@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """TORCH_HOME holding a stand-in pt_inception-2015-12-05-6726825d.pth, for this module."""
    home = tmp_path_factory.mktemp("torch_home")
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    write_standin_weights()
    yield home
    if old is None:
        os.environ.pop("TORCH_HOME", None)
    else:
        os.environ["TORCH_HOME"] = old


@pytest.fixture(scope="module")
def extractor(torch_home) -> InceptionFeatures:
    return InceptionFeatures.load("cpu")


def test_weights_are_looked_up_where_pytorch_fid_looks(torch_home):
    assert weights_path() == torch_home / "hub" / "checkpoints" / inc.WEIGHTS_FILE
    assert inc.WEIGHTS_FILE == "pt_inception-2015-12-05-6726825d.pth"
    from pytorch_fid.inception import FID_WEIGHTS_URL

    assert inc.WEIGHTS_URL == FID_WEIGHTS_URL   # written out to keep pytorch-fid's import lazy


def test_standin_refuses_any_place_but_a_temporary_torch_home(tmp_path, monkeypatch):
    # Every refused place is itself inside tmp_path, so a broken check would harm nothing real.
    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))   # the "real" cache here
    monkeypatch.setattr(standin.tempfile, "gettempdir", lambda: str(tmp_path / "temp"))
    with pytest.raises(UserError, match="TORCH_HOME is not set") as e:
        write_standin_weights()
    assert "\n" not in str(e.value)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "lasting"))   # set, but not temporary
    with pytest.raises(UserError, match="only a temporary TORCH_HOME"):
        write_standin_weights()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "temp"))      # the temporary folder itself
    with pytest.raises(UserError, match="only a temporary TORCH_HOME"):
        write_standin_weights()
    assert not any(p.is_file() for p in tmp_path.rglob("*"))      # nothing written anywhere
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "temp" / "home"))
    assert write_standin_weights() == weights_path() and weights_path().is_file()
    assert weights_path().is_relative_to(tmp_path / "temp" / "home")


def test_missing_weights_offline_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, dst):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(inc, "_download", offline)
    with pytest.raises(UserError) as e:
        InceptionFeatures.load()
    msg = str(e.value)
    assert "\n" not in msg
    assert str(tmp_path / "hub" / "checkpoints" / inc.WEIGHTS_FILE) in msg
    assert inc.WEIGHTS_URL in msg


def test_a_file_that_is_not_the_weights_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights_path().parent.mkdir(parents=True)
    torch.save({"conv.weight": torch.zeros(3)}, weights_path())
    with pytest.raises(UserError, match="not pytorch-fid's Inception weights"):
        InceptionFeatures.load()


def test_features_vary_and_follow_pytorch_fids_conventions(extractor):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 16, 16, generator=g) * 2 - 1       # grayscale in [-1, 1]
    ours = extractor(x)
    assert ours.shape == (2, 2048) and extractor.name == "inception"
    # pytorch-fid: RGB in [0, 1], its own resize and normalisation.
    ref = extractor.net((x[:1].expand(-1, 3, -1, -1) + 1) / 2)[0].flatten(1)
    torch.testing.assert_close(ours[:1], ref, rtol=1e-4, atol=1e-5)
    # Stand-in statistics were calibrated: features differ between images, not ~constant.
    spread = ours.std(0).mean() / ours.abs().mean()
    assert spread > 0.05, spread


def fashion_folders(tiny_shards, root: Path) -> tuple[Path, Path]:
    """Two folders of 10 PNGs each: Fashion-MNIST test images, and the same images inverted."""
    from alae.data import eval_batches

    x, _ = next(eval_batches(tiny_shards, "test", 32, 10))
    a, b = root / "a", root / "b"
    a.mkdir()
    b.mkdir()
    for i, img in enumerate(x.add(1).mul(127.5).round().byte()[:, 0].numpy()):
        Image.fromarray(img).save(a / f"{i:02d}.png")
        Image.fromarray(255 - img).save(b / f"{i:02d}.png")
    return a, b


def fid_line(text: str) -> float:
    return float(re.search(r"FID:\s+(\S+)", text).group(1))


def parity(torch_home, tiny_shards, tmp_path, dims: int) -> None:
    """`alae fid A B` against `python -m pytorch_fid A B` on the same folders and weights."""
    a, b = fashion_folders(tiny_shards, tmp_path)
    env = {**os.environ, "TORCH_HOME": str(torch_home)}
    ref = subprocess.run([sys.executable, "-m", "pytorch_fid", str(a), str(b), "--device", "cpu",
                          "--batch-size", "4", "--num-workers", "0", "--dims", str(dims)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert ref.returncode == 0, ref.stderr
    theirs = fid_line(ref.stdout)
    opts = ["--features", "inception", "--device", "cpu", "--dims", str(dims)]
    runner = CliRunner()
    out = runner.invoke(cli, ["fid", str(a), str(b), "--batch-size", "3", *opts])
    assert out.exit_code == 0, out.output
    ours = fid_line(out.output)
    assert f"{'inception' if dims == 2048 else f'inception{dims}'} features" in out.output
    assert theirs > 1.0                       # the stand-in separates the two folders
    assert ours == pytest.approx(theirs, rel=1e-3)

    # --save-stats writes pytorch-fid's layout: the .npz stands in for its folder, both ways.
    stats = tmp_path / "a.npz"
    saved = runner.invoke(cli, ["fid", "--save-stats", str(a), str(stats), *opts])
    assert saved.exit_code == 0, saved.output
    again = runner.invoke(cli, ["fid", str(stats), str(b), *opts])
    assert fid_line(again.output) == pytest.approx(ours, rel=1e-6)
    refused = runner.invoke(cli, ["fid", str(stats), str(b), "--features", "classifier"])
    assert refused.exit_code == 1 and "space, not classifier" in refused.output


def test_parity_with_the_pytorch_fid_command(torch_home, tiny_shards, tmp_path):
    # pytorch-fid's first block (--dims 64): the same file lookup, image reading, resizing,
    # normalisation, pooling and Fréchet code as pool3. Pool3 itself is checked feature by
    # feature above: a pool3 FID needs more than 2048 images for a full-rank covariance (with
    # fewer, sqrtm fails in both tools) and each 2048x2048 sqrtm takes about a minute here.
    parity(torch_home, tiny_shards, tmp_path, 64)


def test_evaluate_in_inception_space(torch_home, tmp_path, fashion_mnist):
    shards = tmp_path / "shards"
    write_shards(DataConfig(path=str(fashion_mnist), limit=12, shard_size=12), shards)

    class Replay(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(()))
            self.latent, self.resolution, self.channels = 4, 32, 1

        def generate(self, z, noise=True):
            return torch.tanh(z.sum(1))[:, None, None, None].expand(-1, 1, 32, 32)

        def reconstruct(self, x, noise=True):
            return x

    # Block 64 keeps the test fast; the key names the space it was computed in.
    extractor = InceptionFeatures.load("cpu", dims=64)
    m = evaluate_model(Replay(), extractor, shards,
                       EvaluateConfig(num_images=6, batch_size=6, features="inception"),
                       ["fid", "rec_fid", "mse"])
    assert set(m) == {"fid_inception64", "rec_fid_inception64", "mse"}
    assert m["mse"] == 0.0 and m["fid_inception64"] > m["rec_fid_inception64"] >= 0
    # Clean resizing: its own keys, and other numbers from the same images.
    clean = evaluate_model(Replay(), InceptionFeatures.load("cpu", dims=64, resize="clean"),
                           shards, EvaluateConfig(num_images=6, batch_size=6,
                                                  features="inception", resize="clean"),
                           ["fid", "rec_fid"])
    assert set(clean) == {"fid_inception64_clean", "rec_fid_inception64_clean"}
    assert clean["fid_inception64_clean"] != pytest.approx(m["fid_inception64"], rel=1e-3)


# ---------------------------------------------------------------- evaluate.resize: clean

def test_clean_resize_equals_clean_fids_pixels(tiny_shards):
    # clean-fid's own resizer (the `clean` mode's) on the same 8-bit images, as it reads them:
    # HWC, RGB (grayscale repeated, as PIL's convert("RGB") does).
    from cleanfid.resize import make_resizer
    from alae.data import eval_batches

    theirs = make_resizer("PIL", False, "bicubic", (inc.SIZE, inc.SIZE))
    fashion, _ = next(eval_batches(tiny_shards, "test", 32, 6))           # real 32 px, 1 channel
    g = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (3, 3, 64, 64), generator=g).float() / 127.5 - 1
    for x in (fashion, rgb):
        ours = inc.clean_resize(x)
        assert ours.shape == (len(x), x.shape[1], 299, 299) and ours.dtype == torch.float32
        u8 = to_uint8(x).permute(0, 2, 3, 1).expand(-1, -1, -1, 3).numpy()
        for i in range(len(x)):
            ref = theirs(np.ascontiguousarray(u8[i]))                     # (299, 299, 3)
            for c in range(3):
                assert np.array_equal(ours[i, c % x.shape[1]].numpy(), ref[..., c])
    # ...and not pytorch-fid's bilinear interpolate (what `legacy` does), else this proves little.
    legacy = torch.nn.functional.interpolate(to_uint8(fashion).float(), size=(299, 299),
                                             mode="bilinear", align_corners=False)
    assert (legacy - inc.clean_resize(fashion)).abs().max() > 10


def test_clean_features_skip_pytorch_fids_resize(torch_home):
    # Block 64 keeps it fast: the resize and the scaling are before every block alike.
    clean = InceptionFeatures.load("cpu", dims=64, resize="clean")
    legacy = InceptionFeatures.load("cpu", dims=64)
    assert clean.name == "inception64_clean" and inc.space_name(2048, "clean") == "inception_clean"
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    pixels = (inc.clean_resize(x) / 255).expand(-1, 3, -1, -1)
    pooled = torch.nn.functional.adaptive_avg_pool2d(clean.net(pixels)[0], 1).flatten(1)
    torch.testing.assert_close(clean(x), pooled)
    assert not torch.allclose(clean(x), legacy(x), rtol=1e-3)
    with pytest.raises(ValueError, match="resize"):
        InceptionFeatures.load("cpu", resize="bicubic")
    with pytest.raises(ValueError, match="Inception features"):
        load_extractor("classifier", "unused.pt", resize="clean")


def test_alae_fid_with_clean_resizing(torch_home, tiny_shards, tmp_path):
    a, b = fashion_folders(tiny_shards, tmp_path)
    runner = CliRunner()
    opts = ["--features", "inception", "--device", "cpu", "--dims", "64"]
    legacy = runner.invoke(cli, ["fid", str(a), str(b), *opts])
    clean = runner.invoke(cli, ["fid", str(a), str(b), *opts, "--resize", "clean"])
    assert legacy.exit_code == clean.exit_code == 0, clean.output
    assert "inception64_clean features" in clean.output
    assert fid_line(clean.output) != pytest.approx(fid_line(legacy.output), rel=1e-3)
    # Statistics saved with one resize are refused for the other.
    stats = tmp_path / "a.npz"
    assert runner.invoke(cli, ["fid", "--save-stats", str(a), str(stats), *opts]).exit_code == 0
    refused = runner.invoke(cli, ["fid", str(stats), str(b), *opts, "--resize", "clean"])
    assert refused.exit_code == 1 and "space, not inception64_clean" in refused.output
    classifier = runner.invoke(cli, ["fid", str(a), str(b), "--resize", "clean"])
    assert classifier.exit_code == 1 and "--resize clean is for --features inception" in \
        classifier.output
