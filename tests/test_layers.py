"""Equalized learning-rate layers and the assembled MLP ALAE."""

import pytest
import torch

from alae.config import ModelConfig
from alae.nn import build_model
from alae.nn.layers import EqualLinear, PixelNorm


@pytest.mark.parametrize("fan_in", [50, 1024])
def test_equal_linear_keeps_unit_variance_with_linear_gain(fan_in):
    torch.manual_seed(0)
    layer = EqualLinear(fan_in, 512, gain=1.0)
    y = layer(torch.randn(4096, fan_in))
    assert y.var().item() == pytest.approx(1.0, rel=0.05)


def test_equal_linear_lr_multiplier_scales_weights_and_their_gradients():
    torch.manual_seed(0)
    slow = EqualLinear(64, 64, lr_mul=0.1)
    torch.manual_seed(0)
    fast = EqualLinear(64, 64, lr_mul=1.0)
    x = torch.randn(8, 64)
    # Same function at init: stored weights are N(0,1)/lr_mul, scaled back by lr_mul at run time.
    assert torch.allclose(slow(x), fast(x), atol=1e-5)
    slow(x).sum().backward()
    fast(x).sum().backward()
    # ...but the stored parameter of the slow layer receives a 10x smaller gradient, with ~10x
    # larger values, so Adam's update (gradient-scale free) moves it 10x slower relative to size.
    ratio = slow.weight.grad.abs().mean() / fast.weight.grad.abs().mean()
    assert ratio.item() == pytest.approx(0.1, rel=1e-4)


def test_pixel_norm_gives_unit_rms():
    z = torch.randn(16, 50) * 7
    assert torch.allclose(PixelNorm()(z).pow(2).mean(1), torch.ones(16), atol=1e-4)


def test_mlp_alae_shapes():
    model = build_model(ModelConfig(latent=8, mapping_layers=2, hidden=32), channels=3, resolution=16)
    z = torch.randn(5, 8)
    w = model.mapping(z)
    x = model.synthesis(w)
    assert w.shape == (5, 8) and x.shape == (5, 3, 16, 16)
    assert model.encode(x).shape == (5, 8)
    assert model.score(x).shape == (5,)
    assert model.reconstruct(x).shape == x.shape
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == sum(p.numel() for p in model.generator_parameters()) + sum(
        p.numel() for p in model.discriminator_parameters())
