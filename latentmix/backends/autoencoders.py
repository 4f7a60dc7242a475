"""Adapters for diffusers' autoencoders: ``AutoencoderKL``, ``AutoencoderTiny`` (TAESD) and ``VQModel``.

Each puts a loaded diffusers model behind the backend contract, loads from a plain diffusers folder
(``config.json`` + safetensors, e.g. the ``vae/`` folder of a pipeline, or a pipeline root with
``subfolder="vae"``), from a latentmix save, or from a hub id. A bare autoencoder has no generative prior:
``latent_prior`` is None and ``sample`` refuses. Latents follow diffusers' pipelines:

* ``AutoencoderKL`` (Stable Diffusion's VAE): ``(posterior mean − shift_factor) · scaling_factor``
  (``sample_posterior=True`` draws from the posterior instead). Slerp is the default interpolator: the
  scaled latents are roughly unit-variance Gaussian, and slerp keeps midpoints on their shell.
* ``AutoencoderTiny`` (TAESD, the fast preview decoder of the Stable Diffusion family): its encoder's
  output, ``(z − shift_factor) · scaling_factor`` (TAESD's are already in Stable Diffusion's scaled latent
  space: scaling 1, shift 0). Deterministic; slerp by default, as for the VAE it stands in for.
* ``VQModel`` (the VQ autoencoders of the original latent-diffusion models): the **pre-quantization**
  latents ``quant_conv(encoder(x)) · scaling_factor`` — the space latent diffusion works in — are the ones
  encoded, interpolated and blended. ``decode`` **re-quantizes** them to the nearest codebook entries
  first by default (``requantize=True``, as diffusers' ``VQModel.decode`` and the LDM pipelines do: the
  decoder was trained on codebook vectors); ``requantize=False`` decodes the continuous latents as they are,
  which makes walks smooth instead of stepping from code to code. :meth:`VQModelBackend.quantize` snaps
  latents to the codebook. Lerp is the default interpolator: pre-quantization latents are not Gaussian.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, VQModel
from torch import Tensor, nn

from latentmix.backends.base import LatentBackend
from latentmix.backends.files import BACKEND_CONFIG, load_weights, move_modules, read_json
from latentmix.backends.registry import register_backend
from latentmix.utils.validation import positive_int

__all__ = ["AutoencoderKLBackend", "AutoencoderTinyBackend", "DiffusersAutoencoderBackend", "VQModelBackend"]


def _no_arguments(kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise TypeError(f"encode_distribution takes no keyword arguments here, got {', '.join(kwargs)}")


def downsample_factor(model: nn.Module) -> int:
    """How much a diffusers autoencoder shrinks each side: 2 per block after the first."""
    config: Any = model.config
    blocks = config.get("encoder_block_out_channels") or config.get("block_out_channels")
    factor = int(config.get("upsampling_scaling_factor", 2))
    return int(factor ** (len(blocks) - 1))


class DiffusersAutoencoderBackend(LatentBackend):
    """What the diffusers autoencoder adapters share: loading, shapes, placement, saving.

    Args:
        vae: the loaded diffusers model (of the subclass's ``model_class``).
        image_size: size of the images it encodes; defaults to the model config's ``sample_size`` (or, where
            the config has none, 8 latent cells per side).
    """

    latent_prior = None
    default_method = "slerp"
    model_class: ClassVar[Any]  # the diffusers model class
    backend_options: ClassVar[tuple[str, ...]] = ()  # constructor options beyond image_size (from_diffusers)
    vae: Any  # the diffusers model

    def __init__(self, vae: Any, image_size: int | None = None):
        if not isinstance(vae, self.model_class):
            raise TypeError(f"vae must be a diffusers {self.model_class.__name__}, got {type(vae).__name__}")
        self.vae = vae.eval()
        default = vae.config.get("sample_size") or 8 * downsample_factor(vae)
        size = int(image_size if image_size is not None else default)
        if size % self.downsample_factor:
            raise ValueError(
                f"image_size {size} must be divisible by the autoencoder's downsampling factor {self.downsample_factor}"
            )
        self._image_size = size
        self._resolution: tuple[int, int] | None = None  # set_resolution; saves keep the native size

    @classmethod
    def from_diffusers(
        cls, name_or_path: str, *, subfolder: str | None = None, image_size: int | None = None, **kwargs
    ) -> Any:
        """Load the model from a local directory (whole or not at all) or a hub id (safetensors only).

        ``kwargs`` named in ``backend_options`` (VQ: ``requantize``) go to the backend, the rest to the loader.
        """
        path = Path(name_or_path)
        name = cls.model_class.__name__
        options = {k: kwargs.pop(k) for k in cls.backend_options if k in kwargs}
        if path.is_dir():
            model = load_weights(cls.model_class, path / subfolder if subfolder else path, **kwargs)
            return cls(model, image_size=image_size, **options)
        try:
            model = cls.model_class.from_pretrained(name_or_path, subfolder=subfolder, use_safetensors=True, **kwargs)
        except (OSError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"could not load an {name} from {name_or_path!r}: {first}") from None
        return cls(model, image_size=image_size, **options)

    @classmethod
    def from_pretrained(cls, directory, *, trust_remote_code: bool | None = None, **kwargs) -> Any:
        """A latentmix save of this class, or a plain diffusers folder of its model (no code is run either way)."""
        directory = Path(directory)
        config = directory / BACKEND_CONFIG
        if config.is_file() and "latentmix_backend" not in read_json(config, "backend config"):
            return cls.from_diffusers(str(directory), **kwargs)
        return super().from_pretrained(directory, **kwargs)

    @classmethod
    def claims(cls, directory: Path) -> bool:
        """A latentmix save of this class, or a plain diffusers folder of its model (``_class_name``)."""
        if super().claims(directory):
            return True
        config = Path(directory) / BACKEND_CONFIG
        try:
            return config.is_file() and read_json(config, "config").get("_class_name") == cls.model_class.__name__
        except ValueError:
            return False

    @property
    def downsample_factor(self) -> int:
        return downsample_factor(self.vae)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.get("scaling_factor") or 1.0)

    @property
    def shift_factor(self) -> float:
        return float(self.vae.config.get("shift_factor") or 0.0)

    @property
    def image_size(self) -> int:
        return max(self._resolution) if self._resolution else self._image_size

    @property
    def image_shape(self) -> tuple[int, int]:
        return self._resolution or (self._image_size, self._image_size)

    @property
    def native_image_size(self) -> int:
        """The size it was made for (and is saved with), whatever :meth:`set_resolution` asked for since."""
        return self._image_size

    def set_resolution(self, height: int, width: int) -> None:
        """Encode and decode ``height`` × ``width`` images (multiples of the downsampling factor); a convolutional
        autoencoder takes any such size."""
        for name, value in (("height", height), ("width", width)):
            positive_int(value, name)
            if value % self.downsample_factor:
                raise ValueError(f"{name} {value} must be a multiple of {self.downsample_factor}, the autoencoder's "
                                 "downsampling factor")  # fmt: skip
        self._resolution = None if height == width == self._image_size else (int(height), int(width))

    @property
    def image_channels(self) -> int:
        return int(self.vae.config.in_channels)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        height, width = (side // self.downsample_factor for side in self.image_shape)
        config = self.vae.config
        return (int(config.get("vq_embed_dim") or config.latent_channels), height, width)

    def modules(self) -> dict[str, nn.Module]:
        return {"vae": self.vae}

    def to(self, device=None, dtype=None) -> Any:
        """Place the model; one whose config sets ``force_upcast`` (Stable Diffusion's VAE overflows in
        float16) stays in float32 when half precision (float16 or bfloat16) is asked for, as diffusers' pipelines
        run it in float16 (bfloat16 does not overflow, but loses the decoder's precision; float32 is cheap here)."""
        upcast = dtype in (torch.float16, torch.bfloat16) and bool(self.vae.config.get("force_upcast", False))
        move_modules([self.vae], device, torch.float32 if upcast else dtype)
        return self

    def _config(self) -> dict[str, Any]:
        return {"image_size": self._image_size}

    def _save_weights(self, directory: Path) -> None:
        self.vae.save_pretrained(directory / "vae", safe_serialization=True)

    @classmethod
    def _load(cls, directory: Path, config: dict[str, Any], **kwargs) -> Any:
        model = load_weights(cls.model_class, directory / "vae")
        return cls(model, image_size=config.get("image_size"), **kwargs)


@register_backend("autoencoder-kl")
class AutoencoderKLBackend(DiffusersAutoencoderBackend):
    """Any diffusers ``AutoencoderKL`` (a Stable Diffusion VAE) behind the backend contract."""

    model_class = AutoencoderKL

    def _encode(
        self, images: Tensor, *, sample_posterior: bool = False, generator: torch.Generator | None = None
    ) -> Tensor:
        dist = self.vae.encode(images).latent_dist
        z = dist.sample(generator=generator) if sample_posterior else dist.mean
        return (z - self.shift_factor) * self.scaling_factor

    def _decode(self, latents: Tensor) -> Tensor:
        out = self.vae.decode(latents / self.scaling_factor + self.shift_factor)
        return out.sample.clamp(-1.0, 1.0)

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


@register_backend("autoencoder-tiny")
class AutoencoderTinyBackend(DiffusersAutoencoderBackend):
    """Any diffusers ``AutoencoderTiny`` (TAESD-style, deterministic) behind the backend contract."""

    model_class = AutoencoderTiny

    def _encode(self, images: Tensor) -> Tensor:
        return (self.vae.encode(images).latents - self.shift_factor) * self.scaling_factor

    def _decode(self, latents: Tensor) -> Tensor:
        out = self.vae.decode(latents / self.scaling_factor + self.shift_factor)
        return out.sample.clamp(-1.0, 1.0)


@register_backend("vq")
class VQModelBackend(DiffusersAutoencoderBackend):
    """Any diffusers ``VQModel`` behind the backend contract (see the module docstring for its latents).

    Args:
        vae: a loaded ``diffusers.VQModel``.
        image_size: as for the other autoencoders.
        requantize: snap latents to the codebook before decoding (default, as the model was trained);
            False decodes the continuous pre-quantization latents.
    """

    model_class = VQModel
    default_method = "lerp"
    backend_options = ("requantize",)

    def __init__(self, vae: Any, image_size: int | None = None, *, requantize: bool = True):
        super().__init__(vae, image_size)
        if not isinstance(requantize, bool):
            raise TypeError(f"requantize must be a bool, got {type(requantize).__name__}")
        if not requantize and bool(vae.config.get("lookup_from_codebook", False)):
            raise ValueError(
                "requantize=False: this VQModel decodes codebook indices (lookup_from_codebook), not continuous "
                "latents; keep requantize=True"
            )
        self.requantize = requantize

    @property
    def codebook_size(self) -> int:
        return int(self.vae.config.num_vq_embeddings)

    def _encode(self, images: Tensor) -> Tensor:
        return self.vae.encode(images).latents * self.scaling_factor

    def _decode(self, latents: Tensor) -> Tensor:
        out = self.vae.decode(latents / self.scaling_factor, force_not_quantize=not self.requantize)
        return out.sample.clamp(-1.0, 1.0)

    @torch.no_grad()
    def quantize(self, latents: Tensor) -> Tensor:
        """Latents snapped to their nearest codebook entries (in the same scaled space)."""
        latents = self.check_latents(latents)
        quant, _, _ = self.vae.quantize(latents / self.scaling_factor)
        return quant * self.scaling_factor

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "requantize": self.requantize}

    @classmethod
    def _load(cls, directory: Path, config: dict[str, Any], **kwargs) -> Any:
        kwargs.setdefault("requantize", bool(config.get("requantize", True)))
        return super()._load(directory, config, **kwargs)
