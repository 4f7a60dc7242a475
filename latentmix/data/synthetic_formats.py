"""How a synthetic set stores its shards' images and rows: image folders, WebDataset tars or parquet files.

Every format keeps ``metadata.jsonl`` (all rows, in order), the per-shard embeddings (``shards/NNNNNN.safetensors``)
and ``manifest.json`` (``"format"``); what differs is where the images (and a copy of each row) live:

* ``imagefolder`` — ``images/NNNNNN/<id>.<ext>``: a Hugging Face imagefolder (``load_dataset("imagefolder")``);
* ``webdataset`` — ``shards/NNNNNN.tar`` with ``<id>.<ext>`` (the image), ``<id>.json`` (the row), ``<id>.cls``
  (the label) and ``<id>.txt`` (the caption): what ``webdataset.WebDataset("shards/{000000..N}.tar")`` streams;
* ``parquet`` — ``data/NNNNNN.parquet``: one row per sample with an ``image`` column (``{"bytes", "path"}``, marked
  as a ``datasets`` ``Image`` feature in the schema), the row's fields as columns and the whole row as JSON
  (``metadata``): what ``datasets.load_dataset("parquet", data_files="data/*.parquet")`` reads. Row groups of
  :data:`PARQUET_ROW_GROUP` rows, so that a reader holds a few groups' images, not whole shards'.

Tars and parquet files are written to a temporary name and renamed into place, with fixed member times and
owners, so that the same samples give the same bytes whichever process wrote them.
"""

from __future__ import annotations

import bisect
import io
import itertools
import json
import os
import tarfile
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from latentmix.utils.atomic import tmp_name

#: the folders of a set: image folders (imagefolder), shard files (every format), parquet shards
IMAGES, SHARDS, DATA = "images", "shards", "data"
#: the row fields a parquet shard holds as columns (besides ``image`` and the JSON ``metadata``)
PARQUET_COLUMNS = ("id", "text", "composed_text", "label", "soft_label", "lambda", "source_a", "source_b")
#: shards (tar: member offsets) or parquet row groups (image bytes) held at once by a reader
OPEN_SHARDS = 4
#: rows per parquet row group: the most image bytes a reader decodes to read one image
PARQUET_ROW_GROUP = 64


def shard_data(root: Path, shard: int, set_format: str) -> Path:
    """Where shard ``shard``'s images live in a set of ``set_format``."""
    name = f"{shard:06d}"
    if set_format == "webdataset":
        return root / SHARDS / f"{name}.tar"
    if set_format == "parquet":
        return root / DATA / f"{name}.parquet"
    return root / IMAGES / name


def write_tar(path: Path, rows: list[dict], images: Sequence[tuple[str, bytes]]) -> None:
    """A WebDataset shard: per sample its image, row, label and caption, keyed by the sample id."""
    tmp = tmp_name(path)
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for row, (name, data) in zip(rows, images, strict=True):
                key = row["id"]
                members = (
                    (name, data),
                    (f"{key}.json", json.dumps(row).encode()),
                    (f"{key}.cls", str(row["label"]).encode()),
                    (f"{key}.txt", str(row["text"]).encode()),
                )
                for member, payload in members:
                    info = tarfile.TarInfo(member)
                    info.size, info.mtime, info.mode = len(payload), 0, 0o644
                    tar.addfile(info, io.BytesIO(payload))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet(path: Path, rows: list[dict], images: Sequence[tuple[str, bytes]]) -> None:
    """A parquet shard: the images as a ``datasets`` ``Image`` column, the row fields as columns."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("format parquet needs pyarrow (pip install pyarrow, or datasets)") from None
    columns: dict[str, Any] = {
        "image": [{"bytes": data, "path": name} for name, data in images],
        **{c: [r.get(c) for r in rows] for c in PARQUET_COLUMNS},
        "metadata": [json.dumps(r) for r in rows],
    }
    table = pa.table(columns)
    features = {"image": {"_type": "Image"}}
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    tmp = tmp_name(path)
    try:
        pq.write_table(table, tmp, row_group_size=PARQUET_ROW_GROUP)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class ShardImages:
    """Image bytes of a webdataset or parquet set, by (shard, position, member name). A tar's member offsets are
    indexed a few shards at a time; a parquet shard is read one row group at a time (a few held), so memory stays
    at a few groups' images whatever the shard size."""

    def __init__(self, root: Path, set_format: str):
        self.root, self.format = Path(root), set_format
        self._index: OrderedDict[Any, Any] = OrderedDict()  # shard (tar) or (shard, row group) (parquet) → index
        self._starts: dict[int, list[int]] = {}  # a parquet shard's first row of each row group, then its row count

    def _cached(self, key: Any, path: Path, load) -> Any:
        if key in self._index:
            self._index.move_to_end(key)
            return self._index[key]
        index = _reading(path, load)
        if len(self._index) >= OPEN_SHARDS:
            self._index.popitem(last=False)
        self._index[key] = index
        return index

    def _tar(self, shard: int) -> dict[str, tuple[int, int]]:
        path = shard_data(self.root, shard, self.format)

        def load() -> dict[str, tuple[int, int]]:
            with tarfile.open(path) as tar:
                return {m.name: (m.offset_data, m.size) for m in tar.getmembers()}

        return self._cached(shard, path, load)

    def _parquet(self, shard: int, position: int) -> bytes:
        import pyarrow.parquet as pq

        path = shard_data(self.root, shard, self.format)
        if shard not in self._starts:
            meta = _reading(path, lambda: pq.read_metadata(path))
            sizes = (meta.row_group(g).num_rows for g in range(meta.num_row_groups))
            self._starts[shard] = [0, *itertools.accumulate(sizes)]
        starts = self._starts[shard]
        if not 0 <= position < starts[-1]:
            raise ValueError(f"{path} has {starts[-1]} rows; no row {position}")
        group = bisect.bisect_right(starts, position) - 1

        def load() -> list[bytes]:
            with pq.ParquetFile(path) as file:
                cells = file.read_row_group(group, columns=["image"]).column("image").to_pylist()
            return [cell["bytes"] for cell in cells]

        return self._cached((shard, group), path, load)[position - starts[group]]

    def read(self, shard: int, position: int, name: str) -> bytes:
        if self.format == "parquet":
            return self._parquet(shard, position)
        index = self._tar(shard)
        if name not in index:
            raise ValueError(f"{shard_data(self.root, shard, self.format)} has no member {name}")
        offset, size = index[name]
        with open(shard_data(self.root, shard, self.format), "rb") as f:
            f.seek(offset)
            return f.read(size)


def _reading(path: Path, load):
    """``load()``, its refusals of a missing or broken shard as one ValueError naming ``path``."""
    try:
        return load()
    except (OSError, tarfile.TarError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the shard's images ({exc})") from None
