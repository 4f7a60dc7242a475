"""Synthetic paired sets on disk: the schema (one home for file and key names) and the reader.

``latentmix synthesize`` writes, and :class:`SyntheticDataset` reads, this layout (a Hugging Face
imagefolder that other tools load without latentmix):

* ``images/NNNNNN/syn-XXXXXXXX.png`` (or ``.jpg`` / ``.webp``) — decoded images, one folder per shard;
* ``metadata.jsonl`` — one row per sample with the :data:`ROW_FIELDS`;
* ``shards/NNNNNN.safetensors`` — each shard's embeddings as stacked tensors ``latent`` (k, ...) and
  ``text_embedding`` (k, D) (:data:`EMBEDDING_FIELDS`, either may be left out), rows in ``metadata.jsonl`` order;
  the manifest's ``embeddings`` entry lists the files and their row counts, so sample i is found by a binary
  search over the counts and read from its shard alone (:class:`~latentmix.data.synthetic_embeddings.ShardEmbeddings`).
  Sets written before 0.2 hold one merged ``embeddings.safetensors`` (``latent/<id>``, ``text_embedding/<id>``),
  still read;
* ``manifest.json`` — settings and counts; written last, it counts only complete samples;
* ``shards/`` and ``.latentmix-run.json`` — what a run needs to resume or extend the set.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from latentmix.configs.choices import SET_FORMATS
from latentmix.data.base import ImageTextDataset, check_shape
from latentmix.data.images import open_image, pil_to_tensor
from latentmix.data.synthetic_embeddings import MERGED, open_embeddings
from latentmix.data.synthetic_formats import IMAGES, ShardImages
from latentmix.utils.validation import parse_json

METADATA = "metadata.jsonl"
EMBEDDINGS = MERGED
MANIFEST = "manifest.json"
RUN_FILE = ".latentmix-run.json"
EMBEDDING_FIELDS = ("latent", "text_embedding")
ROW_FIELDS = (
    "file_name",  # images/NNNNNN/<id>.png, relative to the set
    "text",  # caption nearest to the blended text embedding
    "composed_text",  # "a blend of … (70%) and … (30%)"
    "label",  # dominant class
    "soft_label",  # λ·y_a + (1 − λ)·y_b (or Diff-Mix sharpened)
    "lambda",  # weight of source a
    "source_a",
    "source_b",  # ids of the two source examples
    "label_a",
    "label_b",  # their classes
    "id",  # syn-XXXXXXXX
    # where the source data has factors (caption rule 'factors'):
    "nearest_text",  # the nearest-caption rule's text, kept for comparison
    "factors",  # the dominant parent's value of each factor, {"label": "circle", "colour": "red", …}
)


def sample_id(index: int) -> str:
    return f"syn-{index:08d}"


#: the file extension of each image format
IMAGE_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


def image_path(shard: int, sid: str, image_format: str = "png", set_format: str = "imagefolder") -> str:
    """A row's ``file_name``: the image's path in an image folder, its member name in a tar or parquet shard."""
    name = f"{sid}.{IMAGE_EXTENSIONS[image_format]}"
    return f"{IMAGES}/{shard:06d}/{name}" if set_format == "imagefolder" else name


class SyntheticDataset(ImageTextDataset):
    """A paired set written by ``latentmix synthesize``, for training.

    Each item is an :class:`Item` (image in [-1, 1], dominant label, caption, id); the soft labels,
    λ, source ids and (lazily) the embeddings are available per index. A set whose manifest is
    missing or does not count every row is refused: it is not complete.

    Args:
        root: the output directory of ``synthesize``.
        image_size, channels: convert images to this shape (default: as written).
    """

    def __init__(self, root: str | os.PathLike, image_size: int | None = None, channels: int | None = None):
        root = Path(root)
        self.manifest = read_manifest(root)
        rows = _read_rows(root, self.manifest)
        self.root = root
        self.class_names = list(self.manifest["class_names"])
        self.native_size, self.native_channels = int(self.manifest["image_size"]), int(self.manifest["channels"])
        self.image_size = image_size or self.native_size
        self.channels = channels or self.native_channels
        check_shape(self.image_size, self.channels)
        self.files = [root / r["file_name"] for r in rows]
        self.ids = [r["id"] for r in rows]
        self.texts = [r["text"] for r in rows]
        self.composed_texts = [r["composed_text"] for r in rows]
        self.captioned = True
        #: the nearest-caption rule's texts, where the set's captions were rendered from factors (else None)
        self.nearest_texts = [r["nearest_text"] for r in rows] if all("nearest_text" in r for r in rows) else None
        self._read_factors(rows)
        self.labels = torch.tensor([r["label"] for r in rows], dtype=torch.long)
        soft = [r["soft_label"] for r in rows]
        self.soft_labels = torch.tensor(soft, dtype=torch.float32).reshape(len(rows), len(self.class_names))
        self.lam = torch.tensor([r["lambda"] for r in rows], dtype=torch.float32)
        self.source_a = [r["source_a"] for r in rows]
        self.source_b = [r["source_b"] for r in rows]
        self.label_a = torch.tensor([r.get("label_a", -1) for r in rows], dtype=torch.long)
        self.label_b = torch.tensor([r.get("label_b", -1) for r in rows], dtype=torch.long)
        self._embeddings: Any = None  # the embedding store, opened on first use
        self.format = str(self.manifest.get("format", "imagefolder"))
        if self.format not in SET_FORMATS:
            raise ValueError(f"{root}/{MANIFEST}: format {self.format!r} is none of {', '.join(SET_FORMATS)}")
        self._shard_images: Any = None  # a tar or parquet set's image index, built on first use

    def _read_factors(self, rows: list[dict]) -> None:
        """The dominant factors of every blend, where the set has them (``factors`` rows, ``factor_values`` in
        the manifest); the factor-rendered captions name every factor."""
        values = self.manifest.get("factor_values")
        if not isinstance(values, dict) or not rows or not all(isinstance(r.get("factors"), dict) for r in rows):
            return
        try:
            table = [[int(r["label"])] + [values[k].index(r["factors"][k]) for k in values] for r in rows]
        except (KeyError, ValueError, AttributeError):
            raise ValueError(f"{self.root}: a row's 'factors' do not match the manifest's factor_values") from None
        self.factor_values = {k: list(v) for k, v in values.items()}
        self.factor_table = torch.tensor(table, dtype=torch.long)

    def load_image(self, index: int) -> Tensor:
        if self.format == "imagefolder":
            return pil_to_tensor(open_image(self.files[index]), self.image_size, self.channels)
        if self._shard_images is None:
            self._shard_images = ShardImages(self.root, self.format)
        shard, position = self._store().locate(index)  # a tar or parquet set is always per-shard
        data = self._shard_images.read(shard, position, self.files[index].name)
        return pil_to_tensor(open_image(io.BytesIO(data)), self.image_size, self.channels)

    def _store(self) -> Any:
        if self._embeddings is None:
            self._embeddings = open_embeddings(self.root, self.manifest, self.ids)
        return self._embeddings

    @property
    def embedding_fields(self) -> tuple[str, ...]:
        """The embeddings this set stores (``latent``, ``text_embedding``; a run may leave either out)."""
        return self._store().fields

    def text_embeddings(self) -> Tensor:
        """(N, D) blended text embeddings of every sample, in row order (a ValueError if the set has none)."""
        return self._store().stacked("text_embedding")

    def embeddings(self, index: int) -> dict[str, Tensor]:
        """``{"latent": ..., "text_embedding": ...}`` of one sample (the fields the set stores), read lazily."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for a set of {len(self)} samples")
        return self._store().row(index % len(self))


REQUIRED_ROW_FIELDS = (
    "file_name",
    "text",
    "composed_text",
    "label",
    "soft_label",
    "lambda",
    "source_a",
    "source_b",
    "id",
)
MANIFEST_FIELDS = {"num_samples": int, "class_names": list, "image_size": int, "channels": int}


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of a complete set, with the fields the reader needs (a one-line error naming what is missing)."""
    path = root / MANIFEST
    if not path.is_file():
        raise ValueError(
            f"{root} is not a complete synthetic set (no manifest.json); finish or resume its synthesize run"
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    manifest = parse_json(text, str(path))
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} must hold a JSON object")
    for field, kind in MANIFEST_FIELDS.items():
        if not isinstance(manifest.get(field), kind) or isinstance(manifest.get(field), bool):
            raise ValueError(f"{path} lacks '{field}' ({kind.__name__}); not a set written by latentmix synthesize")
    names = manifest["class_names"]
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: 'class_names' must be a non-empty list of names")
    return manifest


def _read_rows(root: Path, manifest: dict[str, Any]) -> list[dict]:
    """The metadata rows, each checked: every field present, a finite soft label over the classes, files inside."""
    path = root / METADATA
    if not path.is_file():
        raise ValueError(f"{root} has no {METADATA}; not a complete synthetic set")
    rows = []
    ids: dict[Any, int] = {}
    k = len(manifest["class_names"])
    for n, line in enumerate(path.read_bytes().decode("utf-8", errors="strict").split("\n"), start=1):
        if not line.strip():
            continue
        row = parse_json(line, f"{path}:{n}")
        missing = [f for f in REQUIRED_ROW_FIELDS if not isinstance(row, dict) or f not in row]
        if missing:
            raise ValueError(f"{path}:{n}: the row lacks '{missing[0]}'")
        soft = row["soft_label"]
        if not isinstance(soft, list) or len(soft) != k or not all(_finite_number(v) and v >= 0 for v in soft):
            raise ValueError(f"{path}:{n}: 'soft_label' must be {k} finite, non-negative numbers (one per class)")
        if not _finite_number(row["lambda"]) or not 0 <= row["lambda"] <= 1:
            raise ValueError(f"{path}:{n}: 'lambda' must be a number in [0, 1] (the weight of source a)")
        if not isinstance(row["label"], int) or not 0 <= row["label"] < k:
            raise ValueError(f"{path}:{n}: 'label' must be a class index 0..{k - 1}")
        if soft[row["label"]] < max(soft):
            dominant = soft.index(max(soft))
            label = row["label"]
            raise ValueError(f"{path}:{n}: 'label' {label} is not the dominant class of 'soft_label' ({dominant})")
        if row["id"] in ids:
            raise ValueError(f"{path}:{n}: id {row['id']!r} appears twice (first at line {ids[row['id']]})")
        ids[row["id"]] = n
        name = str(row["file_name"])
        if (
            Path(name).is_absolute()
            or ".." in Path(name).parts
            or not (root / name).resolve().is_relative_to(root.resolve())
        ):
            raise ValueError(f"{path}:{n}: file_name {name!r} leaves the set's directory")
        rows.append(row)
    if len(rows) != manifest["num_samples"]:
        raise ValueError(
            f"{root}: metadata.jsonl has {len(rows)} rows but the manifest counts {manifest['num_samples']}"
        )
    return rows


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
