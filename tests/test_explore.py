"""The latent explorer's actions (alae/edit/explorer.py) on tiny untrained models: each one is
what the matching `alae` command or library function makes, and bad input is one UserError.
The page itself is driven in a browser by tests/test_explore_browser.py."""
import numpy as np
import pytest
import torch
from PIL import Image

from alae.checkpoint import load_model
from alae.edit.directions import load_directions
from alae.edit.explorer import SHOWN, Explorer, shown
from alae.edit.strips import edit_images, edit_slots
from alae.errors import UserError
from alae.figures import mix_styles, style_ranges
from alae.sampling import generate_seeds, with_noise
from test_cli import one_line_error
from test_edit import _official, alae, files, images, ok  # noqa: F401  (files: a fixture)


@pytest.fixture(scope="module")
def sefa(files):
    """Three SeFa directions of the StyleALAE (no data needed: strengths measured on F(z))."""
    out = files / "sefa.npz"
    ok(alae("directions", "--model", files / "style.pt", "--method", "sefa", "--top", "3",
            "--layers", "all", "--limit", "200", "--out", out, "--device", "cpu"))
    return out


@pytest.fixture(scope="module")
def style(files, sefa):
    model, _, _ = load_model(files / "style.pt")
    return Explorer(model, load_directions(sefa, model.latent))


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def as_shown(x: torch.Tensor) -> np.ndarray:
    return pixels(shown(x))


def test_shown_enlarges_small_images_without_blurring():
    x = torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4)
    img = shown(x)
    assert img.size == (SHOWN, SHOWN)
    blocks = pixels(img).reshape(4, SHOWN // 4, 4, SHOWN // 4)
    assert (blocks == blocks[:, :1, :, :1]).all()   # nearest neighbour: one grey per pixel
    assert len(np.unique(blocks)) == 16


def test_take_reads_an_image_as_the_model_does_and_says_what_it_changed(files, style):
    x, note = style.take(images(files, 1)[0])
    assert x.shape == (1, 32, 32) and x.min() >= -1 and x.max() <= 1 and note == ""
    expected = np.asarray(Image.open(images(files, 1)[0]), np.float32) / 127.5 - 1
    assert np.allclose(x[0], expected, atol=1e-6)
    _, note = style.take(files / "red.png")
    assert note == "converted to gray"


@pytest.mark.parametrize("name, words", [("junk.png", "junk.png: unreadable image"),
                                         ("missing.png", "missing.png")])
def test_take_refuses_what_is_no_image_in_one_line(files, style, name, words):
    with pytest.raises(UserError, match=words):
        style.take(files / name)


def test_reconstruction_is_g_of_e_with_the_noise_of_seed_0(files, style):
    x, _ = style.take(images(files, 1)[0])
    model = style.model
    with torch.no_grad():
        expected = with_noise(lambda c, n: model.decode(c, noise=n),
                              model.encode(torch.from_numpy(x)[None]), [0], "random")
    assert np.abs(pixels(style.reconstruct(x)) - as_shown(expected)).max() <= 1


def test_an_edit_is_alae_edits_column_and_zero_is_the_reconstruction(files, style):
    x, _ = style.take(images(files, 1)[0])
    d = style.directions
    assert np.abs(pixels(style.edit(x, [0, 0, 0], "all"))
                  - pixels(style.reconstruct(x))).max() <= 1
    edited = style.edit(x, [0, 1.5, 0], "coarse")
    strip = edit_images(style.model, torch.from_numpy(x)[None], d.vectors[1], d.std[1],
                        np.array([1.5]), edit_slots(style.model, "coarse"))
    assert np.abs(pixels(edited) - as_shown(strip[:, 0])).max() <= 1
    assert np.abs(pixels(edited) - pixels(style.reconstruct(x))).max() > 8
    # two sliders add up: one step along their sum
    both = style.edit(x, [1.0, 0, -2.0], "all")
    step = d.std[0] * d.vectors[0] - 2 * d.std[2] * d.vectors[2]
    norm = np.linalg.norm(step)
    strip = edit_images(style.model, torch.from_numpy(x)[None], step / norm, norm,
                        np.array([1.0]), edit_slots(style.model, "all"))
    assert np.abs(pixels(both) - as_shown(strip[:, 0])).max() <= 1


def test_an_a_to_b_edit_is_alae_edits_a_to_b_column(files, style):
    x, _ = style.take(images(files, 1)[0])
    d = style.directions
    a, b = d.names[0], d.names[2]
    name, v, std = d.resolve(f"{a}->{b}")
    assert name == f"{a}->{b}"
    edited = style.edit(x, [0, 0, 0], "all", (a, b, -2.0))
    strip = edit_images(style.model, torch.from_numpy(x)[None], v, std, np.array([-2.0]),
                        edit_slots(style.model, "all"))
    assert np.abs(pixels(edited) - as_shown(strip[:, 0])).max() <= 1
    assert np.abs(pixels(edited) - pixels(style.reconstruct(x))).max() > 8
    # at strength 0 the pair adds nothing, whatever it names
    assert np.array_equal(pixels(style.edit(x, [0, 1.0, 0], "all", (a, a, 0.0))),
                          pixels(style.edit(x, [0, 1.0, 0], "all")))
    with pytest.raises(UserError, match="same direction"):
        style.edit(x, [0, 0, 0], "all", (a, a, 1.0))
    with pytest.raises(UserError, match="strengths are -3..3 std"):
        style.edit(x, [0, 0, 0], "all", (a, b, 3.5))


def test_mixing_copies_the_second_images_styles_into_the_block(files, style):
    a, _ = style.take(images(files, 2)[0])
    b, _ = style.take(images(files, 2)[1])
    model = style.model
    assert style.blocks == ["coarse", "middle", "fine"]
    assert np.abs(pixels(style.mix(a, a, "fine")) - pixels(style.reconstruct(a))).max() <= 1
    with torch.no_grad():
        wa, wb = (model.encode(torch.from_numpy(v)[None]) for v in (a, b))
        expected = with_noise(lambda c, n: model.decode(c, noise=n),
                              mix_styles(model, wa, wb, style_ranges(model)["coarse"]), [0],
                              "random")
    mixed = style.mix(a, b, "coarse")
    assert np.abs(pixels(mixed) - as_shown(expected)).max() <= 1
    assert np.abs(pixels(mixed) - pixels(style.reconstruct(a))).max() > 8


def test_a_sample_is_alae_generates_image_of_that_seed_and_psi(style):
    for psi in (1.0, 0.5):
        _, expected = next(generate_seeds(style.model, [7], None if psi == 1 else psi, 8))
        assert np.abs(pixels(style.sample(7, psi)) - as_shown(expected)).max() <= 1
    assert np.abs(pixels(style.sample(7, 1.0)) - pixels(style.sample(8, 1.0))).max() > 8


@pytest.mark.parametrize("action, words", [
    (lambda ex, x: ex.edit(x, [3.5, 0, 0], "all"), "strengths are -3..3 std"),
    (lambda ex, x: ex.edit(x, [0, 0, 0], "huge"), "--layers huge"),
    (lambda ex, x: ex.mix(x, x, "huge"), "huge: this model has coarse, middle, fine styles"),
    (lambda ex, x: ex.sample(-1, 0.7), "seed -1: a whole number"),
    (lambda ex, x: ex.sample(1.5, 0.7), "seed 1.5"),
    (lambda ex, x: ex.sample(0, 1.5), "psi 1.5: from 0 to 1"),
])
def test_bad_settings_are_one_user_error(files, style, action, words):
    x, _ = style.take(images(files, 1)[0])
    with pytest.raises(UserError, match=words):
        action(style, x)


def test_an_mlp_edits_its_one_code_and_has_no_styles_to_mix(files, tmp_path):
    out = tmp_path / "mlp.npz"
    ok(alae("directions", "--model", files / "mlp.pt", "--method", "official", "--official",
            _official(tmp_path, 8), "--limit", "100", "--out", out))
    model, _, _ = load_model(files / "mlp.pt")
    ex = Explorer(model, load_directions(out, model.latent))
    x, _ = ex.take(images(files, 1)[0])
    assert ex.blocks == [] and ex.names == ["smile"]
    assert np.abs(pixels(ex.edit(x, [2.0], "all")) - pixels(ex.reconstruct(x))).max() > 0
    with pytest.raises(UserError, match="StyleALAE only"):
        ex.mix(x, x, "coarse")
    with pytest.raises(UserError, match="StyleALAE only"):
        ex.edit(x, [1.0], "coarse")
    no_directions = Explorer(model)
    assert no_directions.names == []
    with pytest.raises(UserError, match="no directions loaded"):
        no_directions.edit(x, [], "all")


@pytest.mark.parametrize("args, words", [
    (["--directions", "sefa.npz", "--model", "mlp.pt"], ["16-d W", "8-d"]),
    (["--directions", "junk.png"], ["not a directions file"]),
    (["--shards", "nowhere"], ["nowhere"]),
    (["--model", "nothing.pt"], ["nothing.pt"]),
])
def test_explore_refuses_what_it_cannot_serve_in_one_line(files, sefa, args, words):
    """Before anything is served (a wrong port or host is the same: gradio's OSError)."""
    given = dict(zip(args[::2], args[1::2]))
    options = {"--model": "style.pt", **given}
    one_line_error(alae("explore", *[a for k, v in options.items()
                                     for a in (k, files / v)], "--device", "cpu"), *words)
