"""Training: the loops that fit backends and judges, the classifier trainer, and what they share.

* fitting: :func:`fit_vae`, :func:`fit_gan`, :func:`fit_ldm`, :func:`fit_reference_classifier`, :func:`fit_align`
  (each returns a :class:`FitResult`; accelerate-based, resumable where they run long);
* classifiers: :func:`train_classifier` (mixup family in :mod:`~latentmix.train.mixup` and
  :mod:`~latentmix.train.mixup_guided`), :class:`MixupClassifier` (the scikit-learn estimator);
* one-file training states (:mod:`~latentmix.train.checkpoint`) and model cards (:mod:`~latentmix.train.cards`).

Settings live in :mod:`latentmix.configs`. The names are imported on first use, so importing one loop does not
load the others.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "FitResult": "latentmix.train.common",
    "MixupClassifier": "latentmix.train.estimator",
    "TrainResult": "latentmix.train.classifier",
    "fit_align": "latentmix.train.fit_align",
    "fit_gan": "latentmix.train.fit_gan",
    "fit_ldm": "latentmix.train.fit_ldm",
    "fit_reference_classifier": "latentmix.train.fit_reference",
    "fit_vae": "latentmix.train.fit_vae",
    "train_classifier": "latentmix.train.classifier",
}
__all__ = [
    "FitResult",
    "MixupClassifier",
    "TrainResult",
    "fit_align",
    "fit_gan",
    "fit_ldm",
    "fit_reference_classifier",
    "fit_vae",
    "train_classifier",
]

if TYPE_CHECKING:
    from latentmix.train.classifier import TrainResult, train_classifier
    from latentmix.train.common import FitResult
    from latentmix.train.estimator import MixupClassifier
    from latentmix.train.fit_align import fit_align
    from latentmix.train.fit_gan import fit_gan
    from latentmix.train.fit_ldm import fit_ldm
    from latentmix.train.fit_reference import fit_reference_classifier
    from latentmix.train.fit_vae import fit_vae


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'latentmix.train' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
