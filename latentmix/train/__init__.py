"""Training loops: fitting backends (``fit_vae``, ``fit_gan``, ``fit_ldm``) and the classifier trainer.

Each loop is accelerate-based and resumable where it runs long; settings live in :mod:`latentmix.configs`.
"""

from latentmix.train.common import FitResult
from latentmix.train.fit_vae import VAEFitConfig, fit_vae

__all__ = ["FitResult", "VAEFitConfig", "fit_vae"]
