"""The four ALAE networks as one module (ALAE sec. 3): F maps z to w, G draws x from w,
E encodes x to w, D scores w. The discriminator is D∘E, the generator G∘F.
"""
from __future__ import annotations

import torch
from torch import nn

from alae.config import ModelConfig
from alae.nn.mlp import EncoderMLP, GeneratorMLP, MappingD, MappingF


class ALAE(nn.Module):
    def __init__(self, mapping: nn.Module, synthesis: nn.Module, encoder: nn.Module,
                 discriminator: nn.Module, latent: int, channels: int, resolution: int):
        super().__init__()
        self.mapping = mapping              # F
        self.synthesis = synthesis          # G
        self.encoder = encoder              # E
        self.discriminator = discriminator  # D
        self.latent = latent
        self.channels = channels
        self.resolution = resolution

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return self.synthesis(self.mapping(z))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, w: torch.Tensor) -> torch.Tensor:
        return self.synthesis(w)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.synthesis(self.encoder(x))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Real/fake logit of images: D(E(x))."""
        return self.discriminator(self.encoder(x))

    def generator_parameters(self) -> list[nn.Parameter]:
        return [*self.mapping.parameters(), *self.synthesis.parameters()]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.discriminator.parameters()]


def build_model(cfg: ModelConfig, channels: int, resolution: int) -> ALAE:
    if cfg.kind != "mlp":
        raise ValueError(f"model.kind {cfg.kind!r} is not built yet")
    return ALAE(
        mapping=MappingF(cfg.latent, cfg.mapping_layers),
        synthesis=GeneratorMLP(cfg.latent, cfg.hidden, channels, resolution),
        encoder=EncoderMLP(cfg.latent, cfg.hidden, channels, resolution),
        discriminator=MappingD(cfg.latent),
        latent=cfg.latent, channels=channels, resolution=resolution,
    )
