"""The three places where the authors' code (REFERENCE.md) does something the paper does not
say, and what this project decided (README, "Deliberate differences"):
1. E's statistics -> w layers at the equalized-lr default gain sqrt(2) (theirs), not 1;
2. E's from-RGB leaky ReLU applied twice (theirs: an effective negative slope of 0.04);
3. D's zero-gradient Adam step in the latent update (their torch 1.x runs): off by default,
   `train.d_zero_grad_step: true` reproduces it."""
import math

import pytest
import torch
import torch.nn.functional as F

from alae.config import ModelConfig, TrainConfig
from alae.nn import Level, build_model
from alae.train.steps import latent_step, make_optimizers, train_step

SMALL = dict(kind="style", latent=16, mapping_layers=2, start_channels=4, max_channels=16)


def encoder(as_reference: bool):
    torch.manual_seed(0)
    return build_model(ModelConfig(**SMALL, encoder_as_reference=as_reference), 1, 16).encoder


@pytest.mark.parametrize("as_reference, gain", [(True, math.sqrt(2.0)), (False, 1.0)])
def test_encoder_style_layers_gain(as_reference, gain):
    for block in encoder(as_reference).blocks:
        for layer in (block.style1, block.style2):
            assert layer.scale == pytest.approx(gain / math.sqrt(layer.weight.shape[1]))


@pytest.mark.parametrize("as_reference, slope", [(True, 0.04), (False, 0.2)])
def test_encoder_from_rgb_activation(as_reference, slope):
    """What reaches the top block is from-RGB through leaky ReLU with the effective slope."""
    enc = encoder(as_reference)
    seen = []
    enc.blocks[enc.levels - 1].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x = torch.randn(3, 1, 16, 16)
    enc(x, lod=enc.levels - 1, alpha=1.0)
    expected = F.leaky_relu(enc.from_rgb[enc.levels - 1](x), slope)
    assert (expected < 0).any()
    torch.testing.assert_close(seen[0], expected, rtol=1e-6, atol=1e-7)


def test_the_reference_encoder_is_a_different_function_of_the_same_weights():
    ref, ours = encoder(True), encoder(False)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(4, 1, 16, 16)
    top = ref.levels - 1
    assert not torch.allclose(ref(x, top), ours(x, top), rtol=0.01)


@pytest.mark.parametrize("flag", [False, True])
def test_d_zero_grad_step_in_the_latent_update(flag):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL), 1, 8)
    opt = make_optimizers(model, 0.002, 0.0, 0.99)
    cfg = TrainConfig(batch_size=4, d_zero_grad_step=flag)
    train_step(model, model, opt, torch.randn(4, 1, 8, 8), Level(1, 1.0), cfg, step=0)
    d_params = list(model.discriminator.parameters())
    v_before = [opt.ed.state[p]["exp_avg_sq"].clone() for p in d_params]
    weights_before = [p.detach().clone() for p in d_params]
    latent_step(model, opt, 4, torch.device("cpu"), Level(1, 1.0), d_zero_grad_step=flag)
    for p, v, w in zip(d_params, v_before, weights_before):
        state = opt.ed.state[p]
        assert int(state["step"]) == (3 if flag else 1)  # D steps in updates 1 (and 3): per batch
        assert torch.equal(p, w)  # beta1 = 0: a zero gradient moves nothing...
        # ...but decays the second moment once more (and twice in the first batch's update 3)
        torch.testing.assert_close(state["exp_avg_sq"], v * 0.99 if flag else v)
