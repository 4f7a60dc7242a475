"""Generative backends behind one encode/decode contract, and ``load_backend``."""

from latentmix.backends.base import LatentBackend, register_backend, registered_backends
from latentmix.backends.gan import Discriminator, GANBackend, Generator, InversionEncoder
from latentmix.backends.ldm import LatentDiffusionBackend
from latentmix.backends.loading import embedded_models, load_backend
from latentmix.backends.vae import AutoencoderKLBackend, ConvVAE, VAEBackend

__all__ = [
    "AutoencoderKLBackend",
    "ConvVAE",
    "Discriminator",
    "GANBackend",
    "Generator",
    "InversionEncoder",
    "LatentBackend",
    "LatentDiffusionBackend",
    "VAEBackend",
    "embedded_models",
    "load_backend",
    "register_backend",
    "registered_backends",
]
