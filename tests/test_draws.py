"""Per-image draws of the metrics (alae/metrics/draws.py): image i's latent and noise are the same
whichever other images are drawn with it, and differ between images, purposes, streams and seeds."""
from __future__ import annotations

import pytest
import torch

from alae.config import ModelConfig
from alae.metrics import draws
from alae.nn import build_model
from alae.nn.layers import NoiseInjection


def test_latents_are_per_image():
    all10 = draws.latents(0, "samples", range(10), 8)
    assert all10.shape == (10, 8) and all10.dtype == torch.float32
    assert torch.equal(draws.latents(0, "samples", range(5, 10), 8), all10[5:])
    assert torch.equal(draws.latents(0, "samples", [7, 2], 8), all10[[7, 2]])
    assert not torch.equal(all10[0], all10[1])
    assert not torch.equal(draws.latents(1, "samples", range(10), 8), all10)
    assert not torch.equal(draws.latents(0, "ppl", range(10), 8), all10)


def test_seeds_keep_low_bits_distinct():
    # torch's CPU generator ignores a seed's high 32 bits: the images of a stream must differ there
    seeds = draws.image_seeds(3, "samples", draws.NOISE, range(1000))
    assert len({s % 2 ** 32 for s in seeds}) == 1000
    assert set(seeds).isdisjoint(draws.image_seeds(3, "samples", draws.LATENT, range(1000)))
    with pytest.raises(ValueError, match="purpose"):
        draws.image_seeds(0, "figures", 0, [0])
    with pytest.raises(ValueError, match="negative"):
        draws.image_seeds(-1, "samples", 0, [0])


def test_noise_is_per_image_and_follows_the_layers():
    def planes(indices):
        noise = draws.noise(0, "samples", indices)
        return [noise.draw((len(indices), 1, r, r)) for r in (4, 4, 8)]
    whole, part = planes(range(6)), planes(range(2, 5))
    for a, b in zip(whole, part):
        assert torch.equal(a[2:5], b)
    assert not torch.equal(whole[0], whole[1])   # each layer draws its own plane
    with pytest.raises(ValueError, match="3 images"):
        draws.noise(0, "samples", range(2)).draw((3, 1, 4, 4))


def test_a_style_generator_draws_each_image_alone():
    """One batch of a real StyleALAE (noise switched on) gives image k what a batch of one does."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="style", latent=16, mapping_layers=2), 1, 16).eval()
    for m in model.modules():
        if isinstance(m, NoiseInjection):
            m.weight.data.fill_(1.0)
    z = draws.latents(0, "samples", range(5), 16)
    with torch.no_grad():
        batch = model.generate(z, noise=draws.noise(0, "samples", range(5)))
        alone = model.generate(z[3:4], noise=draws.noise(0, "samples", [3]))
        quiet = model.generate(z[3:4], noise=False)
    torch.testing.assert_close(batch[3:4], alone, rtol=1e-5, atol=1e-5)
    assert (alone - quiet).abs().max() > 1e-2   # the noise does reach the image
