"""Networks: equalized-lr layers, the MLP ALAE, and the four networks assembled as one module."""
from alae.nn.alae import ALAE, build_model

__all__ = ["ALAE", "build_model"]
