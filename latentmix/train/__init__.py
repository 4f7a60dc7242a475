"""Training loops: fitting backends (``fit_vae``); the classifier trainer comes later."""

from latentmix.train.fit_vae import VAEFitConfig, fit_vae

__all__ = ["VAEFitConfig", "fit_vae"]
