"""Adversarial Latent Autoencoders (Pidhorskyi et al., CVPR 2020) as a reproducible pipeline."""
import time as _time

__version__ = "0.1.0"

# When this process first imported the package: a stage's clock (alae.tracking logs each stage's
# wall time from here, so its imports of torch and its work before opening the run count too).
STARTED = _time.monotonic()
