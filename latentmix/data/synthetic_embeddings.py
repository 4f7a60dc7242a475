"""The embeddings of a synthetic set: per-shard stacked tensors, read one sample at a time.

A set stores each shard's embeddings in ``shards/NNNNNN.safetensors`` as stacked tensors (``latent`` (k, ...),
``text_embedding`` (k, D)), rows in ``metadata.jsonl`` order; the manifest's ``embeddings`` entry lists the
files and their row counts. Sample i is found by a binary search over the cumulative counts and read from its
shard's header alone, so opening a set of a million samples and reading its last one costs about what it does
for a thousand; only a few shard files are open at a time. Any safetensors reader can read the shards.

Sets written before 0.2 hold one merged ``embeddings.safetensors`` with a tensor per (field, sample id)
(``latent/<id>``): :class:`MergedEmbeddings` reads them (its header grows with the set: safetensors refuses
headers above 100 MB, about a million samples, which is why the layout changed).
"""

from __future__ import annotations

import bisect
import itertools
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

#: the layout name recorded in the manifest's ``embeddings`` entry
PER_SHARD = "per-shard"
#: a pre-0.2 set's merged file (a tensor per field and sample id, ``latent/<id>``)
MERGED = "embeddings.safetensors"
#: shard files held open at once
OPEN_FILES = 8


class ShardEmbeddings:
    """Per-shard stacked embeddings; see the module docstring.

    Args:
        root: the set's directory.
        entries: ``[{"file": "shards/000000.safetensors", "rows": k}, ...]`` in row order.
        fields: the stored fields (``latent``, ``text_embedding``).
    """

    def __init__(self, root: Path, entries: list[dict[str, Any]], fields: tuple[str, ...]):
        self.root, self.fields = Path(root), tuple(fields)
        self.names = [str(e["file"]) for e in entries]  # paths built when a shard is opened (O(1) to open a set)
        counts = [int(e["rows"]) for e in entries]
        self.starts = [0, *itertools.accumulate(counts)]
        self._open: OrderedDict[int, Any] = OrderedDict()

    def __len__(self) -> int:
        return self.starts[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """(shard, position in the shard) of sample ``index`` (0 <= index < len): a binary search over the counts."""
        shard = bisect.bisect_right(self.starts, index) - 1
        return shard, index - self.starts[shard]

    def _handle(self, shard: int) -> Any:
        from safetensors import SafetensorError, safe_open

        if shard in self._open:
            self._open.move_to_end(shard)
            return self._open[shard]
        if len(self._open) >= OPEN_FILES:
            self._open.popitem(last=False)
        try:
            handle = safe_open(str(self.root / self.names[shard]), framework="pt")
        except (OSError, SafetensorError) as exc:  # missing, truncated or not safetensors
            raise ValueError(f"{self.root / self.names[shard]}: cannot read the shard's embeddings ({exc})") from None
        self._open[shard] = handle
        return handle

    def _field(self, field: str) -> None:
        if field not in self.fields:
            stored = ", ".join(self.fields) or "none"
            raise ValueError(
                f"{self.root}: the set stores no {field} (written with --no-{field.replace('_', '-')}s; it stores "
                f"{stored})"
            )

    def row(self, index: int) -> dict[str, Tensor]:
        """The stored embeddings of sample ``index`` (0 <= index < len)."""
        shard, position = self.locate(index)
        handle = self._handle(shard)
        return {f: handle.get_slice(f)[position : position + 1][0] for f in self.fields}

    def stacked(self, field: str) -> Tensor:
        """(N, ...) ``field`` of every sample in row order, shard by shard."""
        self._field(field)
        parts = [
            self._handle(s).get_tensor(field) for s in range(len(self.names)) if self.starts[s + 1] > self.starts[s]
        ]
        return torch.cat(parts) if parts else torch.empty(0)


class MergedEmbeddings:
    """A pre-0.2 set's single ``embeddings.safetensors`` (a tensor per field and sample id)."""

    fields = ("latent", "text_embedding")

    def __init__(self, path: Path, ids: list[str]):
        from safetensors import safe_open

        self.path, self.ids = path, ids
        self._handle = safe_open(str(path), framework="pt")

    def row(self, index: int) -> dict[str, Tensor]:
        return {f: self._handle.get_tensor(f"{f}/{self.ids[index]}") for f in self.fields}

    def stacked(self, field: str) -> Tensor:
        return torch.stack([self._handle.get_tensor(f"{field}/{sid}") for sid in self.ids])


def open_embeddings(root: Path, manifest: dict[str, Any], ids: list[str]) -> ShardEmbeddings | MergedEmbeddings:
    """The embedding store of a set: the manifest's per-shard entry, or a pre-0.2 merged file."""
    entry = manifest.get("embeddings")
    if isinstance(entry, dict) and entry.get("layout") == PER_SHARD:
        shards, fields = entry.get("shards"), entry.get("fields")
        if (
            not isinstance(shards, list)
            or not isinstance(fields, list)
            or not all(isinstance(e, dict) and "file" in e and "rows" in e for e in shards)
        ):
            raise ValueError(f"{root}/manifest.json: 'embeddings' must list its shards (file, rows) and fields")
        for e in shards:  # string checks: a Path per shard would make opening a large set cost milliseconds
            name = str(e["file"])
            if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/") or ":" in name:
                raise ValueError(f"{root}/manifest.json: embeddings file {name!r} leaves the set's directory")
        store = ShardEmbeddings(root, shards, tuple(str(f) for f in fields))
        if len(store) != len(ids):
            raise ValueError(f"{root}/manifest.json: its embedding shards hold {len(store)} rows, the set {len(ids)}")
        return store
    merged = root / MERGED
    if merged.is_file():
        return MergedEmbeddings(merged, ids)
    raise ValueError(f"{root}: the set has no embeddings (no 'embeddings' entry in its manifest)")
