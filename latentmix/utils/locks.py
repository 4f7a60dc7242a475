"""One writer per output: an exclusive lock beside every directory a job writes.

``synthesize --out D``, ``fit ... --out D`` and ``train --checkpoint-dir D`` hold ``fcntl.flock`` on a hidden
``.D.lock`` file beside ``D`` for as long as they write. A second run on the same output is refused at once,
with the first one's process id; the lock is the kernel's, so it vanishes with its process — a run killed with
``kill -9`` leaves no stale lock to block its resume. (Under ``torchrun`` the main process holds it.)
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def lock_path(target: str | os.PathLike) -> Path:
    target = Path(target).expanduser().resolve()
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def exclusive(target: str | os.PathLike, what: str = "output") -> Iterator[None]:
    """Hold the lock of ``target`` inside the block, or raise ``ValueError`` if another run holds it."""
    try:
        import fcntl
    except ImportError:  # no flock on this platform: nothing to hold
        yield
        return
    path = lock_path(target)
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
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def writer_lock(target: str | os.PathLike | None, what: str = "output") -> contextlib.AbstractContextManager:
    """:func:`exclusive` on the main process (the one that writes), a no-op elsewhere or without a target."""
    if target is None:
        return contextlib.nullcontext()
    main = int(os.environ.get("RANK", "0")) == 0  # torchrun / accelerate launch set RANK; a plain run is rank 0
    return exclusive(target, what) if main else contextlib.nullcontext()


def holds_outputs(targets: Callable[..., list]) -> Callable:
    """Decorator: hold the writer lock of every path ``targets(**arguments)`` names while the function runs."""

    def decorate(fn: Callable) -> Callable:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            with contextlib.ExitStack() as stack:
                for target in targets(**bound.arguments):
                    stack.enter_context(writer_lock(target))
                return fn(*args, **kwargs)

        return wrapper

    return decorate
