"""Reading users' image files: one conversion for every loader (channels, centre crop, resize, [-1, 1]).

* A file is opened with a stated pixel limit (:data:`MAX_IMAGE_PIXELS`, 50 megapixels by default; raise it
  with :func:`set_max_image_pixels` or ``latentmix --max-image-pixels N``): a decompression bomb — a small file
  whose header claims 20,000 × 20,000 pixels — is a one-line error, not a PIL traceback or an exhausted memory.
* 16-bit and 32-bit grayscale (PNG ``I;16``, ``I``, ``F``) are scaled to 8 bits by their bit depth, not clipped.
* Hidden files (``.DS_Store``, macOS's ``._x.png``) are not images.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
MAX_IMAGE_PIXELS = DEFAULT_MAX_IMAGE_PIXELS
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_WIDE_GRAY = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0}


class ImageTooLarge(ValueError):
    """A file whose header claims more pixels than latentmix opens (a decompression bomb, or a trusted large image
    that needs a higher limit); ``width`` and ``height`` are what it claims."""

    def __init__(self, width: int, height: int, message: str):
        super().__init__(message)
        self.width, self.height = width, height


def set_max_image_pixels(limit: int) -> None:
    """Raise (or lower) the largest image, in pixels, that latentmix opens (default 50,000,000)."""
    from latentmix.utils.validation import positive_int

    global MAX_IMAGE_PIXELS
    MAX_IMAGE_PIXELS = positive_int(limit, "max_image_pixels")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _open_header(path: Path | IO[bytes]) -> Image.Image:
    pil_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # latentmix's own limit below replaces PIL's (and names the option that raises it)
    try:
        image = Image.open(path)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        image.close()
        raise ImageTooLarge(
            width,
            height,
            f"image {path} is {width} x {height} = {width * height:,} pixels, above the limit of {MAX_IMAGE_PIXELS:,} "
            "(a decompression bomb?); raise it with --max-image-pixels if the file is trusted",
        )
    return image


def open_image(path: Path | IO[bytes]) -> Image.Image:
    """Open and decode an image file (or an open binary file), or raise a one-line ``ValueError`` naming it."""
    image = _open_header(path)
    pil_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the header passed latentmix's limit
    try:
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit
    return image


@dataclass(frozen=True)
class ImageInfo:
    """What an image's header says: size (width, height) and mode."""

    width: int
    height: int
    mode: str

    @property
    def channels(self) -> int:
        return 1 if self.mode in GRAY_MODES else 3


def image_info(path: Path) -> ImageInfo:
    """Size and mode from the header (the pixel data are not decoded)."""
    with _open_header(path) as image:
        return ImageInfo(image.size[0], image.size[1], image.mode)


def common_shape(infos: Iterable[ImageInfo]) -> tuple[int | None, int]:
    """(side, channels) of a collection: the side when every image is the same square, else None; 3 channels
    when any image has colour, else 1."""
    infos = list(infos)
    sizes = {(i.width, i.height) for i in infos}
    side = next(iter(sizes))[0] if len(sizes) == 1 and next(iter(sizes))[0] == next(iter(sizes))[1] else None
    channels = 3 if any(i.channels == 3 for i in infos) else 1
    return side, channels


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale wide grayscale (16-bit PNG, 32-bit int or float) to 8-bit L by its depth, not by clipping."""
    if image.mode not in ("I", "F") and image.mode not in _WIDE_GRAY:
        return image
    array = np.asarray(image, dtype=np.float64)
    if image.mode in _WIDE_GRAY:
        top = _WIDE_GRAY[image.mode]
    else:  # "I" (often a 16-bit PNG decoded to 32-bit) or "F": the depth the values need
        peak = float(array.max()) if array.size else 0.0
        top = (
            1.0 if image.mode == "F" and peak <= 1.0 else (255.0 if peak <= 255 else 65535.0 if peak <= 65535 else peak)
        )
    scaled = np.clip(np.round(array / max(top, 1e-12) * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, "L")


def pil_to_tensor(image: Image.Image, image_size: int, channels: int) -> Tensor:
    """Convert a PIL image to (C, S, S) float in [-1, 1]: channels, centre square crop, resize."""
    image = _to_8bit(image).convert("L" if channels == 1 else "RGB")
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


def load_image_files(files: Iterable[Path], image_size: int, channels: int, *, resize: bool, who: str) -> Tensor:
    """Images (N, C, S, S) in [-1, 1] from files, converted like the data loader converts them; without ``resize``
    a file of another size or channel count is an error naming it (``who``: the model that needs the shape)."""
    images = []
    for f in files:
        with open_image(Path(f)) as image:
            own_channels = 1 if image.mode in ("1", "L", "I", "I;16", "F") else 3
            if not resize and (image.size != (image_size, image_size) or own_channels != channels):
                raise ValueError(
                    f"images: {f} is {own_channels}-channel {image.size[0]}x{image.size[1]}, {who} makes "
                    f"{channels}-channel {image_size}x{image_size} images; pass --resize to convert"
                )
            images.append(pil_to_tensor(image, image_size, channels))
    if not images:
        raise ValueError("images: no image files given")
    return torch.stack(images)
