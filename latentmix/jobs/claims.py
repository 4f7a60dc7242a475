"""Several processes on one synthesis run without long collective waits: shard claims and a shared source cache.

* **Claims.** A process takes a shard by creating ``shards/NNNNNN.claim`` atomically (``O_CREAT | O_EXCL``): the
  first to create it makes the shard, the others move on, so a free process takes the next shard whoever it is
  (a resume whose remaining shards are skewed keeps every process busy). A run starts by clearing the claims of
  earlier runs: a process that died leaves its claim, which the next run takes over.
* **Waiting on files, not on the process group.** The end of a run and the shared encoding wait by polling the
  files they need (:func:`wait_for`), so a process with nothing left to do can wait longer than the process
  group's timeout while another still works or merges.
* **Sources encoded once.** :class:`SourceCache` splits the encoding of the sources into chunks: each process
  encodes the chunks that fall to it (chunk ``c`` to process ``c mod N``) and saves them under
  ``.latentmix-sources/<key>/``, then reads every chunk; the key is a hash of the run's identity, so a resume or
  an extension of the set reuses them. N processes do the encoding of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from latentmix.data.synthetic_formats import SHARDS
from latentmix.utils.atomic import atomic_save_safetensors

SOURCES = ".latentmix-sources"
POLL_SECONDS = 0.2


def claim_path(root: Path, shard: int) -> Path:
    return root / SHARDS / f"{shard:06d}.claim"


def clear_claims(root: Path) -> None:
    """Remove every claim (earlier runs', a dead process's): called once, by the main process, as a run starts."""
    for path in (root / SHARDS).glob("*.claim"):
        path.unlink(missing_ok=True)


def claim(root: Path, shard: int, rank: int) -> bool:
    """Take ``shard`` for this process; False if another process holds it."""
    try:
        fd = os.open(claim_path(root, shard), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps({"rank": rank, "pid": os.getpid()}) + "\n")
    return True


def release(root: Path, shard: int) -> None:
    """Drop a finished shard's claim (its completion marker now says it is done)."""
    claim_path(root, shard).unlink(missing_ok=True)


def wait_for(ready: Callable[[], bool], poll: float = POLL_SECONDS) -> None:
    """Poll until ``ready()``: a wait that no process group's timeout cuts short (a peer that dies ends the run
    through its launcher)."""
    while not ready():
        time.sleep(poll)


class SourceCache:
    """Encoded sources shared by the processes of a run; see the module docstring.

    Args:
        root: the run's output directory.
        identity: the run's identity (what the cached encodings depend on).
        rank, world: this process's index and the number of processes.
    """

    def __init__(self, root: Path, identity: dict, rank: int = 0, world: int = 1):
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        self.directory = Path(root) / SOURCES / key
        self.rank, self.world = rank, world
        #: chunks this process encoded (the others were read from the cache)
        self.encoded_chunks = 0

    def chunks(self, name: str, count: int, encode: Callable[[int], Tensor]) -> Tensor:
        """The ``count`` chunks of ``name`` (``encode(c)`` makes chunk c), concatenated: this process encodes the
        missing chunks that fall to it, then waits for the rest."""
        self.directory.mkdir(parents=True, exist_ok=True)
        files = [self.directory / f"{name}-{c:06d}.safetensors" for c in range(count)]
        for c in range(self.rank, count, self.world):
            if not files[c].is_file():
                atomic_save_safetensors(files[c], {"x": encode(c)})
                self.encoded_chunks += 1
        wait_for(lambda: all(f.is_file() for f in files))
        return torch.cat([load_file(str(f))["x"] for f in files]) if files else torch.empty(0)
