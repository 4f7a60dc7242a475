"""Datasets of (image, text, label): the embedded digits and users' own image folders.

**The digits split is fixed.** scikit-learn's handwritten digits (1,797 real 8×8 images, ten
classes) are split once, stratified by class, with ``train_test_split(test_size=360,
stratify=labels, random_state=0)``: 1,437 train and 360 test images. Embedded backends are
fitted on the train split only, so classifier evaluations on the test split are free of leakage.
:func:`digits_split_indices` returns the indices; a test pins them.

**Users' data**, given as a directory:

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0
DIGIT_TEMPLATES = (
    "a handwritten digit {name}",
    "an image of the number {name}",
    "the digit {name}, written by hand",
    "a scanned handwritten {name}",
)
GENERIC_TEMPLATES = ("a photo of a {name}", "an image of a {name}", "a picture of a {name}", "a {name}")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLITS = ("train", "test", "all")


def caption(class_name: str, index: int, templates: tuple[str, ...] = DIGIT_TEMPLATES) -> str:
    """Caption for a sample of ``class_name``; the template is chosen by ``index`` (deterministic)."""
    return templates[index % len(templates)].format(name=class_name)


def digits_split_indices() -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``sklearn.datasets.load_digits()`` of the fixed train and test splits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    labels = load_digits().target
    train, test = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_TEST_SIZE, stratify=labels, random_state=DIGITS_SPLIT_SEED
    )
    return np.sort(train), np.sort(test)


def labelled_subset(labels: Tensor, per_class: int, seed: int, *, exclude: np.ndarray | None = None) -> np.ndarray:
    """Sorted indices of ``per_class`` examples of every class, drawn with ``seed`` (low-data runs).

    The same (labels, per_class, seed) always gives the same subset, so a classifier and a
    synthetic set built for it use exactly the same labelled examples. ``exclude`` removes indices
    from the pool first (e.g. to draw a disjoint validation set).
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"labels_per_class must be a positive int, got {per_class!r}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    banned = np.asarray([] if exclude is None else exclude, dtype=np.int64)
    chosen = []
    for c in np.unique(labels[labels >= 0]):
        pool = np.setdiff1d(np.flatnonzero(labels == c), banned)  # sorted, as before
        if len(pool) < per_class:
            raise ValueError(
                f"class {int(c)} has {len(pool)} examples available, fewer than labels_per_class={per_class}"
            )
        chosen.extend(rng.choice(pool, size=per_class, replace=False).tolist())
    return np.sort(np.array(chosen, dtype=np.int64))


@dataclass
class Item:
    image: Tensor
    label: int
    text: str
    id: str


class ImageTextDataset(Dataset):
    """Base of latentmix datasets: per item an image in [-1, 1], a label, a caption and an id.

    Attributes:
        labels: LongTensor (N,) of class indices (-1 where unlabelled).
        texts: one caption per item.
        ids: one stable string id per item.
        class_names: names of the classes, indexed by label.
        image_size, channels: the shape every image is converted to.
    """

    labels: Tensor
    texts: list[str]
    ids: list[str]
    class_names: list[str]
    image_size: int
    channels: int

    def __len__(self) -> int:
        return len(self.ids)

    def load_image(self, index: int) -> Tensor:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Item:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for a dataset of {len(self)} items")
        index = index % len(self)
        return Item(self.load_image(index), int(self.labels[index]), self.texts[index], self.ids[index])

    def images(self, indices) -> Tensor:
        """Stack the images at ``indices`` into an (N, C, H, W) batch."""
        indices = [int(i) for i in indices]
        for i in indices:
            if not 0 <= i < len(self):
                raise ValueError(f"index {i} is out of range for a dataset of {len(self)} items")
        if not indices:
            return torch.empty(0, self.channels, self.image_size, self.image_size)
        return torch.stack([self.load_image(i) for i in indices])

    def indices_of_class(self, label: int | str) -> np.ndarray:
        """Indices of the items of one class, given by index or name."""
        if isinstance(label, str) and not label.lstrip("-").isdigit():
            if label not in self.class_names:
                raise ValueError(f"unknown class {label!r}; classes: {', '.join(self.class_names)}")
            label = self.class_names.index(label)
        label = int(label)
        if not 0 <= label < len(self.class_names):
            raise ValueError(f"class {label} is out of range; classes are 0..{len(self.class_names) - 1}")
        return np.flatnonzero(self.labels.numpy() == label)


class DigitsDataset(ImageTextDataset):
    """scikit-learn's handwritten digits, split as documented in this module.

    Args:
        split: ``"train"`` (1,437), ``"test"`` (360) or ``"all"`` (1,797).
        image_size: 8 (native) or larger (bilinear upsampling).
        channels: 1, or 3 (gray repeated).
    """

    def __init__(self, split: str = "train", image_size: int = 8, channels: int = 1):
        from sklearn.datasets import load_digits

        _check_split(split)
        _check_shape(image_size, channels)
        digits = load_digits()
        train, test = digits_split_indices()
        index = {"train": train, "test": test, "all": np.arange(len(digits.target))}[split]
        pixels = torch.from_numpy(digits.images[index]).float().unsqueeze(1) / 8.0 - 1.0  # 0..16 -> [-1, 1]
        if image_size != 8:
            pixels = torch.nn.functional.interpolate(pixels, size=image_size, mode="bilinear", align_corners=False)
        self._images = pixels.expand(-1, channels, -1, -1).contiguous().clamp(-1.0, 1.0)
        self.labels = torch.from_numpy(digits.target[index]).long()
        self.class_names = [str(i) for i in range(10)]
        self.ids = [f"digits-{i}" for i in index]
        self.texts = [caption(self.class_names[y], int(i)) for y, i in zip(self.labels, index)]
        self.image_size, self.channels, self.split = image_size, channels, split

    def load_image(self, index: int) -> Tensor:
        return self._images[index]

    def images(self, indices) -> Tensor:
        idx = torch.as_tensor([int(i) for i in indices], dtype=torch.long)
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            bad = [int(i) for i in idx if not 0 <= i < len(self)][0]
            raise ValueError(f"index {bad} is out of range for a dataset of {len(self)} items")
        return self._images[idx]


class ImageFolderDataset(ImageTextDataset):
    """A user's directory of images, loaded lazily (see the module docstring for the layouts).

    Args:
        root: the directory.
        image_size: side of the square images produced.
        channels: 1 (grayscale) or 3 (RGB).
        split: use ``root/<split>`` if it exists (otherwise the whole of ``root``).
    """

    def __init__(self, root: str | os.PathLike, image_size: int, channels: int = 3, split: str = "all"):
        _check_split(split)
        _check_shape(image_size, channels)
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
            _open_image(f).close()  # fail now, naming the file, not in the middle of a job
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
        return pil_to_tensor(_open_image(self.files[index]), self.image_size, self.channels)


class Subset(ImageTextDataset):
    """A view of some items of another dataset (same classes, shapes and ids)."""

    def __init__(self, base: ImageTextDataset, indices):
        self.base, self.indices = base, np.asarray(indices, dtype=np.int64)
        self.labels = base.labels[torch.from_numpy(self.indices)]
        self.texts = [base.texts[i] for i in self.indices]
        self.ids = [base.ids[i] for i in self.indices]
        self.class_names, self.image_size, self.channels = base.class_names, base.image_size, base.channels

    def load_image(self, index: int) -> Tensor:
        return self.base.load_image(int(self.indices[index]))

    def images(self, indices) -> Tensor:
        return self.base.images([int(self.indices[int(i)]) for i in indices])


def _open_image(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
        return image
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from None


def pil_to_tensor(image: Image.Image, image_size: int, channels: int) -> Tensor:
    """Convert a PIL image to (C, S, S) float in [-1, 1]: channels, centre square crop, resize."""
    image = image.convert("L" if channels == 1 else "RGB")
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != image_size:
        image = image.resize(
            (image_size, image_size), Image.Resampling.BICUBIC, reducing_gap=3.0 if side > 3 * image_size else None
        )
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).contiguous() / 127.5 - 1.0


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


def _check_shape(image_size: int, channels: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")


def load_dataset(
    data: str | os.PathLike = "digits",
    *,
    split: str = "train",
    image_size: int | None = None,
    channels: int | None = None,
) -> ImageTextDataset:
    """Open a dataset by name or path: ``"digits"`` or a directory (see the module docstring).

    ``image_size`` and ``channels`` default to 8 and 1 for digits and must be given for folders
    (they usually come from the backend: ``backend.image_size``, ``backend.image_channels``).
    """
    if str(data) == "digits":
        return DigitsDataset(split, image_size or 8, channels or 1)
    if image_size is None:
        raise ValueError(f"image_size is required to load the image folder {data}")
    return ImageFolderDataset(data, image_size, channels or 3, split)


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
        manifest_path = root / "manifest.json"
        if not manifest_path.is_file():
            raise ValueError(
                f"{root} is not a complete synthetic set (no manifest.json); finish or resume its synthesize run"
            )
        self.manifest = json.loads(manifest_path.read_text())
        rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines() if line.strip()]
        if len(rows) != self.manifest.get("num_samples"):
            raise ValueError(
                f"{root}: metadata.jsonl has {len(rows)} rows but the manifest counts {self.manifest.get('num_samples')}"
            )
        self.root = root
        self.class_names = list(self.manifest["class_names"])
        self.image_size = image_size or int(self.manifest["image_size"])
        self.channels = channels or int(self.manifest["channels"])
        _check_shape(self.image_size, self.channels)
        self.files = [root / r["file_name"] for r in rows]
        self.ids = [r["id"] for r in rows]
        self.texts = [r["text"] for r in rows]
        self.composed_texts = [r["composed_text"] for r in rows]
        self.labels = torch.tensor([r["label"] for r in rows], dtype=torch.long)
        self.soft_labels = torch.tensor([r["soft_label"] for r in rows], dtype=torch.float32)
        self.lam = torch.tensor([r["lambda"] for r in rows], dtype=torch.float32)
        self.source_a = [r["source_a"] for r in rows]
        self.source_b = [r["source_b"] for r in rows]
        self.label_a = torch.tensor([r.get("label_a", -1) for r in rows], dtype=torch.long)
        self.label_b = torch.tensor([r.get("label_b", -1) for r in rows], dtype=torch.long)
        self._embeddings = None

    def load_image(self, index: int) -> Tensor:
        return pil_to_tensor(_open_image(self.files[index]), self.image_size, self.channels)

    def embeddings(self, index: int) -> dict[str, Tensor]:
        """``{"latent": ..., "text_embedding": ...}`` of one sample, read lazily from embeddings.safetensors."""
        from safetensors import safe_open

        if self._embeddings is None:
            self._embeddings = safe_open(str(self.root / "embeddings.safetensors"), framework="pt")
        sid = self.ids[index]
        return {k: self._embeddings.get_tensor(f"{k}/{sid}") for k in ("latent", "text_embedding")}
