"""The image sizes a diffusion backend can decode at (``--height`` / ``--width``): multiples of the VAE's scale
factor times the UNet's down-sampling, checked from a loaded backend or from a folder's configs before any weights
are read. Imports no other backend module at module level, so the loader can ask it before loading."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from latentmix.utils import validation


def resolution_multiple(vae_scale: int, unet_blocks: int) -> int:
    """What an image side must be a multiple of: the VAE's scale factor times the UNet's down-sampling (one halving
    per down block but the last)."""
    return int(vae_scale) * 2 ** (int(unet_blocks) - 1)


def check_resolution(height: int | None, width: int | None, multiple: int) -> None:
    """A ValueError naming ``height`` / ``width`` where one is not a positive multiple of ``multiple``."""
    for name, value in (("height", height), ("width", width)):
        if value is None:
            continue
        validation.positive_int(value, name)
        if value % multiple:
            raise ValueError(f"{name} {value} must be a multiple of {multiple} (the VAE's scale factor times the "
                             "UNet's down-sampling)")  # fmt: skip


def folder_resolution_multiple(directory: Path) -> int | None:
    """:func:`resolution_multiple` of a pipeline folder from its ``vae/`` and ``unet/`` configs alone (no weights
    read), or None where the folder has no diffusers VAE and UNet configs."""
    try:
        vae = json.loads((Path(directory) / "vae" / "config.json").read_text())
        unet = json.loads((Path(directory) / "unet" / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not str(vae.get("_class_name", "")).startswith(("AutoencoderKL", "AutoencoderTiny", "VQModel")):
        return None
    from latentmix.backends.autoencoders import downsample_factor

    scale = downsample_factor(SimpleNamespace(config=vae))  # type: ignore[arg-type]
    return resolution_multiple(scale, len(unet.get("down_block_types", ())))
