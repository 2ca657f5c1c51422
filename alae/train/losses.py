"""ALAE losses (paper eq. 6-8; non-saturating logistic loss with R1, Mescheder et al. 2018).

Pure functions of logits, images and codes: the steps in `steps.py` decide what flows where.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """E+D: softplus(D(E(G(F(z))))) + softplus(-D(E(x))), averaged over the batch."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor, gamma: float) -> torch.Tensor:
    """(gamma/2) * E[|grad_x D(E(x))|^2] on real images; `real` must require grad.

    `create_graph=True` makes the penalty differentiable (a double backward), which is why
    `torch.compile` cannot wrap this step.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return 0.5 * gamma * grad.pow(2).flatten(1).sum(1).mean()


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """F+G: non-saturating softplus(-D(E(G(F(z)))))."""
    return F.softplus(-fake_logits).mean()


def latent_loss(w_reconstructed: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Latent reciprocity |E(G(w)) - w|^2 with w as a fixed target (paper eq. 8)."""
    return (w_reconstructed - w.detach()).pow(2).mean()
