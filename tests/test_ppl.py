"""Perceptual path length: the protocol checked on generators whose answer is known by hand (a
linear synthesis), the percentile filter by hand, the distance choice, and real tiny models."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from alae.config import ModelConfig
from alae.errors import UserError
from alae.metrics import ppl as ppl_mod
from alae.metrics.ppl import (EPSILON, FeatureDistance, draw_pairs, face_crop, load_distance,
                              filtered_mean, path_lengths, perceptual_path_length)
from alae.nn import build_model
from alae.nn.layers import NoiseInjection, pixel_noise


class Linear(torch.nn.Module):
    """F = identity, G(w) = w A as a 1x4x4 image, in float64 (so the check can be tight);
    `noise` adds per-pixel noise drawn as StyleALAE's G draws it (from the `noise` it is given)."""

    def __init__(self, latent: int = 6, noise: bool = False):
        super().__init__()
        self.latent, self.resolution, self.channels, self.noise = latent, 4, 1, noise
        self.A = torch.nn.Parameter(torch.randn(latent, 16, generator=torch.Generator()
                                                .manual_seed(3), dtype=torch.float64))

    def mapping(self, z):
        return z.double()

    def decode(self, w, noise=True):
        x = (w @ self.A).view(len(w), 1, 4, 4)
        return x + pixel_noise(x, noise) if self.noise else x


def sq_l2(a, b):
    return (a - b).flatten(1).pow(2).sum(1)


class Flatten:
    """An 'extractor' whose features are the pixels: the classifier distance in closed form."""
    name = "pixels"

    def __call__(self, x):
        return x.flatten(1)

    def provenance(self):
        return {}


def test_filtered_mean_by_hand():
    # 200 values: the 1st percentile ('lower') is the 2nd smallest, the 99th ('higher') the 2nd
    # largest, so exactly the two outliers go.
    lengths = np.r_[np.arange(198.0), 1e6, -1e6]
    assert filtered_mean(lengths) == pytest.approx(98.5, rel=1e-12)
    assert filtered_mean(np.full(50, 3.0)) == 3.0


def test_draws():
    z0, z1, t = draw_pairs(1000, 5, seed=1, sampling="full")
    assert z0.shape == z1.shape == (1000, 5) and 0 <= t.min() and t.max() < 1
    e0, e1, te = draw_pairs(1000, 5, seed=1, sampling="end")
    assert torch.equal(z0, e0) and torch.equal(z1, e1)   # same pairs for both samplings
    assert set(te.tolist()) == {0.0, 1.0} and 0.4 < te.mean() < 0.6
    with pytest.raises(ValueError):
        draw_pairs(4, 5, 0, "mid")


@pytest.mark.parametrize("sampling", ["full", "end"])
def test_linear_generator_squared_l2_is_exact(sampling):
    # G linear: d(G(w_t), G(w_t+eps)) / eps^2 = |(z1 - z0) A|^2 for every t.
    model = Linear()
    got = path_lengths(model, sq_l2, 300, sampling, seed=2, batch_size=64, progress=False)
    z0, z1, _ = draw_pairs(300, 6, 2, sampling)
    expected = ((z1.double() - z0.double()) @ model.A.detach()).pow(2).sum(1).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert perceptual_path_length(model, sq_l2, 300, sampling, 2, 64, progress=False) == \
        pytest.approx(filtered_mean(expected), rel=1e-6)


@pytest.mark.parametrize("sampling", ["full", "end"])
def test_linear_generator_normalised_feature_distance(sampling):
    # Unit-normalised features n(u), u(t) = lerp(w0, w1, t) A: to first order in eps the sample
    # is |dn/dt|^2 = |(I - n n^T) u'|^2 / |u|^2 with u' = (w1 - w0) A.
    model = Linear()
    got = path_lengths(model, FeatureDistance(Flatten()), 200, sampling, seed=4, batch_size=50,
                       progress=False)
    z0, z1, t = (v.double() for v in draw_pairs(200, 6, 4, sampling))
    A = model.A.detach()
    u = torch.lerp(z0, z1, t[:, None]) @ A
    du = (z1 - z0) @ A
    n = u / u.norm(dim=1, keepdim=True)
    tangent = du - (du * n).sum(1, keepdim=True) * n
    expected = (tangent.pow(2).sum(1) / u.pow(2).sum(1)).numpy()
    np.testing.assert_allclose(got, expected, rtol=2e-3)


def test_noise_is_the_same_for_both_images_of_a_pair():
    # With independent noise a sample would be ~ 2 * 16 / eps^2 = 3.2e9; shared, it is the
    # noiseless answer.
    quiet = path_lengths(Linear(), sq_l2, 50, "full", 0, 16, progress=False)
    noisy = path_lengths(Linear(noise=True), sq_l2, 50, "full", 0, 16, progress=False)
    np.testing.assert_allclose(noisy, quiet, rtol=1e-4)


@pytest.fixture(scope="module", params=["mlp", "style"])
def tiny_model(request):
    """Both model kinds through the one interface (`mapping`, `synthesis`, `latent`)."""
    cfg = ModelConfig(kind=request.param, latent=16, mapping_layers=2, hidden=32)
    cfg.check()  # both kinds exist: a failure here is a bug, never a skip
    torch.manual_seed(0)
    model = build_model(cfg, channels=1, resolution=16).eval().requires_grad_(False)
    for m in model.modules():   # noise that matters, as in a trained StyleALAE (fresh: 0)
        if isinstance(m, NoiseInjection):
            m.weight.data.fill_(1.0)
    return model


@pytest.mark.parametrize("sampling", ["full", "end"])
def test_path_lengths_do_not_depend_on_batch_size(tiny_model, sampling):
    # In float64: in float32 the rounding of batch-shaped kernels, divided by eps^2, moves a
    # sample by ~1e-3; what is checked here is that each sample draws the same numbers.
    model = copy.deepcopy(tiny_model).double()
    d = FeatureDistance(PixelFeatures())
    whole = path_lengths(model, d, 48, sampling, seed=0, batch_size=48, progress=False)
    for batch_size in (16, 7):
        part = path_lengths(model, d, 48, sampling, seed=0, batch_size=batch_size,
                            progress=False)
        np.testing.assert_allclose(part, whole, rtol=1e-9)
    fewer = path_lengths(model, d, 20, sampling, seed=0, batch_size=7, progress=False)
    np.testing.assert_allclose(fewer, whole[:20], rtol=1e-9)   # sample i is sample i


class PixelFeatures(Flatten):
    name = "classifier"


def test_tiny_models(tiny_model):
    d = FeatureDistance(PixelFeatures())
    full = perceptual_path_length(tiny_model, d, 64, "full", seed=0, batch_size=32, progress=False)
    end = perceptual_path_length(tiny_model, d, 64, "end", seed=0, batch_size=32, progress=False)
    assert np.isfinite(full) and full > 0 and np.isfinite(end) and end > 0
    again = perceptual_path_length(tiny_model, d, 64, "full", seed=0, batch_size=32,
                                   progress=False)
    assert again == full                                  # deterministic for a seed
    other_batch = perceptual_path_length(tiny_model, d, 64, "full", seed=0, batch_size=64,
                                         progress=False)
    assert other_batch == pytest.approx(full, rel=1e-4)
    assert perceptual_path_length(tiny_model, d, 64, "full", seed=1, batch_size=32,
                                  progress=False) != full


def test_distance_is_the_param_and_lpips_says_what_it_lacks(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))   # an empty hub cache
    d = load_distance("classifier", PixelFeatures())
    assert isinstance(d, FeatureDistance) and d.name == "classifier"
    assert load_distance("classifier", None) is None    # no featurenet: PPL skipped
    with pytest.raises(ValueError, match="mahalanobis"):
        load_distance("mahalanobis", PixelFeatures())
    # lpips chosen: one line naming what is missing, never the classifier instead
    monkeypatch.setattr(ppl_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="lpips package is not installed") as e:
        load_distance("lpips", PixelFeatures())
    assert "\n" not in str(e.value)
    monkeypatch.setattr(ppl_mod.importlib.util, "find_spec", lambda name: object())
    with pytest.raises(UserError) as e:
        load_distance("lpips", PixelFeatures())
    vgg = tmp_path / "hub" / "checkpoints" / ppl_mod.VGG_FILE
    assert str(vgg) in str(e.value) and ppl_mod.VGG_URL in str(e.value)
    assert "\n" not in str(e.value)
    vgg.parent.mkdir(parents=True)
    vgg.write_bytes(b"")
    assert ppl_mod.lpips_missing() is None


def test_epsilon_is_stylegans():
    assert EPSILON == 1e-4


# ---------------------------------------------------------------- StyleGAN's face crop

def test_face_crop_by_hand():
    x = torch.arange(32.0 * 32).view(1, 1, 32, 32)
    # c = 32 // 8 = 4: rows 12..27, columns 8..23; 16 px, so nothing to downsample.
    assert torch.equal(face_crop(x), x[:, :, 12:28, 8:24])
    big = torch.rand(2, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    crop = big[:, :, 384:896, 256:768]                 # 512 px, then 2x2 boxes -> 256
    out = face_crop(big)
    assert out.shape == (2, 3, 256, 256)
    torch.testing.assert_close(out[:, :, 7, 9], crop[:, :, 14:16, 18:20].mean((2, 3)))
    assert face_crop(torch.zeros(1, 1, 512, 512)).shape == (1, 1, 256, 256)   # no box: 256
    with pytest.raises(ValueError, match="square"):
        face_crop(torch.zeros(1, 1, 32, 16))


class Shapes:
    """A distance that records what it was given (squared L2 underneath)."""

    def __init__(self):
        self.seen = []

    def __call__(self, a, b):
        self.seen.append(tuple(a.shape[-2:]))
        return sq_l2(a, b)


def test_the_crop_is_applied_before_the_distance(tiny_model):
    def lengths(distance, crop="none"):
        return path_lengths(tiny_model, distance, 8, "full", seed=0, batch_size=8,
                            progress=False, crop=crop)

    whole, face = Shapes(), Shapes()
    full, cropped = lengths(whole), lengths(face, "face")
    assert whole.seen == [(16, 16)] and face.seen == [(8, 8)]     # 16 px: rows 6..13, cols 4..11
    # Squared L2 over part of the same pixels: never more, and less where the rest differed.
    assert (cropped <= full * (1 + 1e-9)).all() and (cropped < 0.99 * full).any()
    with pytest.raises(ValueError, match="crop"):
        lengths(whole, "eyes")
