"""Users' image folders: one subfolder per class, or a Hugging Face imagefolder with ``metadata.jsonl``.

* an image folder: one subfolder per class (``root/cat/001.png``), captions from templates;
* a Hugging Face imagefolder: ``metadata.jsonl`` with ``file_name`` and optionally ``text`` and
  ``label`` (an int or a class name) for each image.

A ``train/`` (or ``test/``) subfolder is used for that split when present. Images may be RGB or
grayscale and of any size: each is converted to the requested channel count, centre-cropped to a
square and resized. Pixels are float in [-1, 1], NCHW.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor

from latentmix.data.base import GENERIC_TEMPLATES, ImageTextDataset, caption, check_shape, check_split
from latentmix.data.images import IMAGE_SUFFIXES, open_image, pil_to_tensor


class ImageFolderDataset(ImageTextDataset):
    """A user's directory of images, loaded lazily (see the module docstring for the layouts).

    Args:
        root: the directory.
        image_size: side of the square images produced.
        channels: 1 (grayscale) or 3 (RGB).
        split: use ``root/<split>`` if it exists (otherwise the whole of ``root``).
    """

    def __init__(self, root: str | os.PathLike, image_size: int, channels: int = 3, split: str = "all"):
        check_split(split)
        check_shape(image_size, channels)
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"data directory {root} does not exist")
        if split != "all" and (root / split).is_dir():
            root = root / split
        self.root, self.image_size, self.channels, self.split = root, image_size, channels, split
        if (root / "metadata.jsonl").is_file():
            self._read_metadata(root / "metadata.jsonl")
        else:
            self._read_class_folders(root)
        if not self.files:
            raise ValueError(f"data directory {root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        for f in self.files:
            open_image(f).close()  # fail now, naming the file, not in the middle of a job
        self.ids = [str(f.relative_to(root)) for f in self.files]

    def _read_class_folders(self, root: Path) -> None:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise ValueError(f"data directory {root} has neither a metadata.jsonl nor one subfolder per class")
        files, labels = [], []
        for label, name in enumerate(classes):
            found = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            files += found
            labels += [label] * len(found)
        self.files, self.class_names = files, classes
        self.labels = torch.tensor(labels, dtype=torch.long)
        self.texts = [caption(classes[y], i, GENERIC_TEMPLATES) for i, y in enumerate(labels)]

    def _read_metadata(self, path: Path) -> None:
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or "file_name" not in row:
                raise ValueError(f"{path}:{n}: each line needs a 'file_name'")
            rows.append(row)
        has_text = [("text" in r and r["text"] is not None) for r in rows]
        if any(has_text) and not all(has_text):
            missing = rows[has_text.index(False)]["file_name"]
            raise ValueError(
                f"{path}: 'text' is missing for some images (first: {missing}); give every image a text or none"
            )
        has_label = [("label" in r and r["label"] is not None) for r in rows]
        if any(has_label) and not all(has_label):
            missing = rows[has_label.index(False)]["file_name"]
            raise ValueError(f"{path}: 'label' is missing for some images (first: {missing})")
        raw = [r["label"] for r in rows] if rows and all(has_label) else []
        if raw and all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
            if min(raw) < 0:
                raise ValueError(f"{path}: labels must be >= 0, got {min(raw)}")
            self.class_names = [str(i) for i in range(max(raw) + 1)]
            labels = raw
        elif raw:
            self.class_names = sorted({str(v) for v in raw})
            labels = [self.class_names.index(str(v)) for v in raw]
        else:
            self.class_names, labels = [], [-1] * len(rows)
        self.files = [path.parent / r["file_name"] for r in rows]
        for f in self.files:
            if not f.is_file():
                raise ValueError(f"{path}: image {f} listed in metadata.jsonl does not exist")
        self.labels = torch.tensor(labels, dtype=torch.long)
        if rows and all(has_text):
            self.texts = [str(r["text"]) for r in rows]
        else:
            self.texts = [
                caption(self.class_names[y], i, GENERIC_TEMPLATES) if y >= 0 else "an image"
                for i, y in enumerate(labels)
            ]

    def load_image(self, index: int) -> Tensor:
        return pil_to_tensor(open_image(self.files[index]), self.image_size, self.channels)
