"""Helpers shared by the training loops: device detection, shift augmentation, EMA, optimizer state."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch


def has_accelerator() -> bool:
    """Whether torch sees a GPU-like device; without one, accelerate needs ``cpu=True`` to run
    several CPU processes (torchrun) over gloo."""
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or torch.backends.mps.is_available() or bool(xpu and xpu.is_available())


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


@torch.no_grad()
def ema_update(ema: torch.nn.Module, live: torch.nn.Module, decay: float) -> None:
    """Move ``ema``'s weights towards ``live``'s by ``1 - decay``; copy buffers."""
    for pe, pl in zip(ema.parameters(), live.parameters()):
        pe.lerp_(pl.detach().to(pe.dtype), 1.0 - decay)
    for be, bl in zip(ema.buffers(), live.buffers()):
        be.copy_(bl)


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> dict[str, torch.Tensor]:
    """An optimizer's per-parameter state (Adam moments, steps) as flat tensors for safetensors."""
    return {
        f"{prefix}.{pid}.{k}": torch.as_tensor(v).detach().cpu().contiguous()
        for pid, state in opt.state_dict()["state"].items()
        for k, v in state.items()
    }


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str) -> None:
    """Inverse of :func:`optimizer_tensors` (the param groups stay as the optimizer was built)."""
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            pid, k = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(pid), {})[k] = value
    sd = opt.state_dict()
    sd["state"] = state
    opt.load_state_dict(sd)


def resume_state(out, config) -> tuple[Path, dict | None]:
    """The training-state directory of a run saving to ``out`` (``<out>.train``) and its saved
    ``state.json`` when there is a run to resume (None otherwise); raise if that run was started
    with other settings."""
    train_dir = Path(str(out) + ".train")
    state_file = train_dir / "state.json"
    if not state_file.is_file():
        return train_dir, None
    saved = json.loads(state_file.read_text())
    now = json.loads(json.dumps(asdict(config)))  # tuples as lists, as they were saved
    differ = [k for k, v in now.items() if saved["config"].get(k) != v]
    if differ:
        raise ValueError(
            f"{train_dir} holds a run with other settings ({', '.join(differ)}); use another --out or delete it"
        )
    return train_dir, saved


def metrics_table(metrics: dict) -> list[str]:
    """Markdown rows of a model card's metrics table (floats to 5 significant digits)."""
    return ["| metric | value |", "|---|---|"] + [
        f"| {k} | {v:.5g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()
    ]
