"""Numeric precision of the three updates (`train.precision`).

- fp32: plain.
- bf16: autocast to bfloat16 for the matrix work (GPUs; CPUs with AMX or AVX-512-BF16; on other
  CPUs it is emulated and slower), no loss scaling needed (bf16 has fp32's exponent range).
- fp16: autocast to float16 with a dynamic gradient scaler, CUDA only.

What must stay fp32 does: the losses take fp32 logits, and the real images' forward pass that
the R1 penalty differentiates twice runs outside autocast, so |grad_x D(E(x))|^2 is neither
underflowed nor rounded to 8 bits of mantissa.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

from alae.errors import UserError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    def __init__(self, name: str = "fp32", device: torch.device = torch.device("cpu")):
        if name not in DTYPES:
            raise UserError(f"train.precision: {name!r} is not one of {', '.join(DTYPES)}")
        if name == "fp16" and device.type != "cuda":
            raise UserError(f"train.precision: fp16 needs a CUDA device (training runs on "
                            f"{device}); use bf16 or fp32")
        self.name, self.device, self.dtype = name, device, DTYPES[name]
        self.scaler: Optional[torch.amp.GradScaler] = (
            torch.amp.GradScaler("cuda") if name == "fp16" else None)

    def autocast(self, enabled: bool = True):
        if self.dtype is None or not enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, *optimizers: torch.optim.Optimizer) -> None:
        """Step each optimizer (through the scaler under fp16: its gradients are still scaled)."""
        for opt in optimizers:
            if self.scaler is not None:
                self.scaler.step(opt)  # skips the step when the scaled gradients overflowed
            else:
                opt.step()
        if self.scaler is not None:
            self.scaler.update()


FP32 = Precision()
