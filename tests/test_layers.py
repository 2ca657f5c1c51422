"""Equalized learning-rate layers and the assembled MLP ALAE."""

import dataclasses

import pytest
import torch

from alae.config import ModelConfig
from alae.nn import Level, build_model
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
    model = build_model(ModelConfig(kind="mlp", latent=8, mapping_layers=2, hidden=32), channels=3,
                        resolution=16)
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


# --- StyleALAE layers ----------------------------------------------------------------------------
from alae.nn.layers import (AdaIN, Blur, EqualConv2d, NoiseInjection, channel_stats,  # noqa: E402
                            instance_norm)
from alae.nn.style import block_channels  # noqa: E402


@pytest.mark.parametrize("channels, kernel", [(16, 3), (64, 1), (8, 3)])
def test_equal_conv_keeps_unit_variance_with_linear_gain(channels, kernel):
    torch.manual_seed(0)
    conv = EqualConv2d(channels, 256, kernel, gain=1.0)
    y = conv(torch.randn(64, channels, 16, 16))[..., 1:-1, 1:-1]  # away from the zero padding
    assert y.var().item() == pytest.approx(1.0, rel=0.05)


def test_equal_conv_lr_multiplier_same_function_slower_parameter():
    torch.manual_seed(0)
    slow = EqualConv2d(4, 4, 3, lr_mul=0.1)
    torch.manual_seed(0)
    fast = EqualConv2d(4, 4, 3)
    x = torch.randn(2, 4, 8, 8)
    assert torch.allclose(slow(x), fast(x), atol=1e-5)
    slow(x).sum().backward()
    fast(x).sum().backward()
    assert (slow.weight.grad.abs().mean() / fast.weight.grad.abs().mean()).item() == pytest.approx(0.1, rel=1e-4)


def test_blur_is_the_normalised_121_filter():
    blur = Blur()
    assert torch.allclose(blur.kernel.sum(), torch.tensor(1.0))
    impulse = torch.zeros(1, 2, 5, 5)
    impulse[:, :, 2, 2] = 16
    out = blur(impulse)
    assert torch.equal(out[0, 1, 1:4, 1:4], torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]))
    flat = torch.full((1, 3, 6, 6), 0.5)
    assert torch.allclose(blur(flat)[..., 1:-1, 1:-1], flat[..., 1:-1, 1:-1])  # constants pass


def test_noise_injection_starts_silent_and_is_per_pixel_shared_across_channels():
    noise = NoiseInjection(3)
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(noise(x), x)  # weight initialised to 0
    with torch.no_grad():
        noise.weight.copy_(torch.tensor([1.0, 2.0, 0.0]))
    torch.manual_seed(0)
    added = noise(x) - x
    assert torch.allclose(added[:, 1], 2 * added[:, 0]) and torch.equal(added[:, 2], torch.zeros(2, 4, 4))
    assert torch.equal(noise(x, noise=False), x)
    # a generator of its own: the same seed gives the same noise, and the global RNG is unmoved
    state = torch.get_rng_state()
    own = [noise(x, noise=torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(own[0], own[1]) and torch.equal(torch.get_rng_state(), state)


def test_instance_norm_and_statistics():
    x = torch.randn(3, 5, 8, 8) * 4 + 2
    y = instance_norm(x)
    assert torch.allclose(y.mean((2, 3)), torch.zeros(3, 5), atol=1e-5)
    assert torch.allclose(y.var((2, 3), unbiased=False), torch.ones(3, 5), atol=1e-4)
    stats = channel_stats(x)
    assert stats.shape == (3, 10)
    assert torch.allclose(stats[:, :5], x.mean((2, 3)), atol=1e-5)
    assert torch.allclose(stats[:, 5:], x.std((2, 3), unbiased=False), atol=1e-4)


def test_adain_scales_by_one_plus_gamma_and_shifts_by_beta():
    adain = AdaIN(latent=6, channels=4)
    x, w = torch.randn(2, 4, 3, 3), torch.randn(2, 6)
    with torch.no_grad():
        adain.style.weight.zero_()
    assert torch.equal(adain(x, w), x)  # gamma = beta = 0 (zero biases): the identity
    with torch.no_grad():
        adain.style.bias.copy_(torch.tensor([1.0, 1, 1, 1, 5, 5, 5, 5]))  # gamma = 1, beta = 5
    assert torch.allclose(adain(x, w), 2 * x + 5)


def test_block_channels_follow_the_reference_rule():
    # 32x32: four levels, start 64, cap 256 (reference MNIST): 256 256 128 64
    assert [block_channels(i, 4, 64, 256) for i in range(4)] == [256, 256, 128, 64]
    assert block_channels(-1, 4, 16, 512) == 256  # E's output width of the 4x4 block


# --- fused resampling: the same function and gradients as the reference's layer order --------
@pytest.mark.parametrize("bias", [False, True])
def test_fused_up_and_down_equal_the_unfused_layer_order(bias):
    torch.manual_seed(0)
    conv = EqualConv2d(6, 5, 3, bias=bias).double()
    if bias:
        torch.nn.init.normal_(conv.bias)
    x = torch.randn(3, 6, 8, 8, dtype=torch.float64, requires_grad=True)
    for resample in ("up", "down"):
        outputs, grads = [], []
        for fused in (False, True):
            conv.fused = fused
            out = getattr(conv, resample)(x)
            (gx, gw) = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64)
                                            .view_as(out)).sum(), (x, conv.weight))
            outputs.append(out), grads.append((gx, gw))
        expected = (3, 5, 16, 16) if resample == "up" else (3, 5, 4, 4)
        assert outputs[0].shape == outputs[1].shape == expected
        torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-12, atol=1e-12)
        for g_fused, g_plain in zip(grads[1], grads[0]):
            torch.testing.assert_close(g_fused, g_plain, rtol=1e-12, atol=1e-12)


def test_fused_resample_model_matches_the_reference_order_at_every_level():
    """The whole StyleALAE (G, E, D, R1's input gradient) with fused_resample on and off, same
    weights, float64: equal at every level, mid-transition included."""
    from alae.config import ModelConfig as MC
    from alae.nn.layers import NoiseInjection as Noise
    cfg = MC(kind="style", latent=8, mapping_layers=2, start_channels=4, max_channels=16)
    torch.manual_seed(0)
    plain = build_model(dataclasses.replace(cfg, fused_resample=False), 1, 16).double()
    fused = build_model(cfg, 1, 16).double()
    for m in plain.modules():
        if isinstance(m, Noise):
            torch.nn.init.normal_(m.weight)
    fused.load_state_dict(plain.state_dict())
    assert all(not m.fused for m in plain.modules() if isinstance(m, EqualConv2d))
    for lod, alpha in [(1, 0.3), (2, 1.0), (2, 0.6)]:
        w = torch.randn(4, 8, dtype=torch.float64)
        results = []
        for model in (plain, fused):
            torch.manual_seed(1)  # the same noise
            image = model.decode(w, Level(lod, alpha))
            x = image.detach().requires_grad_()
            score = model.score(x, Level(lod, alpha))
            (gx,) = torch.autograd.grad(score.sum(), x)
            results.append((image, model.encode(image, Level(lod, alpha)), score, gx))
        for a, b in zip(*results):
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)
