"""latentmix's own small convolutional VAE (the adapters for diffusers' autoencoders live in
:mod:`latentmix.backends.autoencoders`).

``VAEBackend`` latents are posterior means multiplied by ``scaling_factor``, which ``fit vae``
sets so that the encoded training set has unit variance per dimension (the same idea as the
0.18215 of Stable Diffusion's VAE). In that space the prior is N(0, I) and slerp is the default
interpolator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from latentmix.backends.base import LatentBackend
from latentmix.backends.files import load_weights
from latentmix.backends.registry import register_backend


def _no_arguments(kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise TypeError(f"encode_distribution takes no keyword arguments here, got {', '.join(kwargs)}")


def _groups(channels: int) -> int:
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(_groups(cout), cout), nn.SiLU())


class ConvVAE(ModelMixin, ConfigMixin):
    """A small convolutional VAE with a Gaussian latent: a flat vector, or a spatial map.

    Args:
        in_channels: 1 (grayscale) or 3 (RGB).
        image_size: square input size; must be divisible by ``2 ** (len(block_channels) - 1)``.
        latent_dim: size of the flat latent vector (when ``latent_channels`` is None).
        block_channels: channels per resolution; each block after the first halves the size.
        layers_per_block: 3x3 conv layers per resolution.
        latent_channels: a spatial latent of this many channels at the lowest resolution (as Stable
            Diffusion's VAE keeps 4 channels at 1/8 of the side), instead of a flat vector; latent
            diffusion then denoises a real map.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 8,
        latent_dim: int = 16,
        block_channels: tuple[int, ...] = (32, 64),
        layers_per_block: int = 1,
        latent_channels: int | None = None,
    ):
        super().__init__()
        factor = 2 ** (len(block_channels) - 1)
        if image_size % factor:
            raise ValueError(f"image_size {image_size} must be divisible by {factor} for {len(block_channels)} blocks")
        self.bottom = image_size // factor
        enc: list[nn.Module] = [_conv_block(in_channels, block_channels[0])]
        for i, ch in enumerate(block_channels):
            if i > 0:
                enc.append(nn.Conv2d(block_channels[i - 1], ch, 3, stride=2, padding=1))
            enc.extend(_conv_block(ch, ch) for _ in range(layers_per_block))
        self.encoder = nn.Sequential(*enc)
        self.spatial = latent_channels is not None
        top = block_channels[-1]
        if latent_channels is not None:
            self.to_moments: nn.Module = nn.Conv2d(top, 2 * latent_channels, 3, padding=1)
            self.from_latent: nn.Module = nn.Conv2d(latent_channels, top, 3, padding=1)
        else:
            self.to_moments = nn.Linear(top * self.bottom**2, 2 * latent_dim)
            self.from_latent = nn.Linear(latent_dim, top * self.bottom**2)
        dec: list[nn.Module] = []
        rev = list(reversed(block_channels))
        for i, ch in enumerate(rev):
            dec.extend(_conv_block(ch, ch) for _ in range(layers_per_block))
            if i + 1 < len(rev):
                dec.extend([nn.Upsample(scale_factor=2, mode="nearest"), _conv_block(ch, rev[i + 1])])
        dec.append(nn.Conv2d(rev[-1], in_channels, 3, padding=1))
        self.decoder = nn.Sequential(*dec)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        if self.spatial:
            return (int(self.config.latent_channels), self.bottom, self.bottom)
        return (int(self.config.latent_dim),)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return the posterior mean and log-variance, each (N, *latent_shape)."""
        h = self.encoder(x)
        mean, logvar = self.to_moments(h if self.spatial else h.flatten(1)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: Tensor) -> Tensor:
        """Images in [-1, 1] from raw (unscaled) latents."""
        ch = self.config.block_channels[-1]
        h = self.from_latent(z)
        if not self.spatial:
            h = h.view(z.shape[0], ch, self.bottom, self.bottom)
        return torch.tanh(self.decoder(h))

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        mean, logvar = self.encode(x)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean + torch.exp(0.5 * logvar) * eps
        return self.decode(z), mean, logvar


@register_backend("vae")
class VAEBackend(LatentBackend):
    """latentmix's :class:`ConvVAE` behind the backend contract.

    Args:
        model: a :class:`ConvVAE`.
        scaling_factor: latents are ``posterior_mean * scaling_factor``.
    """

    latent_prior = "gaussian"
    default_method = "slerp"

    def __init__(self, model: ConvVAE, scaling_factor: float = 1.0):
        if not isinstance(model, ConvVAE):
            raise TypeError(f"model must be a ConvVAE, got {type(model).__name__}")
        if not scaling_factor > 0:
            raise ValueError(f"scaling_factor must be > 0, got {scaling_factor}")
        self.model = model.eval()
        self.scaling_factor = float(scaling_factor)

    @property
    def image_size(self) -> int:
        return int(self.model.config.image_size)

    @property
    def image_channels(self) -> int:
        return int(self.model.config.in_channels)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self.model.latent_shape

    def modules(self) -> dict[str, nn.Module]:
        return {"vae": self.model}

    def _encode(
        self, images: Tensor, *, sample_posterior: bool = False, generator: torch.Generator | None = None
    ) -> Tensor:
        mean, logvar = self.model.encode(images)
        if sample_posterior:
            gen_device = generator.device if generator is not None else mean.device
            eps = torch.randn(mean.shape, generator=generator, device=gen_device).to(mean)
            mean = mean + torch.exp(0.5 * logvar) * eps
        return mean * self.scaling_factor

    def _decode(self, latents: Tensor) -> Tensor:
        return self.model.decode(latents / self.scaling_factor)

    @torch.no_grad()
    def encode_distribution(self, images: Tensor, **kwargs: Any) -> tuple[Tensor, Tensor]:
        """Posterior mean and std in latent space (both × ``scaling_factor``)."""
        _no_arguments(kwargs)
        images = self.check_images(images)
        means, stds = [], []
        for start in range(0, images.shape[0], self.batch_size):
            mean, logvar = self.model.encode(images[start : start + self.batch_size])
            means.append(mean * self.scaling_factor)
            stds.append(torch.exp(0.5 * logvar) * self.scaling_factor)
        return torch.cat(means), torch.cat(stds)

    def _config(self) -> dict[str, Any]:
        return {"scaling_factor": self.scaling_factor}

    def _save_weights(self, directory: Path) -> None:
        self.model.save_pretrained(directory / "vae", safe_serialization=True)

    @classmethod
    def _load(cls, directory: Path, config: dict[str, Any], **kwargs) -> VAEBackend:
        model = load_weights(ConvVAE, directory / "vae")
        return cls(model, scaling_factor=float(config.get("scaling_factor", 1.0)))
