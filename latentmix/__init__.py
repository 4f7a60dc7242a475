"""latentmix: encode real data into a generative model's latent space, walk, decode.

The public names below are imported on first use (PEP 562), so ``import latentmix`` and the
``latentmix`` command start without loading torch or diffusers until a job needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from latentmix.version import __version__

_EXPORTS = {
    "GridResult": "latentmix.jobs.grid",
    "LatentBackend": "latentmix.backends",
    "decode_keyframe_walk": "latentmix.jobs.keyframe_walk",
    "decode_walk": "latentmix.jobs.grid",
    "embedded_models": "latentmix.backends",
    "interpolate": "latentmix.latent.interpolate",
    "interpolation_grid": "latentmix.jobs.grid",
    "interpolation_grid_2d": "latentmix.latent.interpolate",
    "interpolation_path": "latentmix.latent.interpolate",
    "keyframe_path": "latentmix.latent.keyframes",
    "keyframe_path_at": "latentmix.latent.keyframes",
    "lerp": "latentmix.latent.interpolate",
    "load_backend": "latentmix.backends",
    "load_dataset": "latentmix.data",
    "sample_lambda": "latentmix.latent.interpolate",
    "slerp": "latentmix.latent.interpolate",
}

__all__ = [
    "GridResult",
    "LatentBackend",
    "__version__",
    "decode_keyframe_walk",
    "decode_walk",
    "embedded_models",
    "interpolate",
    "interpolation_grid",
    "interpolation_grid_2d",
    "interpolation_path",
    "keyframe_path",
    "keyframe_path_at",
    "lerp",
    "load_backend",
    "load_dataset",
    "sample_lambda",
    "slerp",
]

if TYPE_CHECKING:
    from latentmix.backends import LatentBackend, embedded_models, load_backend
    from latentmix.data import load_dataset
    from latentmix.jobs.grid import GridResult, decode_walk, interpolation_grid
    from latentmix.jobs.keyframe_walk import decode_keyframe_walk
    from latentmix.latent.interpolate import (
        interpolate,
        interpolation_grid_2d,
        interpolation_path,
        lerp,
        sample_lambda,
        slerp,
    )
    from latentmix.latent.keyframes import keyframe_path, keyframe_path_at


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'latentmix' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
