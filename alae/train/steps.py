"""The three ALAE updates per batch, in the reference's order (paper Algorithm 1):
1. E and D on real and generated images (with R1),
2. F and G against the frozen E and D,
3. latent reciprocity through E, G and F.

Each returns its loss as a detached tensor: calling `.item()` here would force a device sync
every step; the loop reads the values once per tick.

The adversarial updates (1, 2) draw their fakes with style mixing (StyleGAN sec. 3.1; reference
probability 0.9, crossover uniform in [1, 2 (lod + 1)]); the latent update does not mix, since its
target is one w. Every w drawn in training feeds the running average used for truncation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from alae.config import TrainConfig
from alae.distributed import average_gradients, global_randn, mean_over_ranks, world
from alae.nn import ALAE, Level
from alae.train import losses
from alae.train.ema import update_ema
from alae.train.precision import FP32, Precision


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


def _global_z(model: ALAE, n: int, device: torch.device) -> torch.Tensor:
    return global_randn(n, model.latent, device=device)  # this rank's slice of the global batch


class RankNoise:
    """G's per-pixel noise in training: this rank's slice of one draw for the global batch, so
    N processes together draw what one process would (one process: a plain `torch.randn`).
    The networks know nothing of data parallelism; the step hands them this source."""

    def draw(self, shape: Sequence[int], device=None, dtype=None) -> torch.Tensor:
        return global_randn(*shape, device=device, dtype=dtype)


RANK_NOISE = RankNoise()


def _track_w(model: ALAE, w: torch.Tensor) -> None:
    """Feed the running average of w the global batch's mean (equal local batches: the mean of
    the ranks' means), so `w_avg` is what one process would track."""
    model.track_w(mean_over_ranks(w.detach().to(model.w_avg.dtype).mean(0)))


def _step(precision: Precision, *optimizers: torch.optim.Optimizer) -> None:
    """Every rank applies the global batch's gradient (a no-op in one process)."""
    average_gradients(*optimizers)
    precision.step(*optimizers)


def crossover_styles(w1: torch.Tensor, w2: torch.Tensor, crossover: int,
                     num_styles: int) -> torch.Tensor:
    """(N, num_styles, latent): w1 on the style slots below `crossover`, w2 from it on (style
    mixing regularisation; the figures' `mix_styles` copies chosen slots instead)."""
    slot = torch.arange(num_styles, device=w1.device)[None, :, None]
    return torch.where(slot < crossover, w1[:, None], w2[:, None])


def sample_w(model: ALAE, n: int, device: torch.device, lod: int,
             mixing: float = 0.0) -> torch.Tensor:
    """w = F(z) for a fresh z, tracked into the running average; with probability `mixing` two
    such w crossed over at a slot drawn uniformly from [1, 2 (lod + 1)]."""
    w = model.mapping(_global_z(model, n, device))
    _track_w(model, w)
    if model.num_styles > 1 and mixing > 0 and torch.rand(()).item() < mixing:
        w2 = model.mapping(_global_z(model, n, device))
        _track_w(model, w2)
        crossover = int(torch.randint(1, 2 * (lod + 1) + 1, ()).item())
        w = crossover_styles(w, w2, crossover, model.num_styles)
    return w


def r1_weight(gamma: float, interval: int, step: int) -> float:
    """Lazy R1 (StyleGAN2): gamma * interval on every interval-th step, 0 in between (the same
    mean weight); interval 1 is the paper's R1 at every step."""
    return gamma * interval if step % interval == 0 else 0.0


def discriminator_step(model: ALAE, opt: Optimizers, real: torch.Tensor, r1_gamma: float,
                       level: Level, mixing: float = 0.0,
                       precision: Precision = FP32) -> torch.Tensor:
    """`r1_gamma` 0 skips the penalty for this step (lazy R1: the loop passes gamma * interval
    on every interval-th step and 0 in between)."""
    with torch.no_grad(), precision.autocast():
        fake = model.decode(sample_w(model, real.shape[0], real.device, level.lod, mixing), level,
                            RANK_NOISE)
    real = real.detach().requires_grad_(r1_gamma > 0)
    with precision.autocast(enabled=r1_gamma == 0):  # R1's double backward stays in fp32
        real_logits = model.score(real, level)
    with precision.autocast():
        fake_logits = model.score(fake, level)
    loss = losses.discriminator_loss(real_logits.float(), fake_logits.float())
    if r1_gamma > 0:
        loss = loss + losses.r1_penalty(real_logits, real, r1_gamma)
    opt.ed.zero_grad(set_to_none=True)
    precision.backward(loss)
    _step(precision, opt.ed)
    return loss.detach()


def generator_step(model: ALAE, opt: Optimizers, batch: int, device: torch.device,
                   level: Level, mixing: float = 0.0,
                   precision: Precision = FP32) -> torch.Tensor:
    # E and D are frozen: their weights are fixed targets and need no gradient buffers.
    _requires_grad([model.encoder, model.discriminator], False)
    try:
        with precision.autocast():
            fake = model.decode(sample_w(model, batch, device, level.lod, mixing), level,
                                RANK_NOISE)
            logits = model.score(fake, level)
        loss = losses.generator_loss(logits.float())
        opt.fg.zero_grad(set_to_none=True)
        precision.backward(loss)
        _step(precision, opt.fg)
    finally:
        _requires_grad([model.encoder, model.discriminator], True)
    return loss.detach()


def latent_step(model: ALAE, opt: Optimizers, batch: int, device: torch.device,
                level: Level, precision: Precision = FP32,
                d_zero_grad_step: bool = False) -> torch.Tensor:
    """`d_zero_grad_step` reproduces the authors' runs: on the torch 1.x they used, zero_grad()
    left D's gradients as zero tensors, so the E+D Adam also stepped D here with a zero gradient.
    With beta1 = 0 that step moves nothing, but it counts a step and decays D's second moment
    once more per batch, which makes D's real steps about sqrt(1 + beta2) ~ 1.4x larger."""
    with precision.autocast():
        w = sample_w(model, batch, device, level.lod)  # one w, not mixed: it is the target
        w_rec = model.encode(model.decode(w, level, RANK_NOISE), level)
    loss = losses.latent_loss(w_rec.float(), w.float())
    opt.ed.zero_grad(set_to_none=True)
    opt.fg.zero_grad(set_to_none=True)
    precision.backward(loss)
    if d_zero_grad_step:
        for p in model.discriminator.parameters():
            p.grad = torch.zeros_like(p)
    _step(precision, opt.ed, opt.fg)
    return loss.detach()


def train_step(model: ALAE, ema: ALAE, opt: Optimizers, real: torch.Tensor, level: Level,
               cfg: TrainConfig, step: int, precision: Precision = FP32) -> torch.Tensor:
    """One batch at `level`: the three updates, then the EMA. `real` is this rank's share of the
    global batch (at the level's resolution, blended for it); `step` counts batches from the
    run's start (lazy R1's phase). The level is recorded in the model's buffers (which the EMA
    copies and checkpoints store). Returns (loss_d, loss_g, lae), detached."""
    model.set_level(level)
    local = real.shape[0]
    r1 = r1_weight(cfg.r1_gamma, cfg.r1_interval, step)
    loss_d = discriminator_step(model, opt, real, r1, level, cfg.style_mixing, precision)
    loss_g = generator_step(model, opt, local, real.device, level, cfg.style_mixing, precision)
    lae = latent_step(model, opt, local, real.device, level, precision, cfg.d_zero_grad_step)
    update_ema(ema, model, local * world()[1], cfg.ema_kimg)  # the EMA counts global images
    return torch.stack([loss_d, loss_g, lae])
