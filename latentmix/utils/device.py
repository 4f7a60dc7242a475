"""Where work runs: whether torch sees an accelerator, and the device a ``--device`` setting names."""

from __future__ import annotations

import torch


def has_accelerator() -> bool:
    """Whether torch sees a GPU-like device; without one, accelerate needs ``cpu=True`` to run
    several CPU processes (torchrun) over gloo."""
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or torch.backends.mps.is_available() or bool(xpu and xpu.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device ``name`` means on this machine (``auto``: CUDA, then MPS, then the CPU); a device this machine
    lacks is a ValueError naming it."""
    from latentmix.utils.validation import device_name

    kind = device_name(name).partition(":")[0]
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if torch.backends.mps.is_available() else torch.device("cpu")
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
        "xpu": bool(getattr(torch, "xpu", None) and torch.xpu.is_available()),
    }
    if not available[kind]:
        raise ValueError(
            f"device: {name} is not available on this machine (torch {torch.__version__}); use cpu or auto"
        )
    return torch.device(name)
