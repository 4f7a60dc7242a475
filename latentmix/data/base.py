"""The dataset interface every latentmix job reads: per item an image in [-1, 1], a label, a caption, an id.

Also the low-data draw (:func:`labelled_subset`) and :class:`Subset`, a view of some items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from latentmix.configs import SPLITS
from latentmix.utils.validation import choice, number, positive_int

GENERIC_TEMPLATES = ("a photo of a {name}", "an image of a {name}", "a picture of a {name}", "a {name}")


def caption(class_name: str, index: int, templates: tuple[str, ...] = GENERIC_TEMPLATES) -> str:
    """Caption for a sample of ``class_name``; the template is chosen by ``index`` (deterministic)."""
    return templates[index % len(templates)].format(name=class_name)


def check_split(split: str) -> str:
    return choice(split, "split", SPLITS)


def check_shape(image_size: int, channels: int) -> None:
    positive_int(image_size, "image_size")
    choice(channels, "channels", (1, 3))


def spread_indices(n: int, count: int | None) -> np.ndarray:
    """``count`` indices spread evenly over ``range(n)``, first and last included (all of them when ``count`` is
    None or at least ``n``)."""
    count = n if count is None else min(n, count)
    return np.unique(np.linspace(0, n - 1, count).round().astype(np.int64))


def long_tailed_counts(num_classes: int, head: int, imbalance_ratio: float) -> np.ndarray:
    """Examples per class of a long-tailed draw: ``round(head * R ** (-r / (C - 1)))`` for the class of rank r.

    The exponential profile of Cui et al. (2019) and Cao et al. (2019): classes in index order, class 0 keeps
    ``head`` examples, the last class ``head / R`` (at least 1). ``R = 1`` is the balanced draw.
    """
    positive_int(head, "labels_per_class")
    ratio = number(imbalance_ratio, "imbalance_ratio", minimum=1.0)
    ranks = np.arange(num_classes, dtype=np.float64) / max(num_classes - 1, 1)
    return np.maximum(1, np.round(head * ratio**-ranks)).astype(np.int64)


def labelled_subset(
    labels: Tensor | np.ndarray,
    per_class: int,
    seed: int,
    *,
    exclude: np.ndarray | None = None,
    imbalance_ratio: float | None = None,
) -> np.ndarray:
    """Sorted indices of ``per_class`` examples of every class, drawn with ``seed`` (low-data runs).

    The same (labels, per_class, seed) always gives the same subset, so a classifier and a
    synthetic set built for it use exactly the same labelled examples. ``exclude`` removes indices
    from the pool first (e.g. to draw a disjoint validation set). With ``imbalance_ratio`` R the draw is
    long-tailed: ``per_class`` examples of the first class down to ``per_class / R`` of the last
    (:func:`long_tailed_counts`); each class's examples are the first of its balanced draw's order.
    """
    positive_int(per_class, "labels_per_class")
    array = np.asarray(labels)
    rng = np.random.default_rng(seed)
    banned = np.asarray([] if exclude is None else exclude, dtype=np.int64)
    classes = np.unique(array[array >= 0])
    counts = np.full(len(classes), per_class, dtype=np.int64)
    if imbalance_ratio is not None:
        counts = long_tailed_counts(len(classes), per_class, imbalance_ratio)
    chosen = []
    for c, count in zip(classes, counts, strict=True):
        pool = np.setdiff1d(np.flatnonzero(array == c), banned)  # sorted, as before
        if len(pool) < per_class:
            raise ValueError(
                f"class {int(c)} has {len(pool)} examples available, fewer than labels_per_class={per_class}"
            )
        chosen.extend(rng.choice(pool, size=per_class, replace=False)[:count].tolist())
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
    #: the data's own square side (None when images differ in size) and channels, before any conversion
    native_size: int | None
    native_channels: int
    #: known factors besides the label (e.g. shapes' colour, size, …): name -> value names, and per item their
    #: indices (N, F) in that order; None for data without factors
    factor_values: dict[str, list[str]] | None = None
    factor_table: Tensor | None = None
    #: per item, the factors its caption names ("label" for the class); None: every factor counts as named
    named_factors: list[frozenset[str]] | None = None
    #: whether the captions are the data's own (a folder's metadata text, shapes, a synthetic set), not made
    #: from the class names by templates (digits, class subfolders)
    captioned: bool = False

    def factor_labels(self) -> Tensor:
        """(N, F) factor indices, in the order of ``factor_values``."""
        if self.factor_table is None or self.factor_values is None:
            raise ValueError("this data set has no factors")
        return self.factor_table[:, -len(self.factor_values) :]

    def factors(self, index: int) -> dict[str, str]:
        """The label and factor names of one item: ``{"label": "circle", "colour": "red", ...}``."""
        out = {"label": self.class_names[int(self.labels[index])] if self.class_names else ""}
        if self.factor_values is not None:
            row = self.factor_labels()[index].tolist()
            out.update({name: values[v] for (name, values), v in zip(self.factor_values.items(), row, strict=True)})
        return out

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


class Subset(ImageTextDataset):
    """A view of some items of another dataset (same classes, shapes and ids)."""

    def __init__(self, base: ImageTextDataset, indices):
        self.base, self.indices = base, np.asarray(indices, dtype=np.int64)
        self.labels = base.labels[torch.from_numpy(self.indices)]
        self.texts = [base.texts[i] for i in self.indices]
        self.ids = [base.ids[i] for i in self.indices]
        self.class_names, self.image_size, self.channels = base.class_names, base.image_size, base.channels
        self.native_size, self.native_channels = base.native_size, base.native_channels
        self.factor_values, self.captioned = base.factor_values, base.captioned
        if base.factor_table is not None:
            self.factor_table = base.factor_table[torch.from_numpy(self.indices)]
        if base.named_factors is not None:
            self.named_factors = [base.named_factors[i] for i in self.indices]

    def load_image(self, index: int) -> Tensor:
        return self.base.load_image(int(self.indices[index]))

    def images(self, indices) -> Tensor:
        return self.base.images([int(self.indices[int(i)]) for i in indices])


class Concat(ImageTextDataset):
    """Several datasets as one (the splits of a folder with ``train/`` and ``test/``): classes matched by name
    (in the parts' order when they all name the same classes, else sorted); factors kept when all parts share
    them."""

    def __init__(self, parts: list[ImageTextDataset], names: list[str]):
        if not parts:
            raise ValueError("nothing to concatenate")
        first = parts[0]
        self.parts, self.image_size, self.channels = parts, first.image_size, first.channels
        labelled = [p for p in parts if p.class_names]
        same = labelled and all(list(p.class_names) == list(labelled[0].class_names) for p in labelled)
        if same:
            self.class_names = list(labelled[0].class_names)
        else:
            self.class_names = sorted({c for p in labelled for c in p.class_names}) if labelled else []
        index = {c: i for i, c in enumerate(self.class_names)}
        labels, self.texts, self.ids, self.where = [], [], [], []
        for name, part in zip(names, parts, strict=True):
            if (part.image_size, part.channels) != (self.image_size, self.channels):
                raise ValueError(f"split {name} converts to another image shape than {names[0]}")
            labels += [index[part.class_names[y]] if y >= 0 else -1 for y in part.labels.tolist()]
            self.texts += part.texts
            self.ids += [f"{name}/{i}" for i in part.ids]
            self.where += [(part, i) for i in range(len(part))]
        self.labels = torch.tensor(labels, dtype=torch.long)
        sizes = {p.native_size for p in parts}
        self.native_size = next(iter(sizes)) if len(sizes) == 1 else None
        self.native_channels = max(p.native_channels for p in parts)
        self.captioned = all(p.captioned for p in parts)
        if all(p.factor_values is not None and p.factor_values == first.factor_values for p in parts):
            factors = torch.cat([p.factor_labels() for p in parts])
            self.factor_values = first.factor_values
            self.factor_table = torch.cat([self.labels[:, None], factors], dim=1)
            if all(p.named_factors is not None for p in parts):
                self.named_factors = [n for p in parts for n in p.named_factors or []]

    def load_image(self, index: int) -> Tensor:
        part, i = self.where[index]
        return part.load_image(i)
