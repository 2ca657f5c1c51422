"""What a configuration costs to train, before it runs: floating-point operations per image at
each level of detail, counted by running one real training step on the meta device (shapes only:
no memory, no arithmetic), summed over the schedule, and divided by this machine's measured
matmul rate. Training never runs at the matmul rate (`make bench` puts the default StyleALAE at
7-19% of it on a 2-core CPU), so the time is a lower bound: `alae preset` warns when even that
is more than an hour."""
from __future__ import annotations

import time
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from alae.config import Params
from alae.nn.alae import Level, build_model
from alae.train.schedule import Schedule
from alae.train.steps import Optimizers, discriminator_step, generator_step, latent_step


class FlopCount(TorchDispatchMode):
    """Adds up torch's FLOP formulas (matmuls, convolutions and their gradients, double backward
    included) of every op run inside it, in `flops`. torch's FlopCounterMode cannot be used on the
    meta device: its per-module tracker fails inside `torch.no_grad` (D's step decodes its fakes
    without a graph). `make bench` counts with it too."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.flops += count(*args, **kwargs, out_val=out)
        return out


class _NoStep:
    """An optimizer that only clears gradients: what a step computes is not counted."""

    param_groups: list = []

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass

    def step(self) -> None:
        pass


def level_flops(params: Params, device: str = "meta") -> list[float]:
    """FLOPs of one training step per image (D's step, with R1 every `train.r1_interval` steps
    when `train.r1_gamma` > 0; G's step; the latent step; without style mixing, which adds one
    mapping pass) at each level of detail, stable. On `device` meta nothing is computed."""
    p = params
    meta = torch.device(device)
    with meta:
        model = build_model(p.model, p.data.channels, p.data.resolution)
    opt = Optimizers(_NoStep(), _NoStep())   # Adam's elementwise updates count no FLOPs
    flops = []
    for lod in range(model.num_levels):
        level = Level(lod)
        model.set_level(level)
        size = model.level_resolution(lod)
        real = torch.empty(1, p.data.channels, size, size, device=meta)
        with FlopCount() as d:
            discriminator_step(model, opt, real, 0.0, level)
        with FlopCount() as g:
            generator_step(model, opt, 1, meta, level)
            latent_step(model, opt, 1, meta, level)
        r1 = 0.0
        if p.train.r1_gamma > 0:
            with FlopCount() as d_r1:
                discriminator_step(model, opt, real, 1.0, level)
            r1 = (d_r1.flops - d.flops) / p.train.r1_interval
        flops.append(d.flops + g.flops + r1)
    return flops


def training_flops(params: Params) -> float:
    """FLOPs of the whole run: each level's per-image cost times the images the schedule shows
    at that level (`train.kimg` in all)."""
    per_level = level_flops(params)
    schedule = Schedule.from_params(params, len(per_level))
    total = round(params.train.kimg * 1000)
    starts = [min(schedule.level_start(lod), total) for lod in range(len(per_level))] + [total]
    return float(sum(f * (starts[i + 1] - starts[i]) for i, f in enumerate(per_level)))


def matmul_rate(seconds: float = 0.3, size: int = 512) -> float:
    """FLOP/s of float32 matrix products on this machine, all threads torch uses."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b   # warm-up
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        a @ b
        n += 1
    return 2 * size ** 3 * n / elapsed


def min_training_hours(params: Params) -> tuple[float, float]:
    """(hours at least, measured GFLOP/s): the run's FLOPs at this machine's matmul rate."""
    rate = matmul_rate()
    return training_flops(params) / rate / 3600, rate / 1e9
