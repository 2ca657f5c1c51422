"""Test doubles for the metrics: a model whose answers are known by hand, and the real splits."""
from __future__ import annotations

import torch

from alae.data import eval_batches


class Double(torch.nn.Module):
    """The model interface (latent, resolution, channels, generate, reconstruct, encode) with
    behaviour chosen per test: `generate` replays `bank` in order, or returns uniform noise from
    the global RNG ("noise"), or a fixed random function of z ("z")."""

    def __init__(self, resolution: int, bank=None, gen="noise", rec="identity"):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))   # device lookup only
        self.latent, self.resolution, self.channels = 8, resolution, 1
        self.bank, self.gen, self.rec, self.cursor = bank, gen, rec, 0
        self.proj = torch.randn(8, resolution * resolution,
                                generator=torch.Generator().manual_seed(1))

    def generate(self, z, noise=True):
        if self.bank is None and self.gen == "noise":  # global RNG: evaluate_model must seed it
            return torch.rand(len(z), 1, self.resolution, self.resolution) * 2 - 1
        if self.bank is None:
            return torch.tanh(z @ self.proj).view(len(z), 1, self.resolution, self.resolution)
        out = self.bank[self.cursor:self.cursor + len(z)]
        self.cursor += len(z)
        return out

    def reconstruct(self, x, noise=True):
        if self.rec == "noisy":  # like G's per-pixel noise: the global RNG
            return x + 0.1 * torch.randn_like(x)
        return x.clone() if self.rec == "identity" else torch.zeros_like(x)

    def encode(self, x):
        return torch.zeros(len(x), self.latent)


def load_test_split(shards, resolution) -> torch.Tensor:
    return torch.cat([x for x, _ in eval_batches(shards, "test", resolution, 1000)])


def load_train_split(shards, resolution, n) -> torch.Tensor:
    return torch.cat([x for x, _ in eval_batches(shards, "train", resolution, 1000, n)])
