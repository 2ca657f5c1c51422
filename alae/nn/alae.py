"""The four ALAE networks as one module (ALAE sec. 3): F maps z to w, G draws x from w,
E encodes x to w, D scores w. The discriminator is D∘E, the generator G∘F.

Two architectures (`model.kind`): `style`, the StyleALAE with progressive growing (sec. 4,
`alae.nn.style`), and `mlp`, the paper's MNIST MLP (sec. 5, `alae.nn.mlp`). The MLP has a single
level of detail, so a `Level` is accepted and ignored there.

The level of detail travels one way: a `Level` (the schedule's `Phase.level`). Training passes
it explicitly and works at the level's own resolution; `train_step` also records it in the
model's `lod`/`alpha` buffers (the EMA copies them, the checkpoint stores them). G and E always
take an explicit level; called without one, this module's methods use the recorded level at the
final resolution: what users of a model want.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import nn

from alae.config import ModelConfig
from alae.nn.layers import EqualConv2d, Noise
from alae.nn.mlp import EncoderMLP, GeneratorMLP, MappingD, MappingF
from alae.nn.style import StyleEncoder, StyleSynthesis, downsample, upsample

W_AVG_BETA = 0.995  # running average of w for the truncation trick (reference `dlatent_avg_beta`)


class Level(NamedTuple):
    """A level of detail: networks at 4 * 2**lod pixels, the newest level blended in by alpha
    (1 outside transitions)."""
    lod: int
    alpha: float = 1.0


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
        self.progressive = isinstance(synthesis, StyleSynthesis)
        self.num_levels = synthesis.levels if self.progressive else 1
        self.num_styles = synthesis.num_styles if self.progressive else 1
        self.register_buffer("w_avg", torch.zeros(latent))

    # --- levels of detail -------------------------------------------------------------------
    def level_resolution(self, lod: int) -> int:
        return self.resolution // 2 ** (self.num_levels - 1 - lod)

    @property
    def lod(self) -> int:
        """The level training has reached (the last one for an MLP or a fully grown model)."""
        return int(self.synthesis.lod) if self.progressive else 0

    def recorded_level(self) -> Level:
        """The level (and blend) training has reached, as `set_level` recorded it."""
        if not self.progressive:
            return Level(0)
        return Level(int(self.synthesis.lod), float(self.synthesis.alpha))

    @torch.no_grad()
    def set_level(self, level: Level) -> None:
        """Record the level training has reached: calls without a level then use it."""
        if self.progressive:
            for net in (self.synthesis, self.encoder):
                net.lod.fill_(level.lod)
                net.alpha.fill_(level.alpha)

    # --- the truncation trick ---------------------------------------------------------------
    @torch.no_grad()
    def track_w(self, w_mean: torch.Tensor) -> None:
        """Update the running average of w with the mean (latent,) of a batch of mapped latents."""
        self.w_avg.lerp_(w_mean, 1.0 - W_AVG_BETA)

    def truncate(self, w: torch.Tensor, psi: float, cutoff: Optional[int] = None) -> torch.Tensor:
        """lerp(w_avg, w, psi) on the first `cutoff` style slots (all when None): (N, S, latent)."""
        styles = w[:, None].expand(-1, self.num_styles, -1) if w.dim() == 2 else w
        slot = torch.arange(self.num_styles, device=w.device)[None, :, None]
        cut = self.num_styles if cutoff is None else cutoff
        coef = torch.where(slot < cut, psi, 1.0).to(styles.dtype)
        styles = torch.lerp(self.w_avg.to(styles.dtype).expand_as(styles), styles, coef)
        return styles if self.progressive else styles[:, 0]

    # --- what users of a trained model call -------------------------------------------------
    # `level`: None is the recorded level at the final resolution (see the module docstring).
    def generate(self, z: torch.Tensor, psi: Optional[float] = None, cutoff: Optional[int] = None,
                 level: Optional[Level] = None, noise: Noise = True) -> torch.Tensor:
        """G(F(z)); with `psi`, truncated towards the average w on the first `cutoff` styles."""
        w = self.mapping(z)
        if psi is not None:
            w = self.truncate(w, psi, cutoff)
        return self.decode(w, level, noise)

    def encode(self, x: torch.Tensor, level: Optional[Level] = None) -> torch.Tensor:
        """E(x); without a level, x at the final resolution is pooled to the recorded one."""
        if not self.progressive:
            return self.encoder(x)
        if level is None:
            level = self.recorded_level()
            x = downsample(x, x.shape[-1] // self.level_resolution(level.lod))
        return self.encoder(x, level.lod, level.alpha)

    def decode(self, w: torch.Tensor, level: Optional[Level] = None,
               noise: Noise = True) -> torch.Tensor:
        """G(w); without a level, the recorded one upsampled to the final resolution."""
        if not self.progressive:
            return self.synthesis(w)
        if level is not None:
            return self.synthesis(w, level.lod, level.alpha, noise=noise)
        level = self.recorded_level()
        image = self.synthesis(w, level.lod, level.alpha, noise=noise)
        return upsample(image, self.resolution // image.shape[-1])

    def reconstruct(self, x: torch.Tensor, noise: Noise = True) -> torch.Tensor:
        return self.decode(self.encode(x), noise=noise)

    def score(self, x: torch.Tensor, level: Optional[Level] = None) -> torch.Tensor:
        """Real/fake logit of images: D(E(x))."""
        return self.discriminator(self.encode(x, level))

    def generator_parameters(self) -> list[nn.Parameter]:
        return [*self.mapping.parameters(), *self.synthesis.parameters()]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.discriminator.parameters()]


def build_model(cfg: ModelConfig, channels: int, resolution: int) -> ALAE:
    if cfg.kind == "style":
        size = dict(latent=cfg.latent, channels=channels, resolution=resolution,
                    start=cfg.start_channels, maximum=cfg.max_channels)
        synthesis = StyleSynthesis(**size)
        encoder = StyleEncoder(**size, as_reference=cfg.encoder_as_reference)
    elif cfg.kind == "mlp":
        synthesis = GeneratorMLP(cfg.latent, cfg.hidden, channels, resolution)
        encoder = EncoderMLP(cfg.latent, cfg.hidden, channels, resolution)
    else:
        raise ValueError(f"model.kind {cfg.kind!r} is not known")
    model = ALAE(mapping=MappingF(cfg.latent, cfg.mapping_layers), synthesis=synthesis,
                 encoder=encoder, discriminator=MappingD(cfg.latent),
                 latent=cfg.latent, channels=channels, resolution=resolution)
    for layer in model.modules():
        if isinstance(layer, EqualConv2d):
            layer.fused = cfg.fused_resample
    return model
