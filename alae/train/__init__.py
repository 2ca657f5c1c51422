"""ALAE training: pure losses, the three named updates, and the loop that drives them."""
