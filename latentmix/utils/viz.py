"""Pictures: interpolation grids as PNG, walks as animated GIF. Files are written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from latentmix.utils.atomic import atomic_file

BACKGROUND = (255, 255, 255)
TEXT = (40, 40, 40)


def to_uint8(images: Tensor) -> np.ndarray:
    """(N, C, H, W) floats in [-1, 1] -> (N, H, W, C) uint8 with C in {1, 3}."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def to_pil(array: np.ndarray) -> Image.Image:
    """One (H, W, C) uint8 image from :func:`to_uint8` as a PIL image: mode L for 1 channel, RGB for 3."""
    return Image.fromarray(array[:, :, 0], "L") if array.shape[2] == 1 else Image.fromarray(array, "RGB")


def _cell_scale(size: int) -> int:
    """Upscale tiny images (8x8 digits) so a cell is at least 64 pixels wide."""
    return max(1, 64 // size) if size < 64 else 1


def _to_pil(array: np.ndarray, scale: int) -> Image.Image:
    image = to_pil(array).convert("RGB")
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    return image


def grid_image(
    cells: Tensor,
    *,
    col_labels: list[str] | None = None,
    row_labels: list[str] | None = None,
    gaps_after: tuple[int, ...] = (),
    pad: int = 2,
) -> Image.Image:
    """Lay out (R, K, C, H, W) images as R rows of K cells, with optional labels.

    Args:
        cells: images in [-1, 1].
        col_labels: K labels drawn above the columns.
        row_labels: R labels drawn left of the rows.
        gaps_after: column indices followed by a wider gap (e.g. between real and decoded).
        pad: pixels between cells.
    """
    rows, cols = cells.shape[:2]
    arrays = to_uint8(cells.flatten(0, 1))
    scale = _cell_scale(cells.shape[-1])
    cw, ch = cells.shape[-1] * scale, cells.shape[-2] * scale
    font = ImageFont.load_default()
    left = (max(len(s) for s in row_labels) * 6 + 8) if row_labels else 0
    top = 14 if col_labels else 0
    wide = 4 * pad
    xs, x = [], left + pad
    for k in range(cols):
        xs.append(x)
        x += cw + (wide if k in gaps_after else pad)
    canvas = Image.new("RGB", (x, top + pad + rows * (ch + pad)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for r in range(rows):
        y = top + pad + r * (ch + pad)
        if row_labels:
            draw.text((4, y + ch // 2 - 5), row_labels[r], fill=TEXT, font=font)
        for k in range(cols):
            canvas.paste(_to_pil(arrays[r * cols + k], scale), (xs[k], y))
    for k, label in enumerate(col_labels or []):
        draw.text((xs[k] + 2, 1), label[: max(1, cw // 6)], fill=TEXT, font=font)
    return canvas


def _atomic_save(image_or_frames, path: str | os.PathLike, fmt: str, **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        if isinstance(image_or_frames, list):
            first, *rest = image_or_frames
            first.save(f, format=fmt, save_all=True, append_images=rest, **kwargs)
        else:
            image_or_frames.save(f, format=fmt, **kwargs)
    return path


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    return _atomic_save(image, path, "PNG")


def save_gif(frames: Tensor, path: str | os.PathLike, *, duration_ms: int = 120, pingpong: bool = True) -> Path:
    """Animate (T, P, C, H, W) frames: each frame shows the P walks side by side at one step."""
    steps = frames.shape[0]
    images = [grid_image(frames[t].unsqueeze(0)) for t in range(steps)]
    if pingpong and steps > 2:
        images = images + images[-2:0:-1]
    return _atomic_save(images, path, "GIF", duration=duration_ms, loop=0)


def reliability_diagram(
    bins_before: tuple, bins_after: tuple | None, path: str | os.PathLike, *, title: str = ""
) -> Path:
    """Bar chart of accuracy per confidence bin (before, and after temperature scaling) vs the diagonal.

    ``bins_*`` are ``(accuracy, confidence, share)`` from :func:`latentmix.classifiers.metrics.calibration_bins`.
    """
    size, pad = 300, 30
    panels = [b for b in (bins_before, bins_after) if b is not None]
    canvas = Image.new("RGB", (len(panels) * (size + pad) + pad, size + 2 * pad + 14), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for p, (acc, _conf, share) in enumerate(panels):
        x0, y0 = pad + p * (size + pad), pad + 14
        draw.rectangle([x0, y0, x0 + size, y0 + size], outline=TEXT)
        n_bins = len(acc) - 1
        width = size / n_bins
        for i in range(n_bins + 1):
            if float(share[i]) == 0:
                continue
            left = x0 + min(i, n_bins - 1) * width
            top = y0 + size - float(acc[i]) * size
            draw.rectangle([left + 1, top, left + width - 1, y0 + size], fill=(70, 110, 180), outline=(40, 60, 120))
        draw.line([x0, y0 + size, x0 + size, y0], fill=(220, 60, 60), width=2)  # perfect calibration
        draw.text(
            (x0, y0 - 14),
            ("before" if p == 0 else "after temperature scaling") + (f" - {title}" if title and p == 0 else ""),
            fill=TEXT,
            font=font,
        )
        draw.text((x0, y0 + size + 4), "confidence 0 .. 1; bars: accuracy per bin", fill=TEXT, font=font)
    return save_png(canvas, path)
