"""One writer per output: an exclusive lock beside every directory a job writes.

Every job that writes a folder (``synthesize``, ``walk``, ``edit``, ``export``, ``augment``, ``fit ...``,
``train --checkpoint-dir / --save-model``, and every model save) holds ``fcntl.flock`` on a hidden ``.D.lock``
file beside its folder ``D`` for as long as it writes. A second run on the same output is refused at once,
with the first one's process id; the lock is the kernel's, so it vanishes with its process — a run killed with
``kill -9`` leaves no stale lock to block its resume. (Under ``torchrun`` the main process holds it.)
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: the locks held here, by (lock file, thread), and how many blocks hold each: a job that saves a model inside its
#: own output takes the lock again, and that is the same writer; another thread is another writer (flock, taken
#: through its own file descriptor, refuses it)
_HELD: dict[tuple[Path, int], int] = {}


def lock_path(target: str | os.PathLike) -> Path:
    target = Path(target).expanduser().resolve()
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def exclusive(target: str | os.PathLike, what: str = "output") -> Iterator[None]:
    """Hold the lock of ``target`` inside the block, or raise ``ValueError`` if another run (or another thread)
    holds it; the thread holding it already may take it again."""
    try:
        import fcntl
    except ImportError:  # no flock on this platform: nothing to hold
        yield
        return
    path = lock_path(target)
    key = (path, threading.get_ident())
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise ValueError(
                f"{what} {target} is being written by another latentmix run (process {holder}); wait for it to "
                "finish or choose another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _HELD[key] = 1
        try:
            yield
        finally:
            del _HELD[key]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def writer_lock(target: str | os.PathLike | None, what: str = "output") -> contextlib.AbstractContextManager:
    """:func:`exclusive` on the main process (the one that writes), a no-op elsewhere or without a target."""
    if target is None:
        return contextlib.nullcontext()
    main = int(os.environ.get("RANK", "0")) == 0  # torchrun / accelerate launch set RANK; a plain run is rank 0
    return exclusive(target, what) if main else contextlib.nullcontext()


def holds_outputs(targets: Callable[..., list], check: Callable[..., Any] | None = None) -> Callable:
    """Decorator: hold the writer lock of every path ``targets(**arguments)`` names while the function runs;
    ``check(**arguments)``, when given, runs first (bad settings are refused before the lock file is made)."""

    def decorate(fn: Callable) -> Callable:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            if check is not None:
                check(**bound.arguments)
            with contextlib.ExitStack() as stack:
                for target in targets(**bound.arguments):
                    stack.enter_context(writer_lock(target))
                return fn(*args, **kwargs)

        return wrapper

    return decorate
