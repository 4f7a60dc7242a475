"""Model CPU offload (``--cpu-offload``): every network of a backend waits on the CPU and moves to the accelerator
when it runs, the others going back to the CPU first — what diffusers' ``enable_model_cpu_offload`` does, through
accelerate's hooks (:class:`accelerate.hooks.CpuOffload`).

diffusers chains the hooks in its pipelines' one order (text encoder → UNet → VAE); a backend runs its networks in
several orders (inversion: VAE → text encoder → UNet; a walk: text encoder → UNet → VAE, over and over), so here
each hook moves *every* other network of the backend off the accelerator before its own runs: at most one network
is on the accelerator at a time. The VAE's ``encode`` / ``decode`` reach their hook through diffusers'
``apply_forward_hook``, as in the pipelines. Peak accelerator memory is then that of the largest network and its
activations, at the price of one transfer per network change (once per call, not per UNet step: the UNet stays
while it denoises).
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate.hooks import CpuOffload, add_hook_to_module, remove_hook_from_module
from torch import nn

CPU = torch.device("cpu")


class ExclusiveOffload(CpuOffload):
    """accelerate's CPU-offload hook that first moves every other module of its ``group`` back to the CPU."""

    def __init__(self, execution_device: torch.device, group: list[nn.Module]):
        super().__init__(execution_device=execution_device)
        self.group = group

    def pre_forward(self, module: nn.Module, *args, **kwargs):
        moved = False
        for other in self.group:
            if other is not module and next(other.parameters()).device != CPU:
                other.to(CPU)
                moved = True
        if moved and self.execution_device.type == "cuda":
            torch.cuda.empty_cache()
        return super().pre_forward(module, *args, **kwargs)


def enable_cpu_offload(backend: Any, device: torch.device | str) -> None:
    """Offload ``backend``'s networks to the CPU, each moved to ``device`` when it runs (see the module docstring);
    ``backend.device`` is then ``device``, where its inputs are made."""
    device = torch.device(device)
    modules = list(dict.fromkeys(backend.modules().values()))
    disable_cpu_offload(backend)
    backend.to(CPU)
    for module in modules:
        add_hook_to_module(module, ExclusiveOffload(device, modules), append=True)
    for part in (backend, backend.first_stage):
        if part is not None:
            part.execution_device = device


def disable_cpu_offload(backend: Any) -> None:
    """Remove the hooks of :func:`enable_cpu_offload` (the networks stay where they are)."""
    for module in backend.modules().values():
        if isinstance(getattr(module, "_hf_hook", None), ExclusiveOffload):
            remove_hook_from_module(module)
    for part in (backend, backend.first_stage):
        if part is not None:
            part.execution_device = None
