"""Generative backends behind one encode/decode contract, and ``load_backend``.

Importing this package registers the built-in backend classes (VAE, diffusers' AutoencoderKL, AutoencoderTiny
and VQModel, GAN, latent diffusion, SDXL).
"""

from latentmix.backends.autoencoders import AutoencoderKLBackend, AutoencoderTinyBackend, VQModelBackend
from latentmix.backends.base import LatentBackend, is_backend, mix_conditions
from latentmix.backends.files import load_weights
from latentmix.backends.gan import Discriminator, GANBackend, Generator, InversionEncoder
from latentmix.backends.ldm import LatentDiffusionBackend
from latentmix.backends.loading import embedded_models, embedded_models_dir, load_backend, load_directory
from latentmix.backends.options import CallOptions
from latentmix.backends.registry import register_backend, registered_backends
from latentmix.backends.runtime import RunOptions
from latentmix.backends.sdxl import StableDiffusionXLBackend
from latentmix.backends.vae import ConvVAE, VAEBackend

__all__ = [
    "AutoencoderKLBackend",
    "AutoencoderTinyBackend",
    "CallOptions",
    "ConvVAE",
    "Discriminator",
    "GANBackend",
    "Generator",
    "InversionEncoder",
    "LatentBackend",
    "LatentDiffusionBackend",
    "RunOptions",
    "StableDiffusionXLBackend",
    "VAEBackend",
    "VQModelBackend",
    "embedded_models",
    "embedded_models_dir",
    "is_backend",
    "load_backend",
    "load_directory",
    "load_weights",
    "mix_conditions",
    "register_backend",
    "registered_backends",
]
