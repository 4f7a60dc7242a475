"""Where work runs: whether torch sees an accelerator."""

from __future__ import annotations

import torch


def has_accelerator() -> bool:
    """Whether torch sees a GPU-like device; without one, accelerate needs ``cpu=True`` to run
    several CPU processes (torchrun) over gloo."""
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or torch.backends.mps.is_available() or bool(xpu and xpu.is_available())
