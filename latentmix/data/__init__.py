"""Datasets of (image, text, label): the embedded digits, users' image folders, synthetic paired sets.

:func:`load_dataset` opens one by name or path; every dataset answers the
:class:`~latentmix.data.base.ImageTextDataset` interface (images in [-1, 1], NCHW).
"""

from __future__ import annotations

import os
from pathlib import Path

from latentmix.data.base import (
    GENERIC_TEMPLATES,
    Concat,
    ImageTextDataset,
    Item,
    Subset,
    caption,
    labelled_subset,
    long_tailed_counts,
    spread_indices,
)
from latentmix.data.digits import (
    DIGIT_TEMPLATES,
    DIGITS_PROMPT,
    DIGITS_TEST_SIZE,
    DIGITS_TRAIN_SIZE,
    DigitsDataset,
    digits_prompt,
    digits_split_indices,
)
from latentmix.data.folder import ImageFolderDataset, split_dirs
from latentmix.data.hf import HFDataset
from latentmix.data.images import IMAGE_SUFFIXES, open_image, pil_to_tensor, set_max_image_pixels
from latentmix.data.synthetic import SyntheticDataset

__all__ = [
    "DIGITS_PROMPT",
    "DIGITS_TEST_SIZE",
    "DIGITS_TRAIN_SIZE",
    "DIGIT_TEMPLATES",
    "GENERIC_TEMPLATES",
    "IMAGE_SUFFIXES",
    "Concat",
    "DigitsDataset",
    "HFDataset",
    "ImageFolderDataset",
    "ImageTextDataset",
    "Item",
    "Subset",
    "SyntheticDataset",
    "caption",
    "digits_prompt",
    "digits_split_indices",
    "labelled_subset",
    "load_dataset",
    "load_matching",
    "load_pairs",
    "load_train_test",
    "long_tailed_counts",
    "open_image",
    "pil_to_tensor",
    "set_max_image_pixels",
    "spread_indices",
]


def load_dataset(
    data: str | os.PathLike = "digits",
    *,
    split: str = "train",
    image_size: int | None = None,
    channels: int | None = None,
) -> ImageTextDataset:
    """Open a dataset by name or path: ``"digits"``, ``"shapes"``, a directory (:mod:`latentmix.data.folder`), or
    Hugging Face ``datasets`` data: a ``save_to_disk`` directory, parquet files or ``hf://ID``
    (:mod:`latentmix.data.hf`).

    ``image_size`` and ``channels`` convert every image (default: the data's own — 8 × 8 grayscale for digits;
    for a folder, its images' common size and whether any has colour). ``split="all"`` on a folder with
    ``train/`` and ``test/`` is both splits.
    """
    if str(data) == "digits":
        return DigitsDataset(split, image_size or 8, channels or 1)
    if str(data) == "shapes":
        from latentmix.data.shapes import ShapesDataset

        return ShapesDataset(split, image_size or 32, channels or 3)
    from latentmix.data.hf import is_hf_data

    if is_hf_data(data):
        return HFDataset(data, image_size, channels, split)
    root = Path(data)
    if split == "all" and root.is_dir() and split_dirs(root):
        first = ImageFolderDataset(root, image_size, channels, split_dirs(root)[0])
        rest = [ImageFolderDataset(root, first.image_size, first.channels, s) for s in split_dirs(root)[1:]]
        return Concat([first, *rest], split_dirs(root))
    return ImageFolderDataset(root, image_size, channels, split)


def load_pairs(
    data: str | os.PathLike, *, split: str = "test", image_size: int | None = None, channels: int | None = None
) -> ImageTextDataset:
    """A paired set written by ``latentmix synthesize`` (recognised by its ``manifest.json``; ``split`` does not
    apply), or ``data`` at ``split`` as :func:`load_dataset` opens it."""
    from latentmix.data.synthetic import MANIFEST

    if (Path(data) / MANIFEST).is_file():
        return SyntheticDataset(data, image_size=image_size, channels=channels)
    return load_dataset(data, split=split, image_size=image_size, channels=channels)


def load_train_test(
    data: str | os.PathLike,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    purpose: str = "the test split stays separate",
) -> tuple[ImageTextDataset, ImageTextDataset]:
    """The train and test splits of ``data``, the test split converted to the train split's shape; a folder
    without separate ``train/`` and ``test/`` subfolders (both "splits" would be the whole folder) is refused."""
    train = load_dataset(data, split="train", image_size=image_size, channels=channels)
    test = load_dataset(data, split="test", image_size=train.image_size, channels=train.channels)
    root = getattr(train, "root", None)
    if root is not None and getattr(test, "root", None) == root:
        raise ValueError(f"data {data} needs train/ and test/ subfolders so {purpose}")
    if getattr(train, "split_name", "") is None:  # a `datasets` table without splits
        raise ValueError(f"data {data} needs train and test splits (a DatasetDict, or train*/test* parquet files) "
                         f"so {purpose}")  # fmt: skip
    return train, test


def load_matching(
    data: str | os.PathLike,
    split: str,
    image_size: int,
    channels: int,
    *,
    who: str,
    fix: str,
    resize: bool = False,
) -> ImageTextDataset:
    """The dataset converted to a model's image shape — refused when the data's own shape differs, unless
    ``resize``: no silent conversion of, say, an RGB 32 × 32 folder to the 8 × 8 grayscale of a digits model.

    ``who`` names the model ("backend 'digits-vae'"), ``fix`` says what to pass instead.
    """
    dataset = load_dataset(data, split=split, image_size=image_size, channels=channels)
    if resize:
        return dataset
    own_size, own_channels = dataset.native_size, dataset.native_channels
    if own_channels != channels or (own_size is not None and own_size != image_size):
        shape = f"{own_channels}-channel " + (f"{own_size}x{own_size}" if own_size is not None else "mixed-size")
        raise ValueError(
            f"{who} makes {channels}-channel {image_size}x{image_size} images but data {str(data)!r} holds {shape} "
            f"images; {fix}, or pass --resize to convert the data to the model's shape on purpose"
        )
    return dataset
