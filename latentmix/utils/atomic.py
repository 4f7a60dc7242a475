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
from typing import Any

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


def atomic_save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata))


def replace_dir(tmp: Path, target: Path) -> None:
    """Move a finished directory into place, replacing an older version of it."""
    if target.exists():
        old = tmp_name(target)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def refuse_existing_output(out: str | os.PathLike, name: str = "out") -> Path:
    """``out`` as a Path, refused unless it is new or an empty directory (a job that writes a new folder)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{name}: {out} exists and is not an empty directory; choose a new one")
    return out


def check_new_output(config: Any, **_: Any) -> None:
    """A job's settings are valid and its ``out`` is new or empty: what is refused before its writer lock is taken
    (``holds_outputs(..., check=check_new_output)``)."""
    config.validate()
    refuse_existing_output(config.out)


def _state(target: Path) -> tuple | None:
    """What ``target`` holds, to tell whether anything changed it: None if absent, else every entry's relative
    path, size and modification time."""
    if not target.exists():
        return None
    if not target.is_dir():
        return ("file",)
    entries = []
    for here, dirs, files in os.walk(target):
        for name in sorted(dirs) + sorted(files):
            path = Path(here) / name
            info = path.lstat()
            entries.append((str(path.relative_to(target)), info.st_size, info.st_mtime_ns))
    return tuple(sorted(entries))


def remove_stale_temporaries(target: Path) -> None:
    """Remove the hidden ``.NAME.tmp-*`` temporaries a killed writer of ``target`` left beside it (call with the
    writer lock held: no other writer of ``target`` is running)."""
    for stale in Path(target).parent.glob(f".{Path(target).name}.tmp-*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def atomic_directory(
    target: Path, write: Callable[[Path], None], *, marker: str = "latentmix_backend", config: str = "config.json"
) -> Path:
    """Call ``write(tmp_dir)`` and move the finished directory to ``target`` in one rename, holding ``target``'s
    writer lock (:mod:`latentmix.utils.locks`) throughout.

    An interrupted save leaves a hidden ``.tmp-*`` directory, never a half-written ``target`` (and the next save
    to ``target`` removes it). An existing ``target`` is replaced only if it is empty or a saved model (its
    config.json names ``marker``); anything else is refused, so no user files are lost. ``config`` is the file a
    saved model's directory holds. If anything changes ``target`` while this one writes, nothing there is
    replaced or removed: the finished output is kept beside it, and the ValueError names both.
    """
    from latentmix.utils.locks import writer_lock

    target = Path(target)
    with writer_lock(target, "out"):
        before = _state(target)
        if before is not None:
            if not target.is_dir():
                raise ValueError(f"save directory {target} exists and is not a directory")
            cfg = target / config
            is_saved = cfg.is_file() and marker in cfg.read_text(encoding="utf-8", errors="replace")
            if before and not is_saved:
                raise ValueError(
                    f"save directory {target} is not empty and does not hold a saved latentmix model; choose another"
                )
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        tmp = tmp_name(target)
        tmp.mkdir()
        try:
            write(tmp)
            if _state(target) != before:
                kept = target.parent / f"{target.name}.new-{uuid.uuid4().hex[:8]}"
                os.replace(tmp, kept)
                raise ValueError(
                    f"out {target} changed while this run wrote it (another program wrote there); nothing in it was "
                    f"replaced or removed, and this run's output is in {kept}"
                )
            if before is None:
                os.replace(tmp, target)  # a folder made there since would make this fail, not vanish
            elif not before:
                os.rmdir(target)  # fails, deleting nothing, if anything appeared in it
                os.replace(tmp, target)
            else:
                replace_dir(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target
