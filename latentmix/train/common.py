"""Helpers shared by the training loops: the split-batch accelerator, shift augmentation, EMA, divergence checks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latentmix.utils.device import has_accelerator


class FitWarning(UserWarning):
    """A fit's settings cannot converge as they are (a warm-up longer than the run, too few steps, …)."""


def warn(message: str) -> None:
    import warnings

    warnings.warn(message, FitWarning, stacklevel=3)


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; the run stopped (its last good checkpoint is kept)."""


def split_batch_accelerator(batch_size: int, seed: int, cpu: bool = False, mixed_precision: str = "no"):
    """An ``Accelerator`` whose prepared loaders split each **global** batch of ``batch_size`` between the
    processes and shuffle with a per-epoch seed (``loader.set_epoch``), so a resumed epoch repeats exactly."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    accelerator = Accelerator(
        cpu=cpu or not has_accelerator(),
        mixed_precision=mixed_precision,
        dataloader_config=DataLoaderConfiguration(split_batches=True, use_seedable_sampler=True, data_seed=seed),
    )
    if batch_size % accelerator.num_processes:
        raise ValueError(
            f"batch_size ({batch_size}) must be divisible by the number of processes ({accelerator.num_processes})"
        )
    return accelerator


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by its own random offset in [-max_shift, max_shift], replicating edges."""
    if max_shift == 0:
        return x
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (max_shift,) * 4, mode="replicate")
    off = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator, device=generator.device).to(x.device)
    rows = off[0][:, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = off[1][:, None] + torch.arange(w, device=x.device)  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def ema_decay(update: int, max_decay: float, warmup: bool = True) -> float:
    """The EMA decay of the ``update``-th update (counted from 0).

    With ``warmup`` (the default) it is diffusers' ``EMAModel`` schedule, ``min(max_decay, (1 + n) / (10 + n))``
    with n = ``update`` and the first update copying the weights: the average forgets the random initial
    weights at once, so a run of a few hundred steps saves trained weights. Without it the decay is
    ``max_decay`` from the first step (the initial weights keep ``max_decay ** steps`` of the average).
    """
    if not warmup:
        return max_decay
    if update <= 0:
        return 0.0
    return min(max_decay, (1 + update) / (10 + update))


def initial_weight_share(steps: int, max_decay: float, warmup: bool = True) -> float:
    """How much of an EMA after ``steps`` updates is still the initial weights (0 with warm-up)."""
    share = 1.0
    for n in range(steps):
        share *= ema_decay(n, max_decay, warmup)
        if share == 0.0:
            break
    return share


@torch.no_grad()
def ema_update(ema: torch.nn.Module, live: torch.nn.Module, decay: float) -> None:
    """Move ``ema``'s weights towards ``live``'s by ``1 - decay``; copy buffers."""
    for pe, pl in zip(ema.parameters(), live.parameters(), strict=True):
        pe.lerp_(pl.detach().to(pe.dtype), 1.0 - decay)
    for be, bl in zip(ema.buffers(), live.buffers(), strict=True):
        be.copy_(bl)


def check_finite_loss(loss: torch.Tensor, step: int, checkpoint_dir: Path | None = None, what: str = "loss") -> None:
    """Stop a run whose loss became NaN or infinite, with one line naming the step (and the checkpoint kept)."""
    value = float(loss.detach())
    if not math.isfinite(value):
        kept = f"; the last good checkpoint is kept in {checkpoint_dir}" if checkpoint_dir is not None else ""
        raise TrainingDiverged(
            f"training diverged: the {what} became {value} at step {step} (lower the learning rate?){kept}"
        )


@dataclass
class FitResult:
    """What a ``fit_*`` function returns: the fitted backend (or model), its measured metrics, where it was saved."""

    backend: Any
    metrics: dict[str, Any]
    out: Path | None = None
