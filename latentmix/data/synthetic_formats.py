"""How a synthetic set stores its shards' images and rows: image folders, WebDataset tars or parquet files.

Every format keeps ``metadata.jsonl`` (all rows, in order), the per-shard embeddings (``shards/NNNNNN.safetensors``)
and ``manifest.json`` (``"format"``); what differs is where the images (and a copy of each row) live:

* ``imagefolder`` — ``images/NNNNNN/<id>.<ext>``: a Hugging Face imagefolder (``load_dataset("imagefolder")``);
* ``webdataset`` — ``shards/NNNNNN.tar`` with ``<id>.<ext>`` (the image), ``<id>.json`` (the row), ``<id>.cls``
  (the label) and ``<id>.txt`` (the caption): what ``webdataset.WebDataset("shards/{000000..N}.tar")`` streams;
* ``parquet`` — ``data/NNNNNN.parquet``: one row per sample with an ``image`` column (``{"bytes", "path"}``, marked
  as a ``datasets`` ``Image`` feature in the schema), the row's fields as columns and the whole row as JSON
  (``metadata``): what ``datasets.load_dataset("parquet", data_files="data/*.parquet")`` reads.

Tars and parquet files are written to a temporary name and renamed into place, with fixed member times and
owners, so that the same samples give the same bytes whichever process wrote them.
"""

from __future__ import annotations

import io
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
#: shards whose image index is held at once by a reader
OPEN_SHARDS = 4


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
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class ShardImages:
    """Image bytes of a webdataset or parquet set, by (shard, position, member name); a few shards indexed at once."""

    def __init__(self, root: Path, set_format: str):
        self.root, self.format = Path(root), set_format
        self._index: OrderedDict[int, Any] = OrderedDict()

    def _load(self, shard: int) -> Any:
        if shard in self._index:
            self._index.move_to_end(shard)
            return self._index[shard]
        path = shard_data(self.root, shard, self.format)
        try:
            if self.format == "webdataset":
                with tarfile.open(path) as tar:
                    index: Any = {m.name: (m.offset_data, m.size) for m in tar.getmembers()}
            else:
                import pyarrow.parquet as pq

                index = [cell["bytes"] for cell in pq.read_table(path, columns=["image"]).column("image").to_pylist()]
        except (OSError, tarfile.TarError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read the shard's images ({exc})") from None
        if len(self._index) >= OPEN_SHARDS:
            self._index.popitem(last=False)
        self._index[shard] = index
        return index

    def read(self, shard: int, position: int, name: str) -> bytes:
        index = self._load(shard)
        if self.format == "parquet":
            return index[position]
        if name not in index:
            raise ValueError(f"{shard_data(self.root, shard, self.format)} has no member {name}")
        offset, size = index[name]
        with open(shard_data(self.root, shard, self.format), "rb") as f:
            f.seek(offset)
            return f.read(size)
