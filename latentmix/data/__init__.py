"""Datasets of (image, text, label): the embedded digits, users' image folders, synthetic paired sets.

:func:`load_dataset` opens one by name or path; every dataset answers the
:class:`~latentmix.data.base.ImageTextDataset` interface (images in [-1, 1], NCHW).
"""

from __future__ import annotations

import os

from latentmix.data.base import GENERIC_TEMPLATES, ImageTextDataset, Item, Subset, caption, labelled_subset
from latentmix.data.digits import (
    DIGIT_TEMPLATES,
    DIGITS_PROMPT,
    DIGITS_TEST_SIZE,
    DIGITS_TRAIN_SIZE,
    DigitsDataset,
    digits_prompt,
    digits_split_indices,
)
from latentmix.data.folder import ImageFolderDataset
from latentmix.data.images import IMAGE_SUFFIXES, open_image, pil_to_tensor
from latentmix.data.synthetic import SyntheticDataset

__all__ = [
    "DIGITS_PROMPT",
    "DIGITS_TEST_SIZE",
    "DIGITS_TRAIN_SIZE",
    "DIGIT_TEMPLATES",
    "GENERIC_TEMPLATES",
    "IMAGE_SUFFIXES",
    "DigitsDataset",
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
    "open_image",
    "pil_to_tensor",
]


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
