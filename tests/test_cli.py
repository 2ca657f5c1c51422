"""The `alae` command on one's own image files."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from alae.checkpoint import load_model, save_model
from alae.cli import main
from alae.config import parse_params
from alae.errors import CheckpointError, UserError
from alae.featurenet import Featurenet, save_featurenet
from alae.figures import LABEL_WIDTH, PAD
from alae.images import load_images, to_image
from alae.nn import build_model
import alae.sampling as sampling
from alae.sampling import parse_seeds

STYLE = {"model": {"kind": "style", "latent": 8, "mapping_layers": 2, "start_channels": 4,
                   "max_channels": 8}}


def alae(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alae.cli", *args], capture_output=True,
                          text=True, timeout=120)


def alae_here(*args: str, env: dict | None = None):
    """The same command in this process (no interpreter and torch start-up: ~50x faster)."""
    return CliRunner().invoke(main, list(args), env=env)


def one_line_error(result, *words: str) -> str:
    """Exit status 1 and a single `error:` line naming each of `words`: no traceback."""
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


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
    np.save(root / "codes.npy", np.zeros((2, 8), np.float32))
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


@pytest.mark.parametrize("name, message", [("junk.png", "unreadable image"),
                                           ("colour.png", "colour image, but the model")])
def test_bad_images_are_one_line_errors(files, tmp_path, name, message):
    out = alae("reconstruct", "--model", str(files / "alae.pt"), str(files / name), "--out",
               str(tmp_path / "rec"))
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and name in lines[0]
    assert not (tmp_path / "rec").exists()


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_device_auto_is_the_default_and_accepted(files, tmp_path):
    defaults = {name: next(p.default for p in main.commands[name].params if p.name == "device")
                for name in MODEL_COMMANDS}
    assert defaults == dict.fromkeys(MODEL_COMMANDS, "auto")
    out = alae_here(*model_command("encode", files, tmp_path, "--device", "auto"))
    assert out.exit_code == 0, out.output


MODEL_COMMANDS = ("generate", "encode", "decode", "reconstruct", "interpolate", "mix")


def model_command(name: str, files: Path, out: Path, *options: str, suffix: str = ".png"
                  ) -> list[str]:
    """`alae NAME` on the test model and images, writing into `out` (an image: out/NAME+suffix)."""
    a, b = str(files / "imgs/a.png"), str(files / "imgs/b.jpg")
    image = str(out / f"{name}{suffix}")
    args = {"generate": ["-n", "4", image], "encode": ["--out", str(out / "c.npy"), a],
            "reconstruct": ["--out", str(out / "rec"), a], "interpolate": [a, b, image],
            "mix": ["--styles", "coarse", a, b, image],
            "decode": [str(files / "codes.npy"), "--outdir", str(out / "dec")]}[name]
    return [name, "--model", str(files / "alae.pt"), *options, *args]


@pytest.mark.parametrize("name", MODEL_COMMANDS)
def test_a_missing_gpu_is_named_before_the_model_is_read(files, tmp_path, no_cuda, name):
    out = alae_here(*model_command(name, files, tmp_path, "--device", "cuda"))
    line = one_line_error(out, "--device: 'cuda' requested but CUDA is not available here")
    assert "model file" not in line and not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "meta"])
def test_a_device_that_is_no_device_is_one_line(files, tmp_path, name):
    out = alae_here(*model_command("generate", files, tmp_path, "--device", name))
    one_line_error(out, f"--device: {name!r} is not a device")


def test_the_loader_does_not_call_a_missing_gpu_a_bad_file(files, no_cuda):
    with pytest.raises(UserError, match="CUDA is not available") as e:
        load_model(files / "alae.pt", "cuda")
    assert not isinstance(e.value, CheckpointError)


def test_alae_debug_shows_why_a_model_file_did_not_load(files, tmp_path):
    quiet = alae_here("generate", "--model", str(files / "junk.png"), str(tmp_path / "g.png"))
    one_line_error(quiet, "junk.png: not a model file of this project")
    loud = alae_here("generate", "--model", str(files / "junk.png"), str(tmp_path / "g.png"),
                     env={"ALAE_DEBUG": "1"})
    cause, chained, _ = loud.stderr.partition("The above exception was the direct cause")
    assert chained and "UnpicklingError: " in cause  # torch's own error, not just its name


def same_names(files: Path, root: Path, *names: str) -> Path:
    """Copies of one test image under the given relative names."""
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.open(files / "imgs/a.png").save(root / name)
    return root


def test_reconstruct_keeps_the_paths_inside_a_folder(files, tmp_path):
    imgs = same_names(files, tmp_path / "in", "a/x.png", "b/x.png")
    out = alae_here("reconstruct", "--model", str(files / "alae.pt"), str(imgs), "--out",
                    str(tmp_path / "rec"))
    assert out.exit_code == 0 and "reconstructed 2 images" in out.output, out.output
    assert sorted(p.relative_to(tmp_path / "rec").as_posix()
                  for p in (tmp_path / "rec").rglob("*.png")) == ["a/x.png", "b/x.png"]


@pytest.mark.parametrize("names, args", [(["a/x.png", "b/x.png"], ["a/x.png", "b/x.png"]),
                                         (["x.png", "x.jpg"], ["."])])
def test_reconstruct_refuses_two_images_for_one_output(files, tmp_path, names, args):
    imgs = same_names(files, tmp_path / "in", *names)
    out = alae_here("reconstruct", "--model", str(files / "alae.pt"),
                    *(str(imgs / a) for a in args), "--out", str(tmp_path / "rec"))
    one_line_error(out, *(str(imgs / n) for n in names), "rec/x.png")
    assert not (tmp_path / "rec").exists()


MAGIC = {"JPEG": b"\xff\xd8\xff", "WEBP": b"RIFF", "BMP": b"BM", "TIFF": b"II*\x00"}


@pytest.mark.parametrize("name, suffix, fmt", [("generate", ".jpg", "JPEG"),
                                               ("interpolate", ".webp", "WEBP"),
                                               ("mix", ".jpeg", "JPEG"), ("mix", ".bmp", "BMP"),
                                               ("generate", ".TIF", "TIFF")])
def test_images_are_written_in_the_format_their_suffix_names(files, tmp_path, name, suffix, fmt):
    out = alae_here(*model_command(name, files, tmp_path, suffix=suffix))
    assert out.exit_code == 0, out.output
    path = tmp_path / f"{name}{suffix}"
    assert path.read_bytes().startswith(MAGIC[fmt])
    with Image.open(path) as image:
        assert image.format == fmt


@pytest.mark.parametrize("name", ["generate", "interpolate", "mix"])
@pytest.mark.parametrize("suffix", [".xyz", ""])
def test_an_unknown_image_suffix_is_refused_before_any_work(files, tmp_path, name, suffix):
    # the last --model wins: a missing model file shows that nothing was read before the check
    args = model_command(name, files, tmp_path, "--model", str(tmp_path / "missing.pt"),
                         suffix=suffix)
    one_line_error(alae_here(*args), f"{name}{suffix}: not an image file name")
    assert not any(tmp_path.iterdir())


def test_mix_offers_the_fine_styles_of_a_32px_model_and_names_their_slots(files, tmp_path):
    assert "fine 64 px and up; a 32x32 model's are 4-8 / 16 / 32 px" in " ".join(
        alae_here("mix", "--help").output.split())
    out = alae_here("mix", "--model", str(files / "alae.pt"), str(files / "imgs/a.png"),
                    str(files / "imgs/b.jpg"), "--styles", "fine", str(tmp_path / "m.png"))
    assert out.exit_code == 0 and "fine styles" in out.output, out.output
    assert "(32 px: style slots 6-7)" in out.output


def test_mix_refuses_a_block_the_model_has_not(files, tmp_path):
    params = parse_params(STYLE)
    save_model(tmp_path / "8px.pt", build_model(params.model, channels=1, resolution=8), params,
               meta={})
    out = alae_here("mix", "--model", str(tmp_path / "8px.pt"), str(files / "imgs/b.jpg"),
                    str(files / "imgs/b.jpg"), "--styles", "middle", str(tmp_path / "m.png"))
    one_line_error(out, "--styles middle: a 8x8 model has only coarse, fine styles")
    assert not (tmp_path / "m.png").exists()


# --- alae generate by seed (stylegan2-ada's generate.py) ---------------------------------------
@pytest.fixture(scope="module")
def noisy(files):
    """The test model with G's per-pixel noise switched on (it starts at weight 0)."""
    model, params, _ = load_model(files / "alae.pt")
    for name, p in model.named_parameters():
        if name.endswith(("noise1.weight", "noise2.weight")):
            p.data.fill_(1.0)
    save_model(files / "noisy.pt", model, params, meta={})
    return files / "noisy.pt"


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image, dtype=np.int16)


def generated(model: Path, out: Path, *options: str) -> dict[str, np.ndarray]:
    result = alae_here("generate", "--model", str(model), "--device", "cpu", "--outdir", str(out),
                       *options)
    assert result.exit_code == 0, result.output
    return {p.name: pixels(p) for p in sorted(out.iterdir())}


def test_parse_seeds(monkeypatch):
    assert parse_seeds("0-3,10,20-22") == [0, 1, 2, 3, 10, 20, 21, 22]
    assert parse_seeds("5, 2-3, 5") == [5, 2, 3]
    monkeypatch.setattr(sampling, "MAX_COUNT", 10)
    assert len(parse_seeds("0,1-9")) == 10
    for bad in ("3-1", "a", "1,,2", "-1", "0,1-10", f"0-{2 ** 32}"):
        with pytest.raises(UserError, match=f"--seeds '{bad}'"):
            parse_seeds(bad)


@pytest.mark.parametrize("noise", ["random", "const"])
def test_a_seed_gives_the_same_image_whatever_else_is_asked(noisy, tmp_path, noise):
    all_ = generated(noisy, tmp_path / "all", "--seeds", "0-5", "--batch-size", "4",
                     "--noise", noise)
    some = generated(noisy, tmp_path / "some", "--seeds", "5,2", "--batch-size", "1",
                     "--noise", noise)
    assert sorted(all_) == [f"seed000{i}.png" for i in range(6)]
    assert sorted(some) == ["seed0002.png", "seed0005.png"]
    for name, image in some.items():
        assert image.shape == (32, 32) and np.abs(image - all_[name]).max() <= 1, name
    assert np.abs(all_["seed0000.png"] - all_["seed0001.png"]).max() > 8


def test_noise_const_is_g_without_noise_and_random_is_seeded(noisy, tmp_path):
    const = generated(noisy, tmp_path / "c", "--seeds", "3", "--noise", "const")["seed0003.png"]
    random = generated(noisy, tmp_path / "r", "--seeds", "3", "--noise", "random")["seed0003.png"]
    model, _, _ = load_model(noisy)
    z = torch.randn(1, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = to_image(model.generate(z, noise=False)[0])
    assert np.abs(const - np.asarray(expected, dtype=np.int16)).max() <= 1
    assert np.abs(const - random).max() > 8
    from alae.nn.layers import ImageNoise
    from alae.sampling import noise_seed
    with torch.no_grad():  # random: seed 3's noise is its own stream, not its z's numbers again
        own = to_image(model.generate(z, noise=ImageNoise([noise_seed(3)]))[0])
        reused = to_image(model.generate(z, noise=ImageNoise([3]))[0])
    assert np.abs(random - np.asarray(own, dtype=np.int16)).max() <= 1
    assert np.abs(random - np.asarray(reused, dtype=np.int16)).max() > 8


def test_generated_folder_feeds_alae_fid(files, tmp_path):
    generated(files / "alae.pt", tmp_path / "s", "--seeds", "0-11", "--trunc", "0.7")
    featurenet = Featurenet(channels=1, resolution=32, num_classes=2)
    save_featurenet(featurenet.eval(), tmp_path / "fn.pt")
    out = alae_here("fid", str(tmp_path / "s"), str(tmp_path / "s.npz"), "--save-stats",
                    "--featurenet", str(tmp_path / "fn.pt"), "--device", "cpu")
    assert out.exit_code == 0 and "saved statistics of 12 images" in out.output, out.output
    out = alae_here("fid", str(tmp_path / "s"), str(tmp_path / "s.npz"), "--features",
                    "classifier", "--featurenet", str(tmp_path / "fn.pt"), "--device", "cpu")
    assert out.exit_code == 0 and abs(float(out.stdout.split()[1])) < 1e-3, out.output


def test_generate_grid_and_the_old_form(files, tmp_path):
    new = alae_here("generate", "--model", str(files / "alae.pt"), "--seeds", "0-3",
                    "--grid", str(tmp_path / "new.png"), "--columns", "2")
    old = alae_here("generate", "--model", str(files / "alae.pt"), "-n", "4",
                    str(tmp_path / "old.png"), "--columns", "2")
    assert new.exit_code == 0 and old.exit_code == 0, new.output + old.output
    assert "wrote 4 samples" in new.output and not (tmp_path / "seed0000.png").exists()
    assert (pixels(tmp_path / "new.png") == pixels(tmp_path / "old.png")).all()


@pytest.mark.parametrize("args, words", [
    (["--seeds", "9-2", "--outdir", "o"], ["--seeds '9-2'"]),
    (["--seeds", "0-3"], ["nothing to write", "--outdir"]),
    (["--seeds", "0", "-n", "4", "--outdir", "o"], ["--seeds 0", "-n"]),
    (["--seeds", "0", "--grid", "g.txt"], ["g.txt: not an image file name"])])
def test_generate_refuses_bad_options_before_any_work(files, tmp_path, args, words):
    (tmp_path / "model.pt").write_bytes(b"")  # a missing model would be a different error
    args = [a if a not in ("o", "g.txt") else str(tmp_path / a) for a in args]
    one_line_error(alae_here("generate", "--model", str(tmp_path / "model.pt"), *args), *words)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


# --- alae decode: the way back from alae encode --------------------------------------------------
def test_decode_writes_one_image_per_code_named_after_its_source(files, tmp_path):
    alae_here(*model_command("encode", files, tmp_path))  # c.npy, c.npy.txt: imgs/a.png
    out = alae_here("decode", "--model", str(files / "alae.pt"), str(tmp_path / "c.npy"),
                    "--outdir", str(tmp_path / "dec"), "--noise", "const")
    assert out.exit_code == 0 and "decoded 1 codes" in out.output, out.output
    model, _, _ = load_model(files / "alae.pt")
    with torch.no_grad():
        expected = model.decode(torch.from_numpy(np.load(tmp_path / "c.npy")), noise=False)[0]
    assert np.abs(pixels(tmp_path / "dec/a.png") - np.asarray(to_image(expected))).max() <= 1
    (tmp_path / "c.npy.txt").unlink()
    np.save(tmp_path / "c.npy", np.zeros((2, 8), np.float32))
    assert alae_here("decode", "--model", str(files / "alae.pt"), str(tmp_path / "c.npy"),
                     "--outdir", str(tmp_path / "plain")).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["code0000.png",
                                                                      "code0001.png"]


def test_decode_refuses_codes_of_another_width(files, tmp_path):
    np.save(tmp_path / "c.npy", np.zeros((3, 5), np.float32))
    out = alae_here("decode", "--model", str(files / "alae.pt"), str(tmp_path / "c.npy"),
                    "--outdir", str(tmp_path / "dec"))
    one_line_error(out, "c.npy: codes are 5-d", "alae.pt's W is 8-d")
    (tmp_path / "c.npy.txt").write_text("a.png\n")
    out = alae_here("decode", "--model", str(files / "alae.pt"), str(tmp_path / "c.npy"),
                    "--outdir", str(tmp_path / "dec"))
    one_line_error(out, "c.npy.txt: names 1 images", "holds 3 codes")
    assert not (tmp_path / "dec").exists()


# --- --compare and --scale for reconstruct, interpolate, mix ------------------------------------
@pytest.mark.parametrize("name, written", [("reconstruct", "rec/a.png"), ("mix", "mix.png")])
def test_scale_enlarges_every_written_image_by_nearest_neighbour(files, tmp_path, name, written):
    # sheets (interpolate's OUT, --compare) are checked with --scale in the next test
    one = alae_here(*model_command(name, files, tmp_path / "x1"))
    three = alae_here(*model_command(name, files, tmp_path / "x3", "--scale", "3"))
    assert one.exit_code == 0 and three.exit_code == 0, one.output + three.output
    small, big = pixels(tmp_path / "x1" / written), pixels(tmp_path / "x3" / written)
    assert big.shape[:2] == (96, 96)
    assert (big == small.repeat(3, axis=0).repeat(3, axis=1)).all()


@pytest.mark.parametrize("name, inputs, outputs", [("mix", 2, 1), ("interpolate", 2, 8)])
def test_compare_writes_inputs_above_outputs(files, tmp_path, name, inputs, outputs):
    out = alae_here(*model_command(name, files, tmp_path, "--compare", str(tmp_path / "c.png"),
                                   "--scale", "2"))
    assert out.exit_code == 0 and "side by side in" in out.output, out.output
    sheet = pixels(tmp_path / "c.png")
    tile = 32 * 2  # the grid's own 2x; then all of it --scale 2
    assert sheet.shape[0] == 2 * (2 * (tile + PAD) + PAD)  # two rows: inputs, outputs
    assert sheet.shape[1] == 2 * (LABEL_WIDTH + max(inputs, outputs) * (tile + PAD) + PAD)
    if name == "interpolate":  # its own sheet, one row, enlarged as well
        assert pixels(tmp_path / "interpolate.png").shape[0] == 2 * (tile + 2 * PAD)


@pytest.mark.parametrize("name", ["reconstruct", "interpolate", "mix"])
def test_compare_with_an_unknown_suffix_is_refused_before_any_work(files, tmp_path, name):
    out = alae_here(*model_command(name, files, tmp_path, "--compare", str(tmp_path / "c.xyz")))
    one_line_error(out, "c.xyz: not an image file name")
    assert not any(tmp_path.iterdir())


def test_compare_sheet_holds_the_input_above_its_reconstruction(files, tmp_path):
    out = alae_here(*model_command("reconstruct", files, tmp_path, "--compare",
                                   str(tmp_path / "c.png")))
    assert out.exit_code == 0, out.output
    sheet = pixels(tmp_path / "c.png")[..., 0]  # grayscale tiles on an RGB sheet
    x = np.asarray(to_image(load_images([files / "imgs/a.png"], 32, 1)[0]), dtype=np.int16)
    left, top = LABEL_WIDTH + PAD, PAD
    assert (sheet[top:top + 64, left:left + 64] == x.repeat(2, 0).repeat(2, 1)).all()
    rec = pixels(tmp_path / "rec/a.png")
    top += 64 + PAD
    assert (sheet[top:top + 64, left:left + 64] == rec.repeat(2, 0).repeat(2, 1)).all()


# --- --convert gray|rgb, and a folder's refused images passed over -----------------------------
@pytest.fixture
def mixed_folder(files, tmp_path):
    """Two grayscale images, a colour one and a broken one, in one folder."""
    folder = tmp_path / "mixed"
    shutil.copytree(files / "imgs", folder)
    shutil.copy(files / "colour.png", folder / "c.png")
    shutil.copy(files / "junk.png", folder / "junk.png")
    return folder


def test_a_folder_passes_over_refused_images_and_names_them(files, tmp_path, mixed_folder):
    out = alae_here("encode", "--model", str(files / "alae.pt"), str(mixed_folder), "--out",
                    str(tmp_path / "c.npy"))
    assert out.exit_code == 0 and "(2 refused images skipped)" in out.output, out.output
    lines = out.stderr.strip().splitlines()
    skipped = [line for line in lines if line.startswith("skipped: ")]
    assert len(skipped) == 2 and "c.png: colour image" in skipped[0], skipped
    assert [line for line in lines if line not in skipped] == [  # a.png is 50x40
        f"warning: {mixed_folder / 'a.png'}: 50x40, not square: its centre 40x40 is used"]
    assert "junk.png: unreadable image" in skipped[1]
    assert np.load(tmp_path / "c.npy").shape == (2, 8)
    assert [Path(n).name for n in (tmp_path / "c.npy.txt").read_text().split()] == ["a.png",
                                                                                    "b.jpg"]
    rec = alae_here("reconstruct", "--model", str(files / "alae.pt"), str(mixed_folder), "--out",
                    str(tmp_path / "rec"))
    assert rec.exit_code == 0 and "reconstructed 2 images" in rec.output, rec.output
    assert sorted(p.name for p in (tmp_path / "rec").iterdir()) == ["a.png", "b.png"]


def test_a_folder_with_no_usable_image_is_one_line(files, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    shutil.copy(files / "colour.png", folder / "c.png")
    shutil.copy(files / "junk.png", folder / "junk.png")
    out = alae_here("reconstruct", "--model", str(files / "alae.pt"), str(folder), "--out",
                    str(tmp_path / "rec"))
    one_line_error(out, "no usable image among 2", "c.png: colour image", "(and 1 more)")
    assert not (tmp_path / "rec").exists()


@pytest.mark.parametrize("name", ["encode", "reconstruct", "interpolate", "mix"])
def test_convert_gray_takes_a_colour_image_and_says_so(files, tmp_path, name):
    args = model_command(name, files, tmp_path, "--convert", "gray")
    args = [str(files / "colour.png") if a.endswith("imgs/a.png") else a for a in args]
    out = alae_here(*args)
    assert out.exit_code == 0 and "(--convert gray: 1 converted)" in out.output, out.output
    refused = alae_here(*(a for a in args if a not in ("--convert", "gray")))
    one_line_error(refused, "colour.png: colour image", "--convert gray")


def test_convert_gray_is_pil_grayscale(files, tmp_path):
    alae_here("encode", "--model", str(files / "alae.pt"), "--convert", "gray", "--out",
              str(tmp_path / "c.npy"), str(files / "colour.png"))
    Image.open(files / "colour.png").convert("L").save(tmp_path / "gray.png")
    model, _, _ = load_model(files / "alae.pt")
    with torch.no_grad():
        w = model.encode(load_images([tmp_path / "gray.png"], 32, 1))
    assert np.allclose(np.load(tmp_path / "c.npy"), w.numpy(), atol=1e-5)


def test_convert_to_what_the_model_does_not_take_is_one_line(files, tmp_path):
    out = alae_here(*model_command("encode", files, tmp_path, "--convert", "rgb"))
    one_line_error(out, "--convert rgb: the model takes 1-channel images")
    params = parse_params(STYLE)
    save_model(tmp_path / "rgb.pt", build_model(params.model, channels=3, resolution=8), params,
               meta={})
    out = alae_here("encode", "--model", str(tmp_path / "rgb.pt"), "--convert", "rgb", "--out",
                    str(tmp_path / "c.npy"), str(files / "imgs"))
    assert out.exit_code == 0 and "(--convert rgb: 2 converted)" in out.output, out.output


def test_images_far_from_the_models_square_resolution_are_named_with_what_happens(files, tmp_path):
    rng = np.random.default_rng(1)
    imgs = tmp_path / "in"
    imgs.mkdir()
    for name, shape in (("wide.png", (32, 64)), ("tiny.png", (8, 8)), ("fine.png", (30, 32))):
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(imgs / name)
    out = alae_here("reconstruct", "--model", str(files / "alae.pt"), str(imgs), "--out",
                    str(tmp_path / "rec"))
    assert out.exit_code == 0, out.output
    warnings = sorted(line for line in out.stderr.splitlines() if line.startswith("warning: "))
    assert len(warnings) == 2, out.stderr
    assert "tiny.png: 8x8, upscaled 4.0x to 32x32" in warnings[0]
    assert "wide.png: 64x32, not square: its centre 32x32 is used" in warnings[1]
    assert "FFHQ" not in out.stderr  # said for large models only


def test_figures_of_any_model_file_from_ones_own_images(files, tmp_path):
    out = tmp_path / "figs"
    result = alae_here("figures", "--model", str(files / "alae.pt"), str(files / "imgs"),
                       "--out", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "interpolation.png", "reconstructions.png", "samples.png", "samples_untruncated.png",
        "style_mixing.png"]
    # No per-level samples in a file the train stage did not write: said, not silently left out.
    assert "not written: progress.png" in result.stderr
    assert "wrote" in result.stdout and "(2 real images)" in result.stdout
    # The real images are the user's: the reconstruction figure's first cell is a.png.
    rec = np.asarray(Image.open(out / "reconstructions.png").convert("L"))
    x = load_images([files / "imgs/a.png"], 32, 1)[0]
    cell = np.asarray(to_image(x).convert("L").resize((64, 64), Image.NEAREST))
    top = rec.shape[0] - (2 * (64 + PAD) + PAD) + PAD  # under the title band: row 1, column 1
    assert np.array_equal(rec[top:top + 64, LABEL_WIDTH + PAD:LABEL_WIDTH + PAD + 64], cell)


@pytest.mark.parametrize("args", [(), ("--shards", "."), ])
def test_figures_wants_images_or_shards_not_both(files, tmp_path, args):
    extra = [str(files / "imgs")] if args else []
    result = alae_here("figures", "--model", str(files / "alae.pt"), "--out",
                       str(tmp_path / "f"), *args, *extra)
    one_line_error(result, "IMAGES", "--shards")
    assert not (tmp_path / "f").exists()
