"""The three ALAE updates per batch, in the reference's order (paper Algorithm 1):
1. E and D on real and generated images (with R1),
2. F and G against the frozen E and D,
3. latent reciprocity through E, G and F.

Each returns its loss as a detached tensor: calling `.item()` here would force a device sync
every step; the loop reads the values once per tick.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from alae.nn import ALAE
from alae.train import losses


@dataclass
class Optimizers:
    ed: torch.optim.Optimizer  # encoder E + discriminator D
    fg: torch.optim.Optimizer  # mapping F + generator G


def make_optimizers(model: ALAE, lr: float, beta1: float, beta2: float) -> Optimizers:
    # float() on both betas: Adam rejects a mix of int (YAML 0) and float.
    betas = (float(beta1), float(beta2))
    return Optimizers(
        ed=torch.optim.Adam(model.discriminator_parameters(), lr=lr, betas=betas, eps=1e-8),
        fg=torch.optim.Adam(model.generator_parameters(), lr=lr, betas=betas, eps=1e-8),
    )


def _requires_grad(modules: list[nn.Module], flag: bool) -> None:
    for m in modules:
        m.requires_grad_(flag)


def _latents(model: ALAE, n: int, device: torch.device) -> torch.Tensor:
    return torch.randn(n, model.latent, device=device)


def discriminator_step(model: ALAE, opt: Optimizers, real: torch.Tensor, r1_gamma: float) -> torch.Tensor:
    with torch.no_grad():
        fake = model.generate(_latents(model, real.shape[0], real.device))
    real = real.detach().requires_grad_(r1_gamma > 0)
    real_logits = model.score(real)
    loss = losses.discriminator_loss(real_logits, model.score(fake))
    if r1_gamma > 0:
        loss = loss + losses.r1_penalty(real_logits, real, r1_gamma)
    opt.ed.zero_grad(set_to_none=True)
    loss.backward()
    opt.ed.step()
    return loss.detach()


def generator_step(model: ALAE, opt: Optimizers, batch: int, device: torch.device) -> torch.Tensor:
    # E and D are frozen: their weights are fixed targets and need no gradient buffers.
    _requires_grad([model.encoder, model.discriminator], False)
    try:
        loss = losses.generator_loss(model.score(model.generate(_latents(model, batch, device))))
        opt.fg.zero_grad(set_to_none=True)
        loss.backward()
        opt.fg.step()
    finally:
        _requires_grad([model.encoder, model.discriminator], True)
    return loss.detach()


def latent_step(model: ALAE, opt: Optimizers, batch: int, device: torch.device) -> torch.Tensor:
    w = model.mapping(_latents(model, batch, device))
    loss = losses.latent_loss(model.encode(model.decode(w)), w)
    opt.ed.zero_grad(set_to_none=True)
    opt.fg.zero_grad(set_to_none=True)
    loss.backward()
    opt.ed.step()
    opt.fg.step()
    return loss.detach()
