"""Figures: pixel sizes, grid layout, and what each cell must show."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from alae.config import FiguresConfig, parse_params
from alae.figures import (LABEL_WIDTH, PAD, figure_set, first_test_images, interpolation_figure,
                          mix_styles, reconstructions_figure, reals_needed, samples_figure,
                          slot_resolutions, style_mixing_figure, style_ranges)
from alae.nn import ALAE, build_model

CFG = FiguresConfig(samples=12, pairs=2, columns=4, psi=0.7, cutoff=4)
SCALE = 2  # grid() draws every image at twice its size


def cells(image, rows: int, cols: int, size: int) -> np.ndarray:
    """Cut a grid back into its cells: (rows, cols, size, size) grayscale."""
    a = np.asarray(image.convert("L"), dtype=np.float64)
    s = size * SCALE
    out = np.empty((rows, cols, s, s))
    for i in range(rows):
        for j in range(cols):
            y, x = PAD + i * (s + PAD), LABEL_WIDTH + PAD + j * (s + PAD)
            out[i, j] = a[y:y + s, x:x + s]
    return out


def expected_size(rows: int, cols: int, size: int) -> tuple[int, int]:
    s = size * SCALE
    return LABEL_WIDTH + cols * (s + PAD) + PAD, rows * (s + PAD) + PAD


class Identity(nn.Module):
    """A stand-in autoencoder whose reconstruction is its input: checks the layout alone."""
    latent, resolution, channels, num_levels, progressive = 4, 32, 1, 1, False

    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(1))

    def reconstruct(self, x):
        return x


@pytest.fixture(scope="module")
def style_model():
    params = parse_params({"model": {"kind": "style", "latent": 8, "mapping_layers": 2,
                                     "start_channels": 4, "max_channels": 8}})
    torch.manual_seed(0)
    return build_model(params.model, channels=1, resolution=32).eval().requires_grad_(False)


def test_samples_grid_size_and_truncation(style_model):
    truncated = samples_figure(style_model, CFG, truncate=True)
    plain = samples_figure(style_model, CFG, truncate=False)
    assert truncated.size == plain.size == expected_size(3, 4, 32)
    assert np.asarray(truncated).tobytes() != np.asarray(plain).tobytes()
    assert np.asarray(samples_figure(style_model, CFG)).tobytes() == np.asarray(truncated).tobytes()


@pytest.fixture(scope="module")
def reals(tiny_shards):
    return first_test_images(Identity(), tiny_shards, reals_needed(CFG))


def test_reconstruction_cells_sit_below_their_images(reals):
    image = reconstructions_figure(Identity(), reals, CFG)
    assert image.size == expected_size(4, 4, 32)
    c = cells(image, 4, 4, 32)
    for pair in range(2):
        real, rec = c[2 * pair].reshape(4, -1), c[2 * pair + 1].reshape(4, -1)
        corr = np.corrcoef(real, rec)[:4, 4:]
        assert np.allclose(np.diag(corr), 1.0)
        off = corr[~np.eye(4, dtype=bool)]
        assert np.diag(corr).min() > off.max() + 0.05


def test_interpolation_ends_are_the_real_images(reals, style_model):
    image = interpolation_figure(style_model, reals, CFG)
    assert image.size == expected_size(2, 4 + 2, 32)
    first_real = cells(reconstructions_figure(Identity(), reals, CFG), 1, 2, 32)[0]
    interp = cells(image, 1, 6, 32)[0]
    assert np.array_equal(interp[0], first_real[0])  # x_a: test image 0
    assert np.array_equal(interp[5], first_real[1])  # x_b: test image 1


class Levels:
    """What style_ranges reads of a StyleALAE: its levels, 4x4 up to `resolution`."""
    level_resolution = ALAE.level_resolution

    def __init__(self, resolution: int):
        self.resolution, self.num_levels = resolution, int(math.log2(resolution)) - 1


@pytest.mark.parametrize("resolution, blocks", [
    (4, {"coarse": "4"}), (8, {"coarse": "4", "fine": "8"}),
    (16, {"coarse": "4", "middle": "8", "fine": "16"}),
    (32, {"coarse": "4-8", "middle": "16", "fine": "32"}),
    (64, {"coarse": "4-8", "middle": "16-32", "fine": "64"}),  # StyleGAN's split from here on
    (1024, {"coarse": "4-8", "middle": "16-32", "fine": "64-1024"})])
def test_style_blocks_split_the_models_own_levels(resolution, blocks):
    model = Levels(resolution)
    ranges = style_ranges(model)
    assert {b: slot_resolutions(model, r) for b, r in ranges.items()} == {
        b: f"{px} px" for b, px in blocks.items()}
    assert [s for r in ranges.values() for s in r] == list(range(2 * model.num_levels))


def test_style_mixing_blocks_at_32px(style_model, reals):
    ranges = style_ranges(style_model)
    assert ranges == {"coarse": range(0, 4), "middle": range(4, 6), "fine": range(6, 8)}
    image = style_mixing_figure(style_model, reals, CFG)
    assert image.size == expected_size(1 + 3 * 4, 4 + 1, 32)


def test_the_figure_set_makes_what_its_real_images_allow(style_model, reals):
    full, skipped = figure_set(style_model, CFG, reals)
    assert set(full) == {"samples.png", "samples_untruncated.png", "reconstructions.png",
                         "interpolation.png", "style_mixing.png"}
    assert [s.split(":")[0] for s in skipped] == ["progress.png"]
    # Three real images: one interpolation row, one mixing source and destination.
    few, _ = figure_set(style_model, CFG, reals[:3])
    assert few["interpolation.png"].size == expected_size(1, 4 + 2, 32)
    assert few["style_mixing.png"].size == expected_size(1 + 3, 1 + 1, 32)
    assert few["reconstructions.png"].size == expected_size(2, 3, 32)
    one, skipped = figure_set(style_model, CFG, reals[:1])
    assert "interpolation.png" not in one and "style_mixing.png" not in one
    assert sum("needs two real images" in s for s in skipped) == 2
    mlp = build_model(parse_params({"model": {"kind": "mlp", "latent": 8, "hidden": 16,
                                              "mapping_layers": 2}}).model, channels=1,
                      resolution=32).eval()
    made, skipped = figure_set(mlp, CFG, reals)
    assert "style_mixing.png" not in made and "a StyleALAE's only" in skipped[0]


def test_mixing_a_code_with_itself_reproduces_its_reconstruction(style_model, tiny_shards):
    from alae.data import eval_batches

    x, _ = next(eval_batches(tiny_shards, "test", 32, 3))
    w = style_model.encode(x)
    torch.manual_seed(1)
    mixed = style_model.decode(mix_styles(style_model, w, w, style_ranges(style_model)["coarse"]))
    torch.manual_seed(1)
    assert torch.allclose(mixed, style_model.reconstruct(x), atol=1e-6)
