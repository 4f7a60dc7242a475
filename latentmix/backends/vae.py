"""VAE backends: latentmix's own small convolutional VAE, and an adapter for diffusers' AutoencoderKL.

``VAEBackend`` latents are posterior means multiplied by ``scaling_factor``, which ``fit vae``
sets so that the encoded training set has unit variance per dimension (the same idea as the
0.18215 of Stable Diffusion's VAE). In that space the prior is N(0, I) and slerp is the default
interpolator.

``AutoencoderKLBackend`` puts any diffusers ``AutoencoderKL`` (a Stable Diffusion VAE from a hub
id or a local directory) behind the same contract: latents are ``(mean - shift_factor) *
scaling_factor`` as in diffusers' pipelines. A bare autoencoder has no generative prior, so its
``latent_prior`` is ``None`` and ``sample`` refuses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from latentmix.backends.base import LatentBackend
from latentmix.backends.files import BACKEND_CONFIG, load_weights, move_modules, read_json
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


def downsample_factor(vae: AutoencoderKL) -> int:
    """How much an AutoencoderKL shrinks each side: 2 per block after the first."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


@register_backend("autoencoder-kl")
class AutoencoderKLBackend(LatentBackend):
    """Any diffusers ``AutoencoderKL`` behind the backend contract.

    Args:
        vae: a loaded ``diffusers.AutoencoderKL``.
        image_size: size images are resized to; defaults to ``vae.config.sample_size``.
    """

    latent_prior = None
    default_method = "slerp"

    def __init__(self, vae: AutoencoderKL, image_size: int | None = None):
        if not isinstance(vae, AutoencoderKL):
            raise TypeError(f"vae must be a diffusers AutoencoderKL, got {type(vae).__name__}")
        self.vae = vae.eval()
        size = int(image_size if image_size is not None else vae.config.sample_size)
        if size % self.downsample_factor:
            raise ValueError(
                f"image_size {size} must be divisible by the VAE's downsampling factor {self.downsample_factor}"
            )
        self._image_size = size

    @classmethod
    def from_diffusers(
        cls, name_or_path: str, *, subfolder: str | None = None, image_size: int | None = None, **kwargs
    ) -> AutoencoderKLBackend:
        """Load an AutoencoderKL from a local directory (whole or not at all) or a hub id (safetensors only)."""
        path = Path(name_or_path)
        if path.is_dir():
            vae = load_weights(AutoencoderKL, path / subfolder if subfolder else path, **kwargs)
            return cls(vae, image_size=image_size)
        try:
            vae = AutoencoderKL.from_pretrained(name_or_path, subfolder=subfolder, use_safetensors=True, **kwargs)
        except (OSError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"could not load an AutoencoderKL from {name_or_path!r}: {first}") from None
        return cls(vae, image_size=image_size)

    @classmethod
    def from_pretrained(cls, directory, *, trust_remote_code: bool | None = None, **kwargs) -> AutoencoderKLBackend:
        """A latentmix save of this class, or a plain diffusers ``AutoencoderKL`` folder (no code is run either way)."""
        directory = Path(directory)
        config = directory / BACKEND_CONFIG
        if config.is_file() and "latentmix_backend" not in read_json(config, "backend config"):
            return cls.from_diffusers(str(directory), **kwargs)
        return super().from_pretrained(directory, **kwargs)  # type: ignore[return-value]

    @classmethod
    def claims(cls, directory: Path) -> bool:
        """A latentmix save of this class, or a plain diffusers ``AutoencoderKL`` folder."""
        if super().claims(directory):
            return True
        config = Path(directory) / BACKEND_CONFIG
        try:
            return config.is_file() and read_json(config, "config").get("_class_name") == "AutoencoderKL"
        except ValueError:
            return False

    @property
    def downsample_factor(self) -> int:
        return downsample_factor(self.vae)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def shift_factor(self) -> float:
        return float(self.vae.config.shift_factor or 0.0)

    @property
    def image_size(self) -> int:
        return self._image_size

    @property
    def image_channels(self) -> int:
        return int(self.vae.config.in_channels)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        side = self._image_size // self.downsample_factor
        return (int(self.vae.config.latent_channels), side, side)

    def modules(self) -> dict[str, nn.Module]:
        return {"vae": self.vae}

    def to(self, device=None, dtype=None) -> AutoencoderKLBackend:
        """Place the VAE; a VAE whose config sets ``force_upcast`` (Stable Diffusion's overflow in
        float16) stays in float32 when float16 is asked for, as diffusers' pipelines run it."""
        upcast = dtype == torch.float16 and getattr(self.vae.config, "force_upcast", False)
        move_modules([self.vae], device, torch.float32 if upcast else dtype)
        return self

    def _encode(
        self, images: Tensor, *, sample_posterior: bool = False, generator: torch.Generator | None = None
    ) -> Tensor:
        dist = self.vae.encode(images).latent_dist
        z = dist.sample(generator=generator) if sample_posterior else dist.mean
        return (z - self.shift_factor) * self.scaling_factor

    def _decode(self, latents: Tensor) -> Tensor:
        return self.vae.decode(latents / self.scaling_factor + self.shift_factor).sample.clamp(-1.0, 1.0)

    @torch.no_grad()
    def encode_distribution(self, images: Tensor, **kwargs: Any) -> tuple[Tensor, Tensor]:
        """Posterior mean and std in latent space (shifted and scaled as the latents are)."""
        _no_arguments(kwargs)
        images = self.check_images(images)
        means, stds = [], []
        for start in range(0, images.shape[0], self.batch_size):
            dist = self.vae.encode(images[start : start + self.batch_size]).latent_dist
            means.append((dist.mean - self.shift_factor) * self.scaling_factor)
            stds.append(dist.std * self.scaling_factor)
        return torch.cat(means), torch.cat(stds)

    def _config(self) -> dict[str, Any]:
        return {"image_size": self._image_size}

    def _save_weights(self, directory: Path) -> None:
        self.vae.save_pretrained(directory / "vae", safe_serialization=True)

    @classmethod
    def _load(cls, directory: Path, config: dict[str, Any], **kwargs) -> AutoencoderKLBackend:
        vae = load_weights(AutoencoderKL, directory / "vae")
        return cls(vae, image_size=config.get("image_size"))
