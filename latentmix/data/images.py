"""Reading users' image files: one conversion for every loader (channels, centre crop, resize, [-1, 1])."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def open_image(path: Path) -> Image.Image:
    """Open and decode an image file, or raise a one-line ``ValueError`` naming it."""
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
