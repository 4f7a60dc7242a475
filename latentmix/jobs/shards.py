"""Crash-safe files for synthetic sets: atomic writes, per-shard storage, streaming merges.

A synthetic set is written shard by shard. A shard is complete when its marker ``shards/NNNNNN.done``
exists — written last, by rename, after its images directory, its embeddings and its ``.jsonl`` — and every
image its rows name is there (a deleted image makes the shard incomplete, so a resume rewrites it). The
marker records how many samples the shard generated and how many it kept (a filter may drop some). A run killed
at any point leaves only complete shards plus hidden temporaries, which the next run removes.
The merged ``metadata.jsonl`` is streamed from the shards (memory does not grow with the number of samples)
and renamed into place; the embeddings stay in the shards' files, which the manifest lists.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from latentmix.data.synthetic_formats import DATA, IMAGES, SHARDS, shard_data, write_parquet, write_tar
from latentmix.jobs.claims import SOURCES
from latentmix.utils.atomic import atomic_file, atomic_save_safetensors, atomic_write_text, replace_dir, tmp_name


def remove_temporaries(root: Path) -> None:
    """Delete the hidden ``.*.tmp-*`` leftovers of an interrupted run."""
    cached = sorted((root / SOURCES).iterdir()) if (root / SOURCES).is_dir() else []
    for sub in (root, root / SHARDS, root / IMAGES, root / DATA, *cached):
        if sub.is_dir():
            for p in sub.iterdir():
                if p.name.startswith(".") and ".tmp-" in p.name:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()


def shard_paths(root: Path, shard: int) -> tuple[Path, Path, Path]:
    """(metadata jsonl, embeddings safetensors, images directory) of one shard."""
    name = f"{shard:06d}"
    return root / SHARDS / f"{name}.jsonl", root / SHARDS / f"{name}.safetensors", root / IMAGES / name


def _marker(root: Path, shard: int) -> Path:
    return root / SHARDS / f"{shard:06d}.done"


def shard_state(root: Path, shard: int, set_format: str = "imagefolder") -> dict | None:
    """``{"generated": g, "kept": k}`` of a complete shard, or None if the shard is missing or incomplete."""
    meta, emb, _ = shard_paths(root, shard)
    data = shard_data(root, shard, set_format)
    if not (_marker(root, shard).is_file() and meta.is_file() and emb.is_file() and data.exists()):
        return None
    try:
        state = json.loads(_marker(root, shard).read_text(encoding="utf-8"))
        rows = [json.loads(line) for line in meta.read_text(encoding="utf-8").split("\n") if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if len(rows) != state.get("kept"):
        return None  # a row went missing: redo the shard
    if set_format == "imagefolder":  # a tar or parquet file is renamed into place whole; a folder's files can go
        present = {p.name for p in data.iterdir()} if data.is_dir() else set()
        if any(Path(r["file_name"]).name not in present for r in rows):
            return None  # an image went missing: redo the shard
    return state


def write_shard(
    root: Path,
    shard: int,
    rows: list[dict],
    tensors: dict[str, torch.Tensor],
    images: Sequence[tuple[str, Image.Image]],
    generated: int | None = None,
    *,
    set_format: str = "imagefolder",
    image_format: str = "png",
    quality: int = 95,
) -> None:
    """Write one shard: its images (``set_format``: a folder renamed into place, a tar or a parquet file;
    ``image_format`` png, jpeg or webp at ``quality``), embeddings, the jsonl, then the completion marker."""
    meta, emb, _ = shard_paths(root, shard)
    data = shard_data(root, shard, set_format)
    meta.parent.mkdir(parents=True, exist_ok=True)
    data.parent.mkdir(parents=True, exist_ok=True)
    options = {} if image_format == "png" else {"quality": quality}
    encoded = []
    for name, image in images:
        buffer = io.BytesIO()
        image.save(buffer, format=image_format.upper(), **options)
        encoded.append((name, buffer.getvalue()))
    if set_format == "webdataset":
        write_tar(data, rows, encoded)
    elif set_format == "parquet":
        write_parquet(data, rows, encoded)
    else:
        tmp = tmp_name(data)
        tmp.mkdir()
        try:
            for name, payload in encoded:
                (tmp / name).write_bytes(payload)
            replace_dir(tmp, data)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    atomic_save_safetensors(emb, tensors)
    atomic_write_text(meta, "".join(json.dumps(r) + "\n" for r in rows))
    done = {"generated": len(rows) if generated is None else generated, "kept": len(rows)}
    atomic_write_text(_marker(root, shard), json.dumps(done) + "\n")


def merge_metadata(root: Path, shards: int, out: Path) -> int:
    """Concatenate the shards' jsonl into ``out`` (atomically); return the row count."""
    count = 0
    with atomic_file(out, "w") as f:
        for s in range(shards):
            for line in shard_paths(root, s)[0].read_text(encoding="utf-8").split("\n"):
                if line.strip():
                    f.write(line + "\n")
                    count += 1
    return count
