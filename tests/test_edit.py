"""`alae directions`, `alae edit` and `alae project` on real Fashion-MNIST images and real (tiny,
untrained) models: an untrained E's codes are random features of the image, which already carry
the class, so the label directions must separate it; the other checks hold for any model."""
import dataclasses
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
from alae.data import eval_batches
from alae.edit.directions import fit_direction, from_labels, load_directions, quiet_note
from alae.edit.labelled import Labelled, labelled_codes
from alae.edit.strips import edit_images, edit_slots
from alae.featurenet import Featurenet, save_featurenet
from alae.figures import LABEL_WIDTH, PAD, TITLE_LINE
from alae.images import save_image, to_image
from alae.nn import build_model
from alae.nn.layers import NoiseInjection
from alae.pixels import to_uint8

ROOT = Path(__file__).resolve().parents[1]
from alae.sampling import with_noise
from test_cli import one_line_error   # exit status 1 and a single `error:` line

STYLE = {"kind": "style", "latent": 16, "mapping_layers": 2, "start_channels": 4,
         "max_channels": 8}
MLP = {"kind": "mlp", "latent": 8, "mapping_layers": 2, "hidden": 32}
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]


def alae(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_shards):
    """Model files (StyleALAE and MLP, 32x32), a featurenet, and test images as PNGs."""
    root = tmp_path_factory.mktemp("edit")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for name, kind in (("style", STYLE), ("mlp", MLP)):
            params = parse_params({"model": kind})
            model = build_model(params.model, channels=1, resolution=32)
            if name == "style":
                louder(model)
            save_model(root / f"{name}.pt", model, params, meta={})
        save_featurenet(Featurenet(1, 32, 10, features=16), root / "featurenet.pt")
    x, y = next(eval_batches(tiny_shards, "test", 32, 8, 8))
    for i, (xi, yi) in enumerate(zip(x, y)):
        save_image(to_image(xi), root / f"test{i}_{int(yi)}.png")
    Image.fromarray(np.full((32, 32, 3), [200, 0, 0], np.uint8), "RGB").save(root / "red.png")
    (root / "junk.png").write_bytes(b"not an image")
    return root


@torch.no_grad()
def louder(model) -> None:
    """G's output layer starts nearly silent (gain 0.03) and its noise switched off (weights 0):
    made audible, as in a trained G, so that codes and noise visibly change the image."""
    for rgb in model.synthesis.to_rgb:
        rgb.weight.mul_(30)
    for m in model.synthesis.modules():
        if isinstance(m, NoiseInjection):
            m.weight.fill_(0.3)


def images(files, n: int = 3) -> list[Path]:
    return sorted(files.glob("test*.png"))[:n]


@pytest.fixture(scope="module")
def label_directions(files, tiny_shards):
    out = files / "classes.npz"
    ok(alae("directions", "--model", files / "style.pt", "--data", tiny_shards, "--out", out,
            "--method", "svm", "--device", "cpu"))
    return out


# --- directions from labels --------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["style", "mlp"])
def test_label_directions_are_unit_and_separate_the_classes(files, tiny_shards, kind,
                                                            label_directions):
    out = label_directions if kind == "style" else files / "mlp.npz"
    if kind == "mlp":
        ok(alae("directions", "--model", files / "mlp.pt", "--data", tiny_shards, "--out", out,
                "--method", "svm"))
    d = load_directions(out)
    model, _, _ = load_model(files / f"{kind}.pt")
    assert d.names == CLASSES and d.method == "svm"
    assert np.allclose(np.linalg.norm(d.vectors, axis=1), 1, atol=1e-6)
    # held-out: one-vs-rest, so plain accuracy has a 0.9 baseline; balanced has 0.5
    assert d.balanced.mean() > 0.75 and d.balanced.min() > 0.6, d.balanced
    # each direction points towards its class, on held-out codes the file never saw
    test, _ = labelled_codes(model, tiny_shards, None, "test")
    for k in range(len(d.names)):
        proj = test.codes @ d.vectors[k]
        assert proj[test.labels[:, k]].mean() > proj[~test.labels[:, k]].mean(), d.names[k]
    # the strength unit: the train codes' spread along each direction
    train, _ = labelled_codes(model, tiny_shards, None, "train")
    assert np.allclose(d.std, (train.codes @ d.vectors.T).std(0, ddof=1), rtol=1e-4)


@pytest.fixture(scope="module")
def style_codes(files, tiny_shards):
    """(train, test) E(x) and labels of the tiny shards, through the StyleALAE."""
    model, _, _ = load_model(files / "style.pt")
    return tuple(labelled_codes(model, tiny_shards, None, split)[0] for split in ("train", "test"))


def test_shuffled_labels_score_near_chance(style_codes):
    train, test = style_codes
    rng = np.random.default_rng(0)
    shuffled = Labelled(train.codes, train.labels[rng.permutation(len(train.labels))],
                        train.names)
    d = from_labels(shuffled, test, "sha", "codes")
    assert 0.4 < d.balanced.mean() < 0.6, d.balanced


def test_mean_directions_run_between_the_class_means(style_codes):
    train, test = style_codes
    d = from_labels(train, test, "sha", "codes", method="mean")
    assert d.method == "mean" and d.balanced.mean() > 0.7, d.balanced
    for k in (0, 7):
        inside = train.labels[:, k]
        by_hand = train.codes[inside].mean(0) - train.codes[~inside].mean(0)
        assert np.allclose(d.vectors[k], by_hand / np.linalg.norm(by_hand))
    shuffled = Labelled(train.codes, train.labels[::-1], train.names)
    assert 0.35 < from_labels(shuffled, test, "sha", "codes", method="mean").balanced.mean() < 0.65


def test_the_direction_is_the_boundarys_normal_in_ws_own_coordinates():
    """Codes on very different scales (the SVM sees them standardised): the classifier's score
    still changes exactly along the direction, so moving a code perpendicular to it in W
    leaves the score alone."""
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(400, 5)) * [100, 1, 0.01, 3, 1]
    positive = codes[:, 0] / 100 + codes[:, 1] + codes[:, 2] / 0.01 > 0
    v, classifier = fit_direction(codes, positive)
    assert np.isclose(np.linalg.norm(v), 1)
    step = rng.normal(size=(50, 5))
    step -= np.outer(step @ v, v)                   # perpendicular to v in W
    base = codes[:50]
    assert np.allclose(classifier.decision_function(base + step),
                       classifier.decision_function(base), atol=1e-9)
    along = classifier.decision_function(base + v) - classifier.decision_function(base)
    assert np.all(along > 0) and np.allclose(along, along[0])


def test_directions_the_codes_hardly_vary_along_are_named(label_directions):
    d = load_directions(label_directions)
    spread = np.diag([100.0] * 3 + [0.01] * 13)    # codes that vary in three directions only
    quiet = dataclasses.replace(d, code_cov=spread, vectors=np.eye(16)[3:13])
    loud = dataclasses.replace(d, code_cov=spread, vectors=np.eye(16)[[0, 1, 2] * 3 + [3]])
    assert "G may barely respond" in quiet_note(quiet) and quiet_note(loud) is None
    assert quiet_note(dataclasses.replace(quiet, method="mean")) is None


def test_a_difference_direction_is_resolved_by_name(label_directions):
    d = load_directions(label_directions)
    name, v, std = d.resolve("sneaker -> ankle BOOT")
    expected = d.vectors[9] - d.vectors[7]
    assert name == "Sneaker->Ankle boot"
    assert np.allclose(v, expected / np.linalg.norm(expected))
    assert np.isclose(std, np.sqrt(v @ d.code_cov @ v))
    assert d.resolve("Sneaker→Ankle boot")[0] == name


def test_directions_from_a_folder_and_from_a_csv(files, tiny_shards, tmp_path):
    """Trousers against bags, as class sub-folders and as a CSV attribute."""
    folder = tmp_path / "classes"
    rows = ["file,trouser"]
    count = {1: 0, 8: 0}
    for x, y in eval_batches(tiny_shards, "train", 32, 200):
        for xi, yi in zip(x, y.tolist()):
            if yi in count and count[yi] < 60:
                path = folder / ("trouser" if yi == 1 else "bag") / f"{count[yi]}.png"
                save_image(to_image(xi), path)
                rows.append(f"{path.relative_to(folder)},{1 if yi == 1 else 0}")
                count[yi] += 1
    ok(alae("directions", "--model", files / "style.pt", "--data", folder, "--out",
            tmp_path / "folder.npz"))
    d = load_directions(tmp_path / "folder.npz")
    assert d.names == ["bag", "trouser"] and d.balanced.min() > 0.8
    (tmp_path / "attrs.csv").write_text("\n".join(rows) + "\n")
    ok(alae("directions", "--model", files / "style.pt", "--labels", tmp_path / "attrs.csv",
            "--data", folder, "--out", tmp_path / "csv.npz"))
    c = load_directions(tmp_path / "csv.npz")
    assert c.names == ["trouser"] and c.balanced[0] > 0.8
    assert c.vectors[0] @ d.vectors[1] > 0.99   # the same images, the same boundary
    (tmp_path / "bad.csv").write_text("file,trouser\nbag/0.png,maybe\n")
    one_line_error(alae("directions", "--model", files / "style.pt", "--labels",
                        tmp_path / "bad.csv", "--out", tmp_path / "x.npz"),
                   "bad.csv:2", "'maybe' is not a yes/no value")


# --- SeFa and the authors' files ---------------------------------------------------------------
def test_sefa_is_the_eigendecomposition_of_the_style_weights(files, tmp_path):
    out = tmp_path / "sefa.npz"
    ok(alae("directions", "--model", files / "style.pt", "--method", "sefa", "--top", "4",
            "--layers", "coarse", "--limit", "200", "--out", out))
    d = load_directions(out)
    model, _, _ = load_model(files / "style.pt")
    # by hand: AdaIN affine weights of slots 0-3 (blocks 0 and 1), rows to unit length
    a = np.concatenate([(s.style.weight * s.style.scale).double().numpy()
                        for b in model.synthesis.blocks[:2] for s in (b.style1, b.style2)])
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    values, vectors = np.linalg.eigh(a.T @ a)
    assert np.allclose(d.eigenvalues, values[::-1][:4])
    assert np.all(np.diff(d.eigenvalues) <= 0)
    assert np.allclose(d.vectors @ d.vectors.T, np.eye(4), atol=1e-6)     # orthonormal
    assert np.allclose(np.abs(np.sum(d.vectors * vectors[:, ::-1][:, :4].T, axis=1)), 1,
                       atol=1e-6)                                         # up to sign
    assert d.layers == "coarse" and d.names == ["sefa0", "sefa1", "sefa2", "sefa3"]
    one_line_error(alae("directions", "--model", files / "mlp.pt", "--method", "sefa", "--out",
                        tmp_path / "x.npz"), "StyleALAE only")


def test_the_authors_direction_files_load_as_unit_directions(files, tmp_path):
    folder = tmp_path / "principal_directions"
    folder.mkdir()
    rng = np.random.default_rng(0)
    smile, other = rng.normal(size=16) * 7, rng.normal(size=(1, 16))   # as theirs: raw weights
    np.save(folder / "direction_1.npy", smile)
    np.save(folder / "direction_42.npy", other)
    ok(alae("directions", "--model", files / "style.pt", "--method", "official", "--official",
            folder, "--limit", "300", "--out", tmp_path / "official.npz"))
    d = load_directions(tmp_path / "official.npz")
    assert d.names == ["smile", "direction_42"]
    assert np.allclose(d.vectors[0], smile / np.linalg.norm(smile))
    assert np.allclose(d.vectors[1], other[0] / np.linalg.norm(other))
    assert d.codes_from == "F(z) of 300 draws (seed 0)" and np.all(d.std > 0)
    np.save(folder / "direction_3.npy", np.ones(512))
    one_line_error(alae("directions", "--model", files / "style.pt", "--method", "official",
                        "--official", folder, "--out", tmp_path / "x.npz"),
                   "direction_3.npy", "512 numbers", "16-d")


# --- edit --------------------------------------------------------------------------------------
def test_strength_zero_is_the_reconstruction_and_only_the_chosen_slots_move(files):
    model, _, _ = load_model(files / "style.pt")
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(p), np.float32) / 127.5 - 1)[None]
                     for p in images(files)])
    v = np.eye(16)[0]
    out = edit_images(model, x, v, 0.5, np.array([0.0, 2.0]), edit_slots(model, "coarse"),
                      noise="const")
    assert torch.allclose(out[:, 0], model.reconstruct(x, noise=False), atol=1e-6)
    moved = model.encode(x)[:, None].repeat(1, model.num_styles, 1)
    moved[:, :4, 0] += 1.0   # 2 std of 0.5 along axis 0, on the coarse slots 0-3 only
    assert torch.allclose(out[:, 1], model.decode(moved, noise=False), atol=1e-6)
    assert not torch.allclose(out[:, 1], out[:, 0], atol=1e-3)


def test_edit_writes_one_titled_strip_per_image(files, label_directions, tmp_path):
    out = tmp_path / "strip.png"
    paths = images(files)
    result = ok(alae("edit", "--model", files / "style.pt", *paths, "--directions",
                     label_directions, "--direction", "Sneaker->Ankle boot", "--strength", "-1.5",
                     "--steps", "4", "--noise", "const", "--scale", "1", "--out", out))
    assert "wrote 3 strips along Sneaker->Ankle boot" in result.output
    strip = np.asarray(Image.open(out).convert("L"))
    band = 2 * TITLE_LINE + PAD
    assert strip.shape[0] == band + 3 * (32 + PAD) + PAD
    model, _, _ = load_model(files / "style.pt")
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(p), np.float32) / 127.5 - 1)[None]
                     for p in paths])
    rec = to_uint8(model.reconstruct(x, noise=False))[:, 0].numpy()
    for i in range(3):    # column 0: the input, column 1: strength 0, the reconstruction
        top, left = band + PAD + i * (32 + PAD), LABEL_WIDTH + PAD
        assert np.array_equal(strip[top:top + 32, left:left + 32],
                              np.asarray(Image.open(paths[i])))
        left += 32 + PAD
        assert np.abs(strip[top:top + 32, left:left + 32].astype(int) - rec[i]).max() <= 1


def test_edit_on_an_mlp_moves_its_one_code(files, tmp_path):
    out = tmp_path / "mlp.npz"
    ok(alae("directions", "--model", files / "mlp.pt", "--method", "official", "--official",
            _official(tmp_path, 8), "--limit", "100", "--out", out))
    ok(alae("edit", "--model", files / "mlp.pt", *images(files, 1), "--directions", out,
            "--direction", "smile", "--out", tmp_path / "strip.png"))
    one_line_error(alae("edit", "--model", files / "mlp.pt", *images(files, 1), "--directions",
                        out, "--direction", "smile", "--layers", "coarse", "--out",
                        tmp_path / "strip.png"), "StyleALAE only")


def _official(tmp_path: Path, latent: int) -> Path:
    path = tmp_path / "direction_1.npy"
    np.save(path, np.arange(1, latent + 1, dtype=np.float32))
    return path


@pytest.mark.parametrize("args, words", [
    (["--direction", "boot"], ["'boot': not among the directions", "Sneaker, Bag, Ankle boot",
                               "A->B"]),
    (["--direction", "Bag->bag"], ["Bag and Bag are the same direction"]),
    (["--direction", "Bag", "--strength", "3.5"], ["--strength 3.5: out of range -3..3"]),
    (["--direction", "Bag", "--out", "strip.txt"], ["strip.txt: not an image file name"]),
])
def test_edit_refuses_bad_options_in_one_line(files, label_directions, tmp_path, args, words):
    out = ["--out", tmp_path / "strip.png"] if "--out" not in args else []
    one_line_error(alae("edit", "--model", files / "style.pt", *images(files, 1), "--directions",
                        label_directions, *args, *out), *words)


@pytest.mark.parametrize("image, words", [("junk.png", ["junk.png: unreadable image"]),
                                          ("red.png", ["red.png: colour image", "--convert gray"])])
def test_edit_refuses_an_image_the_model_cannot_take(files, label_directions, tmp_path, image,
                                                     words):
    one_line_error(alae("edit", "--model", files / "style.pt", files / image, "--directions",
                        label_directions, "--direction", "Bag", "--out", tmp_path / "s.png"),
                   *words)


def test_directions_of_another_latent_size_or_no_directions_file(files, label_directions,
                                                                 tmp_path):
    one_line_error(alae("edit", "--model", files / "mlp.pt", *images(files, 1), "--directions",
                        label_directions, "--direction", "Bag", "--out", tmp_path / "s.png"),
                   "16-d W", "8-d")
    one_line_error(alae("edit", "--model", files / "style.pt", *images(files, 1), "--directions",
                        files / "junk.png", "--direction", "Bag", "--out", tmp_path / "s.png"),
                   "not a directions file")


# --- project -----------------------------------------------------------------------------------
def test_projection_lowers_the_distance_and_writes_everything(files, tmp_path):
    import json

    out = tmp_path / "proj"
    paths = images(files, 4)
    ok(alae("project", "--model", files / "style.pt", *paths, "--featurenet",
            files / "featurenet.pt", "--steps", "25", "--lr", "0.05", "--batch-size", "3",
            "--out", out))
    report = json.loads((out / "distances.json").read_text())
    before, after = report["mean"]["before"], report["mean"]["after"]
    assert after["distance"] < 0.9 * before["distance"], report["mean"]
    for name in report["images"]:
        assert report["images"][name]["after"]["distance"] < \
            report["images"][name]["before"]["distance"]
    assert set(before) == {"distance", "features", "pixel_mse"}
    codes = np.load(out / "codes.npz")
    assert codes["w"].shape == (4, 16) and list(codes["names"]) == [p.name for p in paths]
    assert codes["noise0"].shape == (4, 1, 4, 4)
    assert sorted(p.name for p in (out / "images").iterdir()) == [p.name for p in paths]
    assert Image.open(out / "compare.png").size[1] == 3 * (64 + PAD) + PAD

    ok(alae("project", "--model", files / "style.pt", *paths[:2], "--featurenet",
            files / "featurenet.pt", "--steps", "3", "--w-plus", "--out", tmp_path / "plus"))
    assert np.load(tmp_path / "plus" / "codes.npz")["w"].shape == (2, 8, 16)


def test_projection_starts_from_the_encoder(files, tmp_path):
    """With no steps, the projected image is G(E(x)) with `--noise random`'s noise."""
    out = tmp_path / "zero"
    paths = images(files, 2)
    ok(alae("project", "--model", files / "style.pt", *paths, "--featurenet",
            files / "featurenet.pt", "--steps", "0", "--out", out))
    model, _, _ = load_model(files / "style.pt")
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(p), np.float32) / 127.5 - 1)[None]
                     for p in paths])
    with torch.no_grad():
        rec = with_noise(lambda w, n: model.decode(w, noise=n), model.encode(x), [0, 1],
                         "random")
    for p, r in zip(paths, to_uint8(rec)[:, 0].numpy()):
        assert np.abs(np.asarray(Image.open(out / "images" / p.name)).astype(int) - r).max() <= 1


def test_projection_refuses_in_one_line(files, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))   # no VGG weights, lpips installed or not
    one_line_error(alae("project", "--model", files / "style.pt", *images(files, 1),
                        "--distance", "lpips", "--out", tmp_path / "p"),
                   "--distance lpips:", "no other distance is used instead")
    one_line_error(alae("project", "--model", files / "mlp.pt", *images(files, 1), "--w-plus",
                        "--featurenet", files / "featurenet.pt", "--out", tmp_path / "p"),
                   "StyleALAE only")
    one_line_error(alae("project", "--model", files / "style.pt", *images(files, 1),
                        "--featurenet", tmp_path / "none.pt", "--out", tmp_path / "p"),
                   "featurenet file not found")
    assert not (tmp_path / "p").exists()


def test_an_imported_authors_model_takes_their_directions_and_edits(files, tmp_path):
    """Their mnist configuration's checkpoint layout (tests/official_fixture.py), imported: their
    kind of direction files load for it, and an edit and a projection run on it."""
    from official_fixture import save_their_checkpoint

    from alae.official import import_official

    save_their_checkpoint(tmp_path / "theirs.pth", "mnist", seed=0)
    import_official(tmp_path / "theirs.pth", "mnist", tmp_path / "ours.pt")
    folder = tmp_path / "principal_directions"
    folder.mkdir()
    np.save(folder / "direction_0.npy", np.random.default_rng(0).normal(size=32))
    ok(alae("directions", "--model", tmp_path / "ours.pt", "--method", "official", "--official",
            folder, "--limit", "200", "--out", tmp_path / "d.npz"))
    ok(alae("edit", "--model", tmp_path / "ours.pt", *images(files, 2), "--directions",
            tmp_path / "d.npz", "--direction", "gender", "--layers", "coarse", "--out",
            tmp_path / "strip.png"))
    assert Image.open(tmp_path / "strip.png").size[1] == 2 * TITLE_LINE + PAD + 2 * (64 + PAD) + PAD
    ok(alae("project", "--model", tmp_path / "ours.pt", *images(files, 2), "--featurenet",
            files / "featurenet.pt", "--steps", "2", "--w-plus", "--out", tmp_path / "p"))


def test_edit_share_judges_each_strength_and_names_unknown_classes(files, tiny_shards):
    """scripts/edit_share.py: the featurenet's verdict on edited test images, per strength."""
    script = [sys.executable, str(ROOT / "scripts" / "edit_share.py"), "--model",
              str(files / "style.pt"), "--shards", str(tiny_shards), "--featurenet",
              str(files / "featurenet.pt"), "--source", "sneaker", "--count", "3"]
    done = subprocess.run([*script, "--target", "Sneaker->Ankle boot", "--strengths", "0,1"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    lines = [l for l in done.stdout.splitlines() if " std on all: 3 test " in l]
    assert [l.split(" std")[0].split()[-1] for l in lines] == ["+0.0", "+1.0"]
    assert all("called Ankle boot" in l for l in lines)
    bad = subprocess.run([*script, "--target", "Boot"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 1 and "--target 'Boot'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
