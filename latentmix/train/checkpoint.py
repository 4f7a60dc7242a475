"""Training-state checkpoints: one file, written atomically, that a restarted run resumes from.

Every loop that resumes (``fit gan``, ``fit ldm``, ``train --checkpoint-dir``) saves its state here as
**one** safetensors file, ``state.safetensors``: the tensors (weights, EMA, optimiser moments, RNG
states) and, in the file's header metadata, the run's identity (its settings,
:func:`latentmix.configs.options.identity`), its progress and the latentmix version. One file written by one
rename is one unit: a kill at any moment leaves the previous checkpoint or the new one, never the new weights
with the old progress.

A run restarted with other settings is refused (naming what differs); the directory's path is not part of
the identity, however it is spelled.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from latentmix.configs.options import identity
from latentmix.utils.atomic import atomic_write_bytes
from latentmix.version import __version__

STATE_FILE = "state.safetensors"
LEGACY_STATE = "state.json"  # latentmix < 0.2 wrote the progress beside the tensors, in a second file
_META_KEY = "latentmix_state"


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``tensors`` by name and ``progress`` (what the loop saved: step, epoch, …)."""

    tensors: dict[str, Tensor]
    progress: dict[str, Any]


def save_checkpoint(
    directory: str | os.PathLike, config: Any, tensors: dict[str, Tensor], progress: dict[str, Any]
) -> Path:
    """Write ``tensors`` and ``progress`` for the run ``config`` as one file, atomically."""
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"identity": identity(config), "progress": progress, "latentmix_version": __version__}
    blob = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata={_META_KEY: json.dumps(meta)})
    path = directory / STATE_FILE
    atomic_write_bytes(path, blob)
    return path


def read_meta(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The header metadata of a checkpoint (identity, progress, version), or None where there is none."""
    directory = Path(directory)
    path = directory / STATE_FILE
    if not path.is_file():
        if (directory / LEGACY_STATE).is_file():
            raise ValueError(
                f"{directory} holds a checkpoint written by latentmix < 0.2 (state.json); it cannot be resumed "
                "exactly: delete it or choose another directory"
            )
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(_META_KEY)
    except Exception as exc:  # a damaged file: say so in one line
        raise ValueError(f"checkpoint {path} is not readable ({type(exc).__name__}); delete it to start over") from None
    if raw is None:
        raise ValueError(f"checkpoint {path} has no latentmix metadata; delete it to start over")
    return json.loads(raw)


def load_checkpoint(directory: str | os.PathLike, config: Any) -> Checkpoint | None:
    """The checkpoint of the run ``config`` in ``directory``; None if there is none yet.

    Raises ``ValueError`` if the checkpoint belongs to a run with other settings.
    """
    meta = read_meta(directory)
    if meta is None:
        return None
    saved, now = meta["identity"], identity(config)
    differ = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if differ:
        shown = ", ".join(f"{k}: {saved.get(k)!r} there vs {now.get(k)!r} now" for k in differ[:3])
        raise ValueError(f"{directory} holds a run with other settings ({shown}); use another directory or delete it")
    from safetensors.torch import load_file

    return Checkpoint(load_file(str(Path(directory) / STATE_FILE)), meta["progress"])


# -- what goes into a checkpoint ---------------------------------------------------------------------------


def module_tensors(prefix: str, module: torch.nn.Module) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu() for k, v in module.state_dict().items()}


def load_module(module: torch.nn.Module, tensors: dict[str, Tensor], prefix: str) -> None:
    n = len(prefix) + 1
    module.load_state_dict({k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> dict[str, Tensor]:
    """An optimizer's per-parameter state (Adam moments, steps) as flat tensors for safetensors."""
    return {
        f"{prefix}.{pid}.{k}": torch.as_tensor(v).detach().cpu().contiguous()
        for pid, state in opt.state_dict()["state"].items()
        for k, v in state.items()
    }


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], prefix: str) -> None:
    """Inverse of :func:`optimizer_tensors` (the param groups stay as the optimizer was built)."""
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            pid, k = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(pid), {})[k] = value
    sd = opt.state_dict()
    sd["state"] = state
    opt.load_state_dict(sd)


def rng_tensors(generators: dict[str, torch.Generator], *, include_global: bool = True) -> dict[str, Tensor]:
    """The states of named generators (and torch's global one, which dropout draws from)."""
    out = {f"rng.{name}": gen.get_state() for name, gen in generators.items()}
    if include_global:
        out["rng.global"] = torch.get_rng_state()
    return out


def load_rng(generators: dict[str, torch.Generator], tensors: dict[str, Tensor]) -> None:
    for name, gen in generators.items():
        gen.set_state(tensors[f"rng.{name}"])
    if "rng.global" in tensors:
        torch.set_rng_state(tensors["rng.global"])
