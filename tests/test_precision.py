"""train.precision, lazy R1 and channels-last: each changes speed, not what is computed (beyond
rounding), and the parts that must stay fp32 do."""
import pytest
import torch

from alae.config import parse_params
from alae.errors import UserError
from alae.train.precision import Precision

TINY = {"seed": 1,
        "model": {"kind": "style", "latent": 8, "mapping_layers": 2, "start_channels": 4,
                  "max_channels": 8},
        "train": {"kimg": 0.256, "batch_size": 16, "transition_kimg": 0.064,
                  "stabilize_kimg": 0.064, "tick_kimg": 0.064, "ema_kimg": 0.5, "threads": 1,
                  "checkpoint_kimg": 0, "r1_gamma": 10.0, "style_mixing": 0.9}}
# the authors' R1 and mixing: their strong regularisation keeps 16 steps close enough to compare
# (at the defaults, γ 0.1 and no mixing, bf16 and fp32 drift apart)


def _run(shards, **train):
    from alae.train.loop import Trainer

    raw = {**TINY, "train": {**TINY["train"], **train}}
    return Trainer(parse_params(raw), shards).run(progress=False)


def test_bf16_losses_track_fp32_within_tolerance(shards8):
    """16 steps at 8x8 (both levels, a transition between): the per-tick mean losses of bf16
    autocast stay within 3% (or 0.1 absolute near zero) of fp32's: bf16 keeps ~3 significant
    digits, and 16 steps of Adam let rounding differences grow a little. Relative, since early
    losses are not O(1): R1 on the reference E (gain sqrt 2) starts loss_d near 10."""
    fp32, bf16 = _run(shards8), _run(shards8, precision="bf16")
    assert len(fp32.history) == len(bf16.history) == 4
    for a, b in zip(fp32.history, bf16.history):
        for key in ("loss_d", "loss_g", "lae"):
            assert b[key] == pytest.approx(a[key], rel=0.03, abs=0.1), (key, a, b)
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())  # master weights fp32


def test_channels_last_gives_the_same_update():
    """One E+D update with R1 in NHWC gives the gradients of NCHW up to float rounding (a whole
    GAN run is chaotic: rounding differences grow, so compare one update)."""
    import copy

    from alae.nn import build_model
    from alae.nn import Level
    from alae.train.steps import discriminator_step, make_optimizers

    model = build_model(parse_params(TINY).model, 1, 8)
    nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last)
    real = torch.rand(16, 1, 8, 8) * 2 - 1
    grads = []
    for net, x in ((model, real), (nhwc, real.contiguous(memory_format=torch.channels_last))):
        opt = make_optimizers(net, 0.0, 0.0, 0.99)  # lr 0: keep the gradients, move nothing
        torch.manual_seed(0)
        discriminator_step(net, opt, x, 10.0, Level(1, 0.5), mixing=0.9)
        grads.append([p.grad for p in net.discriminator_parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_lazy_r1_applies_the_penalty_every_kth_step_scaled_by_k(shards8, monkeypatch):
    from alae.train import losses

    calls = []
    real_penalty = losses.r1_penalty

    def spy(logits, real, gamma):
        calls.append(gamma)
        assert logits.dtype == torch.float32  # R1 is differentiated twice: never in autocast
        return real_penalty(logits, real, gamma)

    monkeypatch.setattr(losses, "r1_penalty", spy)
    _run(shards8, r1_interval=4, r1_gamma=10.0, precision="bf16")
    assert calls == [40.0] * 4  # 16 steps: steps 0, 4, 8, 12, each with gamma * 4


def test_fp16_needs_cuda():
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        Precision("fp16", torch.device("cpu"))
