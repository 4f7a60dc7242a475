"""Training recipes of the field for the classifier trainer: the optimiser (AdamW, or SGD with momentum and
Nesterov), linear warm-up then cosine decay, and an exponential moving average of the weights (torch's
``AveragedModel`` with its EMA averaging function, buffers included)."""

from __future__ import annotations

import math

import torch
from torch import nn

from latentmix.configs import TrainConfig


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The optimiser of ``config`` over ``model``'s trainable parameters (frozen ones are left out)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (everything is frozen)")
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                               weight_decay=config.weight_decay)  # fmt: skip
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """The learning-rate multiplier at optimiser step ``step`` (0-based) of ``total``: ``(step + 1) / warmup``
    during the warm-up, then a cosine from 1 to 0 over the remaining steps."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup, span) / span))


def build_ema(config: TrainConfig, model: nn.Module) -> torch.optim.swa_utils.AveragedModel | None:
    """An EMA of ``model``'s weights and buffers with ``config.ema``'s decay (None when off)."""
    if config.ema is None:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)
    ema.requires_grad_(False)
    return ema
