"""latentmix: encode real data into a generative model's latent space, walk, decode.

The public names below are imported on first use (PEP 562), so ``import latentmix`` and the
``latentmix`` command start without loading torch or diffusers until a job needs them.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from latentmix.version import __version__

_EXPORTS = {
    "GridResult": "latentmix.grid",
    "LatentBackend": "latentmix.backends",
    "decode_keyframe_walk": "latentmix.keyframe_walk",
    "decode_walk": "latentmix.grid",
    "embedded_models": "latentmix.backends",
    "interpolate": "latentmix.interpolate",
    "interpolation_grid": "latentmix.grid",
    "interpolation_grid_2d": "latentmix.interpolate",
    "interpolation_path": "latentmix.interpolate",
    "keyframe_path": "latentmix.keyframes",
    "keyframe_path_at": "latentmix.keyframes",
    "lerp": "latentmix.interpolate",
    "load_backend": "latentmix.backends",
    "load_dataset": "latentmix.data",
    "sample_lambda": "latentmix.interpolate",
    "slerp": "latentmix.interpolate",
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
    from latentmix.grid import GridResult, decode_walk, interpolation_grid
    from latentmix.interpolate import (
        interpolate,
        interpolation_grid_2d,
        interpolation_path,
        lerp,
        sample_lambda,
        slerp,
    )
    from latentmix.keyframe_walk import decode_keyframe_walk
    from latentmix.keyframes import keyframe_path, keyframe_path_at


class _Package(types.ModuleType):
    """``latentmix.interpolate`` is the function (as it always was), although a submodule has the same name:
    importing the submodule must not replace the package attribute (``from latentmix.interpolate import slerp``
    still reads the module from ``sys.modules``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "interpolate" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'latentmix' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
