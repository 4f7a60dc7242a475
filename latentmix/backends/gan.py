"""GAN backend: a DCGAN-style generator, a spectral-norm discriminator, and an inversion encoder.

A GAN has no encoder of its own, so real images are encoded by **inversion**:

1. a learned encoder ``E`` (fitted after the GAN so that ``G(E(x)) ≈ x`` and ``E(G(z)) ≈ z``) gives
   a first guess in one pass;
2. optionally, ``encode(images, refine_steps=N)`` refines all latents of the batch at once by
   Adam on a pixel loss, a feature loss in the discriminator's feature space, and a prior penalty
   that keeps ``|z|`` on the typical shell ``√d`` (so slerp paths stay in distribution). Each
   image's loss is its own: the result does not depend on what else is in the batch.

Latents live in N(0, I) (``latent_prior = "gaussian"``), and slerp is the default interpolator.
The generator weights saved are the exponential moving average used for sampling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from latentmix.backends.base import LatentBackend
from latentmix.backends.files import load_weights
from latentmix.backends.options import CallOptions
from latentmix.backends.registry import register_backend
from latentmix.utils.validation import non_negative_int


def _check_size(image_size: int) -> int:
    if image_size < 4 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= 4, got {image_size}")
    return image_size


class Generator(ModelMixin, ConfigMixin):
    """z (latent_dim) → image (channels, image_size, image_size) in [-1, 1]; starts at 4×4, doubles."""

    @register_to_config
    def __init__(self, latent_dim: int = 32, channels: int = 1, image_size: int = 8, width: int = 128):
        super().__init__()
        self.ups = _check_size(image_size).bit_length() - 3  # 4x4 -> image_size
        self.fc = nn.Sequential(nn.Linear(latent_dim, width * 16), nn.BatchNorm1d(width * 16), nn.ReLU())
        blocks: list[nn.Module] = [nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        ch = width
        for _ in range(self.ups):
            blocks += [
                nn.Upsample(scale_factor=2),
                nn.Conv2d(ch, ch // 2, 3, padding=1),
                nn.BatchNorm2d(ch // 2),
                nn.ReLU(),
            ]
            ch //= 2
        blocks += [nn.Conv2d(ch, channels, 3, padding=1), nn.Tanh()]
        self.net = nn.Sequential(*blocks)
        self.width = width

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.fc(z).view(z.shape[0], self.width, 4, 4))


class Discriminator(ModelMixin, ConfigMixin):
    """Spectral-norm conv net; ``features`` is the flattened last conv layer (for feature losses)."""

    @register_to_config
    def __init__(self, channels: int = 1, image_size: int = 8, width: int = 128):
        super().__init__()
        downs = _check_size(image_size).bit_length() - 3
        ch = width // 2**downs
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(channels, ch, 3, padding=1)), nn.LeakyReLU(0.2)]
        for _ in range(downs):
            layers += [spectral_norm(nn.Conv2d(ch, ch * 2, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            ch *= 2
        layers += [spectral_norm(nn.Conv2d(ch, ch, 3, padding=1)), nn.LeakyReLU(0.2), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.head = spectral_norm(nn.Linear(ch * 16, 1))

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)).squeeze(1)


class InversionEncoder(ModelMixin, ConfigMixin):
    """image → z: the first guess of GAN inversion."""

    @register_to_config
    def __init__(self, latent_dim: int = 32, channels: int = 1, image_size: int = 8, width: int = 128):
        super().__init__()
        downs = _check_size(image_size).bit_length() - 3
        ch = width // 2**downs
        layers: list[nn.Module] = [nn.Conv2d(channels, ch, 3, padding=1), nn.SiLU()]
        for _ in range(downs):
            layers += [nn.Conv2d(ch, ch * 2, 4, stride=2, padding=1), nn.GroupNorm(8, ch * 2), nn.SiLU()]
            ch *= 2
        layers += [
            nn.Conv2d(ch, ch, 3, padding=1),
            nn.SiLU(),
            nn.Flatten(),
            nn.Linear(ch * 16, 256),
            nn.SiLU(),
            nn.Linear(256, latent_dim),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@register_backend("gan")
class GANBackend(LatentBackend):
    """A GAN behind the backend contract; encodes by inversion.

    Args:
        generator: the (EMA) generator.
        discriminator: used for the feature loss of refinement (optional).
        encoder: the inversion encoder (optional; needed by ``encode``).
        refine_lr, feature_weight, prior_weight: refinement settings.
    """

    latent_prior = "gaussian"
    default_method = "slerp"
    encoder_kind = "inversion"
    option_names = frozenset({"refine_steps"})

    def __init__(
        self,
        generator: Generator,
        discriminator: Discriminator | None = None,
        encoder: InversionEncoder | None = None,
        *,
        refine_lr: float = 0.05,
        feature_weight: float = 0.05,
        prior_weight: float = 0.1,
    ):
        if not isinstance(generator, Generator):
            raise TypeError(f"generator must be a Generator, got {type(generator).__name__}")
        self.generator = generator.eval()
        self.discriminator = discriminator.eval() if discriminator is not None else None
        self.encoder = encoder.eval() if encoder is not None else None
        self.refine_lr, self.feature_weight, self.prior_weight = (
            float(refine_lr),
            float(feature_weight),
            float(prior_weight),
        )

    @property
    def image_size(self) -> int:
        return int(self.generator.config.image_size)

    @property
    def image_channels(self) -> int:
        return int(self.generator.config.channels)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (int(self.generator.config.latent_dim),)

    def modules(self) -> dict[str, nn.Module]:
        parts = {"generator": self.generator, "discriminator": self.discriminator, "encoder": self.encoder}
        return {k: v for k, v in parts.items() if v is not None}

    def _resolve_options(self, options: CallOptions) -> CallOptions:
        """Jobs refine the encoder's guess by ``DEFAULT_REFINE_STEPS`` unless told otherwise."""
        steps = self.DEFAULT_REFINE_STEPS if options.refine_steps is None else options.refine_steps
        return options.replace(refine_steps=non_negative_int(steps, options.name("refine_steps")))

    def _encode(self, images: Tensor, *, refine_steps: int = 0) -> Tensor:
        """Invert images: the encoder's guess, refined by ``refine_steps`` batched optimisation steps."""
        non_negative_int(refine_steps, "refine_steps")
        if self.encoder is None:
            raise ValueError(
                "this GAN checkpoint has no inversion encoder: `latentmix fit gan --out DIR` fits one after the GAN "
                "(re-running the same command on an interrupted run resumes into that phase)"
            )
        if refine_steps and self.discriminator is None and self.feature_weight > 0:
            raise ValueError("refinement with a feature loss needs the discriminator, which this checkpoint lacks")
        with torch.no_grad():
            z = self.encoder(images)
        return self.refine(images, z, refine_steps) if refine_steps else z

    def refine(self, images: Tensor, z: Tensor, steps: int) -> Tensor:
        """Optimise latents ``z`` (N, d) so that ``G(z)`` matches ``images``, all rows at once."""
        d = z.shape[1]
        disc = self.discriminator
        if self.feature_weight > 0 and disc is None:
            raise ValueError("refinement with a feature loss needs the discriminator, which this checkpoint lacks")
        with torch.inference_mode(False), torch.enable_grad():
            images = images.detach().clone()
            z = z.detach().clone().requires_grad_(True)
            target = disc.features(images).detach() if disc is not None and self.feature_weight > 0 else None
            opt = torch.optim.Adam([z], lr=self.refine_lr)
            for _ in range(steps):
                x = self.generator(z)
                per_image = (x - images).pow(2).flatten(1).mean(1)
                if disc is not None and target is not None:
                    per_image = per_image + self.feature_weight * (disc.features(x) - target).pow(2).mean(1)
                shell = z.norm(dim=1) / d**0.5 - 1.0
                loss = (per_image + self.prior_weight * shell.pow(2)).sum()  # a sum: each row's gradient is its own
                (z.grad,) = torch.autograd.grad(loss, [z])  # no gradients left in the networks' weights
                opt.step()
        return z.detach()

    def _decode(self, latents: Tensor) -> Tensor:
        return self.generator(latents)

    def _config(self) -> dict[str, Any]:
        return {"refine_lr": self.refine_lr, "feature_weight": self.feature_weight, "prior_weight": self.prior_weight}

    def _save_weights(self, directory: Path) -> None:
        for name, module in self.modules().items():
            module.save_pretrained(directory / name, safe_serialization=True)  # type: ignore[operator]

    @classmethod
    def _load(cls, directory: Path, config: dict[str, Any], **kwargs) -> GANBackend:
        parts = {}
        for name, klass in (("generator", Generator), ("discriminator", Discriminator), ("encoder", InversionEncoder)):
            parts[name] = load_weights(klass, directory / name) if (directory / name).is_dir() else None
        if parts["generator"] is None:
            raise ValueError(f"{directory} has no generator/ folder; not a complete GAN checkpoint")
        settings = {k: config[k] for k in ("refine_lr", "feature_weight", "prior_weight") if k in config}
        return cls(parts["generator"], parts["discriminator"], parts["encoder"], **settings)
