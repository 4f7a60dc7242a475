"""Crash-safe writes: a file or directory appears whole, by rename, or not at all.

Every writer in latentmix (models, datasets, images, checkpoints, reports) goes through these, so an
interrupted or failing write (a kill, a full disk) never leaves a half-written file that looks whole;
what it leaves is a hidden ``.NAME.tmp-*`` temporary.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save


def tmp_name(path: Path) -> Path:
    """A hidden temporary beside ``path`` (same filesystem, so the final rename is atomic)."""
    path = Path(path)
    return path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"


@contextmanager
def atomic_file(path: Path, mode: str = "wb"):
    """Open a hidden temporary beside ``path``; on success fsync it and rename it to ``path``.

    If the block raises, ``path`` is untouched and the temporary is removed.
    """
    path = Path(path)
    tmp = tmp_name(path)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_save_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in tensors.items()}))


def replace_dir(tmp: Path, target: Path) -> None:
    """Move a finished directory into place, replacing an older version of it."""
    if target.exists():
        old = tmp_name(target)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def atomic_directory(
    target: Path, write: Callable[[Path], None], *, marker: str = "latentmix_backend", config: str = "config.json"
) -> Path:
    """Call ``write(tmp_dir)`` and move the finished directory to ``target`` in one rename.

    An interrupted save leaves a hidden ``.tmp-*`` directory, never a half-written ``target``.
    An existing ``target`` is replaced only if it is empty or a saved model (its config.json
    names ``marker``); anything else is refused, so no user files are lost. ``config`` is the file a saved model's
    directory holds.
    """
    target = Path(target)
    if target.exists():
        if not target.is_dir():
            raise ValueError(f"save directory {target} exists and is not a directory")
        cfg = target / config
        is_saved = cfg.is_file() and marker in cfg.read_text(encoding="utf-8", errors="replace")
        if any(target.iterdir()) and not is_saved:
            raise ValueError(
                f"save directory {target} is not empty and does not hold a saved latentmix model; choose another"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(target)
    tmp.mkdir()
    try:
        write(tmp)
        replace_dir(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
