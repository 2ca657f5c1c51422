"""Adversarial Latent Autoencoders (Pidhorskyi et al., CVPR 2020) as a reproducible pipeline."""

__version__ = "0.1.0"
