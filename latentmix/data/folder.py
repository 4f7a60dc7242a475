"""Users' image folders: one subfolder per class, or a Hugging Face imagefolder with ``metadata.jsonl``.

* an image folder: one subfolder per class (``root/cat/001.png``), captions from templates;
* a Hugging Face imagefolder: ``metadata.jsonl`` with ``file_name`` and optionally ``text`` and ``label``
  for each image. A label is a class name (classes are the sorted names) or an int ``0 … K-1``; int labels
  take their names from an optional ``class_names.json`` (a JSON list, index = label) beside the metadata
  (or in the data root), else the names are "0", "1", ….
  Known **factors** besides the label (what ``latentmix export`` writes for ``shapes``): ``factors.json``
  (beside the metadata or in the data root) maps each factor to its values, e.g. ``{"colour": ["red",
  "blue"]}``; every row then names its value of each factor (``"colour": "red"``), and may list the factors
  its caption names (``"named_factors": ["colour", "label"]``).

``train/`` and ``test/`` subfolders hold the splits; ``split="all"`` then means train + test (classes matched
by name). Images may be RGB or grayscale (8 or 16 bits) and of any size: each is converted to the requested
channel count, centre-cropped to a square and resized. Without an ``image_size`` / ``channels`` the data's
own are used (every image the same square size; colour if any image has colour).

Reads stay inside the data root: a ``file_name`` that is absolute, climbs out with ``..`` or is a link to a
place outside is refused, naming the row. Hidden files are not images. Metadata is read as UTF-8 and split on
newlines only (a caption may contain U+2028), as the ``datasets`` library reads it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from latentmix.data.base import GENERIC_TEMPLATES, ImageTextDataset, caption, check_shape, check_split
from latentmix.data.images import ImageInfo, common_shape, image_info, is_image_file, open_image, pil_to_tensor
from latentmix.utils.validation import parse_json

METADATA = "metadata.jsonl"
CLASS_NAMES = "class_names.json"
FACTORS = "factors.json"
MAX_CLASSES = 100_000


def split_dirs(root: Path) -> list[str]:
    """The split subfolders (``train``, ``test``) a data root has."""
    return [s for s in ("train", "test") if (root / s).is_dir()]


class ImageFolderDataset(ImageTextDataset):
    """A user's directory of images, loaded lazily (see the module docstring for the layouts).

    Args:
        root: the directory (a split subfolder is chosen by ``split``).
        image_size: side of the square images produced (default: the data's own).
        channels: 1 (grayscale) or 3 (RGB) (default: the data's own).
        split: ``train`` / ``test`` (that subfolder when present, else the whole root) or ``all``.
    """

    def __init__(
        self, root: str | os.PathLike, image_size: int | None = None, channels: int | None = None, split: str = "all"
    ):
        check_split(split)
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"data directory {root} does not exist")
        self.data_root = root
        if split != "all" and (root / split).is_dir():
            root = root / split
        elif split == "all" and split_dirs(root):
            raise ValueError(f"{root} has split subfolders; load them with load_dataset(..., split='all')")
        self.root, self.split = root, split
        if (root / METADATA).is_file():
            self._read_metadata(root / METADATA)
        else:
            self._read_class_folders(root)
        if not self.files:
            raise ValueError(f"data directory {root} holds no images")
        self.infos: list[ImageInfo] = []
        for f in self.files:  # decode every image now: fail naming the file, not in the middle of a job
            with open_image(f) as image:
                self.infos.append(ImageInfo(image.size[0], image.size[1], image.mode))
        native_size, native_channels = common_shape(self.infos)
        self.native_size, self.native_channels = native_size, native_channels
        if image_size is None and native_size is None:
            sizes = sorted({(i.width, i.height) for i in self.infos})
            shown = ", ".join(f"{w}x{h}" for w, h in sizes[:3]) + (", ..." if len(sizes) > 3 else "")
            raise ValueError(f"images in {root} have no single square size ({shown}); pass image_size (--image-size)")
        self.image_size = image_size if image_size is not None else int(native_size)  # type: ignore[arg-type]
        self.channels = channels if channels is not None else native_channels
        check_shape(self.image_size, self.channels)
        self.ids = [str(f.relative_to(root)) for f in self.files]

    def _read_class_folders(self, root: Path) -> None:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise ValueError(f"data directory {root} has neither a metadata.jsonl nor one subfolder per class")
        files, labels = [], []
        for label, name in enumerate(classes):
            found = [p for p in _walk(root / name) if is_image_file(p) and _inside(p, root)]
            if not found:
                warnings.warn(f"class folder {root / name} holds no images; the class has no examples", stacklevel=3)
            files += found
            labels += [label] * len(found)
        self.files, self.class_names = files, classes
        self.labels = torch.tensor(labels, dtype=torch.long)
        self.texts = [caption(classes[y], i, GENERIC_TEMPLATES) for i, y in enumerate(labels)]

    def _read_metadata(self, path: Path) -> None:
        rows = _read_jsonl(path)
        for n, row in rows:
            if not isinstance(row, dict) or not isinstance(row.get("file_name"), str):
                raise ValueError(f"{path}:{n}: each line needs a 'file_name' (a relative path)")
        has_text = [("text" in r and r["text"] is not None) for _, r in rows]
        if any(has_text) and not all(has_text):
            missing = rows[has_text.index(False)][1]["file_name"]
            raise ValueError(
                f"{path}: 'text' is missing for some images (first: {missing}); give every image a text or none"
            )
        has_label = [("label" in r and r["label"] is not None) for _, r in rows]
        if any(has_label) and not all(has_label):
            missing = rows[has_label.index(False)][1]["file_name"]
            raise ValueError(f"{path}: 'label' is missing for some images (first: {missing})")
        raw = [(n, r["label"]) for n, r in rows] if rows and all(has_label) else []
        self.class_names, labels = _labels(path, raw, len(rows))
        self.files = [_safe_file(path, n, r["file_name"]) for n, r in rows]
        _refuse_conflicting_rows(path, [n for n, _ in rows], self.files, labels)
        self.labels = torch.tensor(labels, dtype=torch.long)
        self._read_factors(path, rows)
        if rows and all(has_text):
            self.texts = [str(r["text"]) for _, r in rows]
            self.captioned = True
        else:
            self.texts = [
                caption(self.class_names[y], i, GENERIC_TEMPLATES) if y >= 0 else "an image"
                for i, y in enumerate(labels)
            ]

    def _read_factors(self, path: Path, rows: list[tuple[int, Any]]) -> None:
        factors = _factors_file(path)
        if factors is None:
            return
        if bool((self.labels < 0).any()):
            raise ValueError(f"{path}: data with factors ({FACTORS}) needs a label for every image")
        table = []
        for n, row in rows:
            values = []
            for name, names in factors.items():
                if row.get(name) not in names:
                    raise ValueError(f"{path}:{n}: {name} {row.get(name)!r} is not one of {FACTORS}'s {names}")
                values.append(names.index(row[name]))
            table.append(values)
        self.factor_values = factors
        self.factor_table = torch.cat([self.labels[:, None], torch.tensor(table, dtype=torch.long)], dim=1)
        named = [r.get("named_factors") for _, r in rows]
        if all(isinstance(v, list) for v in named):
            self.named_factors = [frozenset(str(x) for x in v) for v in named]

    def load_image(self, index: int) -> Tensor:
        return pil_to_tensor(open_image(self.files[index]), self.image_size, self.channels)


def _walk(folder: Path) -> list[Path]:
    """Every file under ``folder`` (sorted), skipping hidden folders; an unreadable folder is an error, not a
    silent gap (``Path.rglob`` skips what it cannot read)."""

    def fail(exc: OSError) -> None:
        raise ValueError(f"folder {exc.filename or folder} cannot be read ({exc.strerror or exc})")

    files = []
    for here, dirs, names in os.walk(folder, onerror=fail, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(here) / n for n in names]
    return sorted(files)


def _read_jsonl(path: Path) -> list[tuple[int, Any]]:
    """(line number, row) of every non-empty line, read as UTF-8 and split on newlines only."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    rows = []
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        rows.append((n, parse_json(line, f"{path}:{n}")))
    return rows


def _refuse_conflicting_rows(path: Path, lines: list[int], files: list[Path], labels: list[int]) -> None:
    """One image, one label: an image listed twice with two labels would train both ways."""
    seen: dict[Path, tuple[int, int]] = {}
    for line, file, label in zip(lines, files, labels, strict=True):
        key = file.resolve()
        if key in seen and seen[key][1] != label:
            raise ValueError(
                f"{path}:{line}: {file.name} is listed again (first at line {seen[key][0]}) with another label; "
                "give each image one row"
            )
        seen.setdefault(key, (line, label))


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _safe_file(metadata: Path, line: int, name: str) -> Path:
    """The image a row names, which must lie inside the data root (no absolute paths, no ``..``, no links out)."""
    root = metadata.parent
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise ValueError(f"{metadata}:{line}: file_name {name!r} leaves the data directory; use a path relative to it")
    file = root / name
    if not _inside(file, root):
        raise ValueError(
            f"{metadata}:{line}: file_name {name!r} is a link to {file.resolve()}, outside the data directory"
        )
    if not file.is_file():
        raise ValueError(f"{metadata}:{line}: image {file} listed in metadata.jsonl does not exist")
    return file


def _labels(path: Path, raw: list[tuple[int, object]], count: int) -> tuple[list[str], list[int]]:
    """Class names and label indices of the metadata's labels (class names, or ints named by class_names.json)."""
    if not raw:
        return [], [-1] * count
    values = [v for _, v in raw]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        names = _class_names_file(path)
        limit = len(names) if names is not None else MAX_CLASSES
        for n, v in raw:
            if not 0 <= int(v) < limit:  # type: ignore[call-overload]
                where = f"the {limit} names of {CLASS_NAMES}" if names is not None else f"{MAX_CLASSES:,} classes"
                raise ValueError(f"{path}:{n}: label {v} is outside 0..{limit - 1} ({where})")
        ints = [int(v) for v in values]  # type: ignore[call-overload]
        return (names if names is not None else [str(i) for i in range(max(ints) + 1)]), ints
    bad = next(((n, v) for n, v in raw if not isinstance(v, (str, int)) or isinstance(v, bool)), None)
    if bad is not None:
        raise ValueError(f"{path}:{bad[0]}: label {bad[1]!r} must be a class name or an int")
    number = next(((n, v) for n, v in raw if isinstance(v, int)), None)
    if number is not None:  # one int among names would become a class of its own and shift the others' indices
        raise ValueError(
            f"{path}:{number[0]}: label {number[1]} is an int but other labels are class names; give every label "
            "as a name, or every label as an int (named by class_names.json)"
        )
    names = sorted({str(v) for v in values})
    index = {name: i for i, name in enumerate(names)}
    return names, [index[str(v)] for v in values]


def _beside(metadata: Path, name: str) -> Path | None:
    """``name`` beside the metadata or in the data root above it."""
    return next((f for f in (metadata.parent / name, metadata.parent.parent / name) if f.is_file()), None)


def _read_json_file(file: Path, what: str) -> Any:
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{file} is not {what} ({exc})") from None
    return parse_json(text, f"{file} ({what})")


def _factors_file(metadata: Path) -> dict[str, list[str]] | None:
    file = _beside(metadata, FACTORS)
    if file is None:
        return None
    factors = _read_json_file(file, "a JSON object of factor values")
    if (
        not isinstance(factors, dict)
        or not factors
        or not all(isinstance(v, list) and v and all(isinstance(x, str) for x in v) for v in factors.values())
    ):
        raise ValueError(f'{file} must map each factor to a list of value names, e.g. {{"colour": ["red", "blue"]}}')
    reserved = {"file_name", "text", "label", "named_factors"} & set(factors)
    if reserved:
        raise ValueError(f"{file}: {sorted(reserved)[0]!r} is a metadata column, not a factor name")
    if any(len(set(v)) != len(v) for v in factors.values()):
        raise ValueError(f"{file}: each factor's values must be distinct")
    return {str(k): list(v) for k, v in factors.items()}


def _class_names_file(metadata: Path) -> list[str] | None:
    file = _beside(metadata, CLASS_NAMES)
    if file is None:
        return None
    names = _read_json_file(file, "a JSON list of class names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{file} must hold a JSON list of class names (strings)")
    if len(set(names)) != len(names) or len(names) > MAX_CLASSES:
        raise ValueError(f"{file}: class names must be distinct and at most {MAX_CLASSES:,}")
    return names


def image_folder_infos(root: Path) -> list[ImageInfo]:
    """Header information of every image under ``root`` (for the data's own size and channels)."""
    return [image_info(p) for p in sorted(root.rglob("*")) if p.is_file() and is_image_file(p)]
