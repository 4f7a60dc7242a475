"""Hugging Face ``datasets`` data as a latentmix dataset: a ``save_to_disk`` directory, parquet files, or a hub id.

What :func:`~latentmix.data.load_dataset` opens when ``data`` is

* a directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (``state.json`` or
  ``dataset_dict.json``);
* a ``.parquet`` file, or a directory of them (``train*.parquet`` / ``test*.parquet`` name the splits, else every
  file is one split) — what ``Dataset.to_parquet`` and the hub's parquet exports write;
* ``hf://ID`` (``hf://ID:CONFIG`` for a configuration): ``datasets.load_dataset(ID)`` through its cache; without a
  network or cache it is one line saying so.

Columns are found from the features: the image column is the ``Image`` feature (else one named ``image`` /
``img``), the label a ``ClassLabel`` (its names are the class names; else an integer column named ``label``,
``labels``, ``fine_label`` or ``class``), the caption a string column named ``text``, ``caption``, ``sentence``,
``prompt`` (else captions are made from the class names, as for class subfolders); ``image_column``,
``label_column``, ``text_column`` choose them by name — on the command line, for every job, as
``--image-column``, ``--label-column``, ``--text-column``, ``--train-split``, ``--test-split`` (and
``--data-config`` for a hub id), or as options after the data:
``--data "./cifar?image=img&label=fine_label&text=caption&test=validation"`` (:func:`with_options` folds the
flags into that form). Rows are decoded one at a time when an image is asked for:
nothing is decoded into memory up front. The image size and colour are read from up to 256 rows spread over the
data (all rows when fewer), and the images themselves are converted exactly as an image folder's are, so the same
images as a folder and as a dataset give the same tensors.

A split: ``train`` / ``test`` (``test`` falls back to ``validation``); a dataset without splits is one split, as a
folder without ``train/`` and ``test/`` is.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from latentmix.data.base import GENERIC_TEMPLATES, ImageTextDataset, caption, check_shape, check_split, spread_indices
from latentmix.data.images import ImageInfo, common_shape, pil_to_tensor

HUB = "hf://"
IMAGE_NAMES = ("image", "img", "images", "picture")
LABEL_NAMES = ("label", "labels", "fine_label", "class", "category")
TEXT_NAMES = ("text", "caption", "captions", "sentence", "sentences", "prompt")
SHAPE_SAMPLE = 256


#: what a ``?key=value&...`` suffix of the data may set
OPTIONS = {"image": "image_column", "label": "label_column", "text": "text_column", "train": "train", "test": "test"}


def parse_options(data: str | os.PathLike) -> tuple[str, dict[str, str]]:
    """``"DATA?label=fine_label&test=validation"`` → (``"DATA"``, ``{"label_column": "fine_label", "test":
    "validation"}``); data without a ``?`` suffix → (data, {})."""
    from urllib.parse import parse_qsl

    text = os.fspath(data)
    base, mark, query = text.partition("?")
    if not mark:
        return text, {}
    pairs = parse_qsl(query, keep_blank_values=True)
    unknown = next((k for k, _ in pairs if k not in OPTIONS), None)
    if unknown is not None or not pairs:
        raise ValueError(f"data {text}: unknown option {unknown!r} after '?'; options: {', '.join(OPTIONS)}")
    return base, {OPTIONS[k]: v for k, v in pairs}


def with_options(
    data: str | os.PathLike | None,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
    text_column: str | None = None,
    train_split: str | None = None,
    test_split: str | None = None,
    data_config: str | None = None,
) -> str | None:
    """``data`` with the given columns, split names and hub configuration folded into its ``?`` options (what
    ``--image-column`` … ``--data-config`` do on the command line); ``data`` itself when none is given.

    ``data_config`` makes a plain hub id one (``"cifar10"`` → ``"hf://cifar10:plain_text"``). Every option applies
    to ``datasets`` data only, and one given twice (flag and ``?`` option) with two values is refused.
    """
    named = {"image_column": image_column, "label_column": label_column, "text_column": text_column,
             "train": train_split, "test": test_split}  # fmt: skip
    given: dict[str, str] = {k: v for k, v in named.items() if v is not None}
    if not given and data_config is None:
        return None if data is None else os.fspath(data)
    flag = "--" + ("data-config" if data_config is not None and not given else _FLAGS[next(iter(given))])
    if data is None:
        raise ValueError(f"{flag} needs --data (Hugging Face datasets data)")
    text = os.fspath(data)
    base, options = (text, {}) if Path(text).exists() else parse_options(text)
    for key, value in given.items():
        if options.get(key, value) != value:
            raise ValueError(f"--{_FLAGS[key]} {value} contradicts data {text} ({_NAMES[key]}={options[key]})")
    options.update(given)
    if data_config is not None:
        if Path(base).exists():
            raise ValueError(f"--data-config applies to a hub id, not to the local data {base}")
        hub, _, config = base.removeprefix(HUB).partition(":")
        if config and config != data_config:
            raise ValueError(f"--data-config {data_config} contradicts data {text} (configuration {config})")
        base = f"{HUB}{hub}:{data_config}"
    if not is_hf_data(base):
        kind = "a built-in data set" if base in ("digits", "shapes") else "not Hugging Face datasets data"
        raise ValueError(f"{flag} applies to datasets data (a save_to_disk directory, parquet files or hf://ID); "
                         f"{base} is {kind}")  # fmt: skip
    if not options:
        return base
    from urllib.parse import urlencode

    return base + "?" + urlencode({_NAMES[k]: v for k, v in options.items()})


_NAMES = {v: k for k, v in OPTIONS.items()}
_FLAGS = {"image_column": "image-column", "label_column": "label-column", "text_column": "text-column",
          "train": "train-split", "test": "test-split"}  # fmt: skip


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_hf_data(data: str | os.PathLike) -> bool:
    """Whether ``data`` names Hugging Face ``datasets`` data (see the module docstring)."""
    text = os.fspath(data)
    if "?" in text and not Path(text).exists():
        text = text.partition("?")[0]
    if text.startswith(HUB):
        return True
    p = Path(text)
    if p.is_file():
        return p.suffix == ".parquet"
    return p.is_dir() and (
        (p / "state.json").is_file() or (p / "dataset_dict.json").is_file() or any(p.glob("*.parquet"))
    )


def _open(data: str | os.PathLike) -> Any:
    """The ``Dataset`` or ``DatasetDict`` at ``data``."""
    import datasets

    text = os.fspath(data)
    if text.startswith(HUB):
        name, _, config = text[len(HUB) :].partition(":")
        try:
            return datasets.load_dataset(name, config or None)
        except (ConnectionError, OSError, FileNotFoundError, ValueError) as exc:
            raise ValueError(f"data {text}: datasets.load_dataset({name!r}) failed ({_first_line(exc)}); offline, "
                             "pass a save_to_disk directory or parquet files instead") from None  # fmt: skip
    p = Path(text)
    if p.is_file():
        return datasets.Dataset.from_parquet(str(p))
    if (p / "state.json").is_file() or (p / "dataset_dict.json").is_file():
        return datasets.load_from_disk(str(p))
    files = sorted(p.glob("*.parquet"))
    splits = {s: [str(f) for f in files if f.name.startswith(s)] for s in ("train", "test", "validation")}
    splits = {s: f for s, f in splits.items() if f}
    if not splits:
        return datasets.Dataset.from_parquet([str(f) for f in files])
    return datasets.DatasetDict({s: datasets.Dataset.from_parquet(f) for s, f in splits.items()})


def _split(opened: Any, split: str, data: str, names: dict[str, str]) -> tuple[Any, str | None]:
    import datasets

    if not isinstance(opened, datasets.DatasetDict):
        return opened, None
    if split == "all":
        return datasets.concatenate_datasets(list(opened.values())), "all"
    if split in names:  # ?train=NAME / ?test=NAME
        if names[split] not in opened:
            raise ValueError(f"data {data} has no split {names[split]!r} (its splits: {', '.join(opened)})")
        return opened[names[split]], names[split]
    name = split if split in opened else "validation" if split == "test" and "validation" in opened else None
    if name is None:
        raise ValueError(f"data {data} has no split {split!r} (its splits: {', '.join(opened)})")
    return opened[name], name


def _column(features: dict, given: str | None, kind: str, names: tuple[str, ...], test, data: str) -> str | None:
    if given is not None:
        if given not in features:
            raise ValueError(f"{kind}_column: data {data} has no column {given!r} (columns: {', '.join(features)})")
        return given
    typed = [c for c, f in features.items() if test(f)]
    if typed:
        return typed[0]
    return next((c for c in features if c.lower() in names), None)


#: where the columns a dataset was read by are reported (the CLI prints them; None: nowhere)
_REPORT: Callable[[str], None] | None = None
_REPORTED: set[tuple[str, str]] = set()


def report_columns(report: Callable[[str], None] | None) -> None:
    """Report each dataset's detected columns once, through ``report`` (the CLI passes a print but for ``--quiet``)."""
    global _REPORT
    _REPORT = report
    _REPORTED.clear()


class HFDataset(ImageTextDataset):
    """A Hugging Face ``datasets`` split as a latentmix dataset; see the module docstring.

    Args:
        data: a ``save_to_disk`` directory, a parquet file or folder, or ``hf://ID[:CONFIG]``.
        image_size, channels: the shape every image is converted to (default: the data's own).
        split: ``train``, ``test`` or ``all``.
        image_column, label_column, text_column: column names (default: detected from the features).
    """

    def __init__(
        self,
        data: str | os.PathLike,
        image_size: int | None = None,
        channels: int | None = None,
        split: str = "train",
        *,
        image_column: str | None = None,
        label_column: str | None = None,
        text_column: str | None = None,
    ):
        import datasets

        check_split(split)
        name = os.fspath(data)
        self.source = name
        path, options = parse_options(data) if not Path(name).exists() else (name, {})
        image_column = image_column or options.get("image_column")
        label_column = label_column or options.get("label_column")
        text_column = text_column or options.get("text_column")
        verbosity = datasets.logging.get_verbosity()
        datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # a broken file: reported once, below, not logged
        try:
            opened = _open(path)
        except (OSError, ValueError) as exc:  # a truncated or foreign file: pyarrow's ArrowInvalid is a ValueError
            message = _first_line(exc)
            raise ValueError(message if message.startswith("data ") else f"data {name}: cannot be read "
                             f"({message})") from None  # fmt: skip
        finally:
            datasets.logging.set_verbosity(verbosity)
        table, self.split_name = _split(opened, split, name, options)
        features = dict(table.features)
        image = _column(features, image_column, "image", IMAGE_NAMES, lambda f: isinstance(f, datasets.Image), name)
        if image is None:
            raise ValueError(f"data {name} has no image column (an Image feature or a column named image / img); "
                             f"columns: {', '.join(features)}")  # fmt: skip
        label = _column(features, label_column, "label", LABEL_NAMES,
                        lambda f: isinstance(f, datasets.ClassLabel), name)  # fmt: skip
        text = _column(features, text_column, "text", TEXT_NAMES, lambda f: False, name)  # by name only
        self.columns = {"image": image, "label": label, "text": text}
        if _REPORT is not None and (name, split) not in _REPORTED:
            _REPORTED.add((name, split))
            shown = ", ".join(f"{k} {v!r}" if v else f"no {k} column" for k, v in self.columns.items())
            where = f"{name} ({self.split_name})" if self.split_name else name
            _REPORT(f"data {where}: {shown} (others: --image-column, --label-column, --text-column)")
        self.table = table.select_columns([image]).cast_column(image, datasets.Image(decode=True))
        if len(table) == 0:
            raise ValueError(f"data {name} ({split}) holds no rows")
        self.labels, self.class_names = self._labels(table, features, label, name)
        if text is not None:
            values = table[text]
            if not all(isinstance(v, str) for v in values):
                raise ValueError(f"text_column: column {text!r} of data {name} must hold one string per row")
            self.texts, self.captioned = list(values), True
        else:
            self.texts = [caption(self.class_names[y], i, GENERIC_TEMPLATES) if y >= 0 else ""
                          for i, y in enumerate(self.labels.tolist())]  # fmt: skip
        self.ids = [f"{self.split_name or 'rows'}/{i}" for i in range(len(table))]
        infos = [self._info(int(i)) for i in spread_indices(len(table), min(len(table), SHAPE_SAMPLE))]
        self.native_size, self.native_channels = common_shape(infos)
        if image_size is None and self.native_size is None:
            raise ValueError(f"images in {name} have no single square size; pass image_size (--image-size)")
        self.image_size = image_size if image_size is not None else int(self.native_size)  # type: ignore[arg-type]
        self.channels = channels if channels is not None else self.native_channels
        check_shape(self.image_size, self.channels)

    @staticmethod
    def _labels(table: Any, features: dict, label: str | None, name: str) -> tuple[Tensor, list[str]]:
        import datasets

        if label is None:
            return torch.full((len(table),), -1, dtype=torch.long), []
        feature, values = features[label], table[label]
        if any(isinstance(v, bool) or not isinstance(v, int) for v in values):
            bad = next(v for v in values if isinstance(v, bool) or not isinstance(v, int))
            raise ValueError(f"label_column: column {label!r} of data {name} must hold integers or a ClassLabel, "
                             f"got {type(bad).__name__}")  # fmt: skip
        if isinstance(feature, datasets.ClassLabel):
            names = list(feature.names)
        else:
            names = [str(i) for i in range(max(values) + 1)] if values else []
        if any(not -1 <= v < len(names) for v in values):
            raise ValueError(f"label_column: column {label!r} of data {name} holds labels outside 0..{len(names) - 1}")
        return torch.tensor(values, dtype=torch.long), names

    def _image(self, index: int):
        try:
            image = self.table[int(index)][self.columns["image"]]
        except (OSError, ValueError, SyntaxError) as exc:  # PIL's refusals of a broken image
            raise ValueError(f"data {self.source}: row {index} holds an image that cannot be decoded "
                             f"({_first_line(exc)})") from None  # fmt: skip
        if image is None:
            raise ValueError(f"data {self.source}: row {index} has no image")
        return image

    def _info(self, index: int) -> ImageInfo:
        image = self._image(index)
        return ImageInfo(image.size[0], image.size[1], image.mode)

    def load_image(self, index: int) -> Tensor:
        return pil_to_tensor(self._image(index), self.image_size, self.channels)
