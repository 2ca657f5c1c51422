"""ALAE losses against values computed by hand."""
import math

import pytest
import torch

from alae.train import losses


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_discriminator_loss_by_hand():
    real = torch.tensor([2.0, -1.0])
    fake = torch.tensor([0.5, -3.0])
    expected = (softplus(0.5) + softplus(-3.0)) / 2 + (softplus(-2.0) + softplus(1.0)) / 2
    assert losses.discriminator_loss(real, fake).item() == pytest.approx(expected, rel=1e-6)


def test_generator_loss_is_non_saturating():
    fake = torch.tensor([0.0, 4.0])
    expected = (softplus(0.0) + softplus(-4.0)) / 2
    assert losses.generator_loss(fake).item() == pytest.approx(expected, rel=1e-6)


def test_r1_penalty_of_a_linear_critic():
    # logits = x . a per sample, so grad_x = a for every sample and |grad|^2 = |a|^2.
    a = torch.tensor([3.0, -4.0])  # |a|^2 = 25
    x = torch.randn(5, 2, requires_grad=True)
    logits = x @ a
    assert losses.r1_penalty(logits, x, gamma=10.0).item() == pytest.approx(0.5 * 10 * 25)


def test_r1_penalty_is_differentiable_double_backward():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    x = torch.randn(3, 2, requires_grad=True)
    penalty = losses.r1_penalty((x * w).sum(1), x, gamma=2.0)  # = |w|^2
    (grad_w,) = torch.autograd.grad(penalty, w)
    assert torch.allclose(grad_w, 2 * w.detach())  # d|w|^2/dw


def test_latent_loss_detaches_target():
    w = torch.tensor([[1.0, 2.0]], requires_grad=True)
    w_rec = torch.tensor([[0.0, 4.0]], requires_grad=True)
    loss = losses.latent_loss(w_rec, w)
    assert loss.item() == pytest.approx((1 + 4) / 2)
    loss.backward()
    assert w.grad is None  # the target w = F(z) gets no gradient from this term
    assert torch.allclose(w_rec.grad, torch.tensor([[-1.0, 2.0]]))
