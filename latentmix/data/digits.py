"""scikit-learn's handwritten digits with latentmix's fixed split — and the digits facts, in one place.

**The split is fixed.** The 1,797 real 8×8 images (ten classes) are split once, stratified by class, with
``train_test_split(test_size=360, stratify=labels, random_state=0)``: 1,437 train and 360 test images.
Embedded backends are fitted on the train split only, so classifier evaluations on the test split are
free of leakage. :func:`digits_split_indices` returns the indices; a test pins them.

Captions come from the label through :data:`DIGIT_TEMPLATES`; :data:`DIGITS_PROMPT` is the one template
that prompts and judges generation ("a handwritten digit 7").
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from latentmix.data.base import ImageTextDataset, caption, check_shape, check_split

DIGITS_SIZE = 1797
DIGITS_TEST_SIZE = 360
DIGITS_TRAIN_SIZE = DIGITS_SIZE - DIGITS_TEST_SIZE
DIGITS_SPLIT_SEED = 0
DIGITS_PROMPT = "a handwritten digit {name}"
DIGIT_TEMPLATES = (
    DIGITS_PROMPT,
    "an image of the number {name}",
    "the digit {name}, written by hand",
    "a scanned handwritten {name}",
)
#: How model cards and reports describe the data a model was fitted on.
DIGITS_TRAIN_DESCRIPTION = (
    f"the digits train split ({DIGITS_TRAIN_SIZE:,} images; fixed split in `latentmix/data/digits.py`); "
    f"the {DIGITS_TEST_SIZE}-image test split was not used for training"
)


def digits_prompt(label: int | str) -> str:
    """The prompt of one digit class: ``"a handwritten digit 7"``."""
    return DIGITS_PROMPT.format(name=label)


def digits_split_indices() -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``sklearn.datasets.load_digits()`` of the fixed train and test splits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    labels = load_digits().target
    train, test = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_TEST_SIZE, stratify=labels, random_state=DIGITS_SPLIT_SEED
    )
    return np.sort(train), np.sort(test)


class DigitsDataset(ImageTextDataset):
    """scikit-learn's handwritten digits, split as documented in this module.

    Args:
        split: ``"train"`` (1,437), ``"test"`` (360) or ``"all"`` (1,797).
        image_size: 8 (native) or larger (bilinear upsampling).
        channels: 1, or 3 (gray repeated).
    """

    def __init__(self, split: str = "train", image_size: int = 8, channels: int = 1):
        from sklearn.datasets import load_digits

        check_split(split)
        check_shape(image_size, channels)
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
        self.texts = [
            caption(self.class_names[y], int(i), DIGIT_TEMPLATES) for y, i in zip(self.labels, index, strict=True)
        ]
        self.image_size, self.channels, self.split = image_size, channels, split
        self.native_size, self.native_channels = 8, 1

    def load_image(self, index: int) -> Tensor:
        return self._images[index]

    def images(self, indices) -> Tensor:
        idx = torch.as_tensor([int(i) for i in indices], dtype=torch.long)
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            bad = next(int(i) for i in idx if not 0 <= i < len(self))
            raise ValueError(f"index {bad} is out of range for a dataset of {len(self)} items")
        return self._images[idx]
