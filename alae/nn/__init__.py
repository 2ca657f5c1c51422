"""Networks: equalized-lr layers, the MLP ALAE, and the four networks assembled as one module."""
from alae.nn.alae import ALAE, Level, build_model

__all__ = ["ALAE", "Level", "build_model"]
