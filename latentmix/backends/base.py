"""The backend contract every generative model in latentmix answers, plus the registry.

A backend maps images to latents and back:

* ``encode(images) -> latents``: images are float NCHW in [-1, 1] at ``image_size`` with
  ``image_channels`` channels; latents have shape ``(N, *latent_shape)`` in the backend's
  documented, normalised space (the backend owns its scaling factors). A VAE encodes with its
  encoder, a GAN by inversion, a latent-diffusion model by DDIM inversion; keyword arguments
  that only some backends take (``texts``, ``refine_steps``, ``num_inference_steps``) pass
  through ``**kwargs`` to the backend's own ``_encode``.
* ``decode(latents) -> images`` in [-1, 1], batched.
* ``sample(n, generator=...) -> latents`` drawn from the prior (``latent_prior``).
* ``reconstruction_error(images)``: how faithfully encode → decode reproduces the input.

Capabilities are class attributes that callers read instead of ``isinstance`` checks:

* ``latent_prior``: ``"gaussian"`` if ``sample`` draws N(0, I) latents that decode to data,
  ``None`` if the latent space has no generative prior (a bare autoencoder);
* ``default_method``: the interpolator grids and blends use when none is asked for;
* ``supports_text_condition`` / ``requires_text``: whether ``encode`` and ``decode`` take
  (or need) ``texts=``;
* ``encoder_kind``: ``"amortized"`` (one network pass), ``"inversion"`` or ``"ddim-inversion"``.

Saved form: a directory with ``config.json`` (``latentmix_backend`` names the registered class)
and the backend's weights as safetensors (one diffusers-style subfolder per module). Pickled
weights are refused.
"""

from __future__ import annotations

import abc
import json
import os
import shutil
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from latentmix.atomic import replace_dir, tmp_name
from latentmix.version import __version__

BACKEND_CONFIG = "config.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

_REGISTRY: dict[str, type["LatentBackend"]] = {}


def register_backend(name: str):
    """Class decorator: make a backend loadable by ``name`` (stored in its config.json)."""

    def wrap(cls: type[LatentBackend]) -> type[LatentBackend]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"a backend named {name!r} is already registered ({_REGISTRY[name].__name__})")
        cls.backend_name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def registered_backends() -> dict[str, type["LatentBackend"]]:
    return dict(_REGISTRY)


def get_backend_class(name: str) -> type["LatentBackend"]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend class {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def refuse_pickles(directory: Path) -> None:
    """Raise if ``directory`` holds pickled weights and no safetensors beside them."""
    files = [p for p in directory.rglob("*") if p.is_file()]
    pickles = [p for p in files if p.suffix in PICKLE_SUFFIXES]
    if pickles and not any(p.suffix == ".safetensors" for p in files):
        raise ValueError(
            f"{directory} holds pickled weights ({pickles[0].name}) and no .safetensors; latentmix refuses "
            "to load pickles (they can run arbitrary code): convert them to safetensors first"
        )


def read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"{what}: {path} is missing")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{what}: {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what}: {path} must hold a JSON object")
    return data


def atomic_directory(target: Path, write, *, marker: str = "latentmix_backend") -> Path:
    """Call ``write(tmp_dir)`` and move the finished directory to ``target`` in one rename.

    An interrupted save leaves a hidden ``.tmp-*`` directory, never a half-written ``target``.
    An existing ``target`` is replaced only if it is empty or a saved model (its config.json
    names ``marker``); anything else is refused, so no user files are lost.
    """
    target = Path(target)
    if target.exists():
        if not target.is_dir():
            raise ValueError(f"save directory {target} exists and is not a directory")
        cfg = target / BACKEND_CONFIG
        is_saved = cfg.is_file() and marker in cfg.read_text()
        if any(target.iterdir()) and not is_saved:
            raise ValueError(
                f"save directory {target} is not empty and does not hold a saved latentmix model; choose another"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(target)
    tmp.mkdir()
    try:
        write(tmp)
        replace_dir(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def move_modules(modules, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
    """``module.to(device, dtype)`` for each module, without diffusers' dtype-cast warnings (not for our modules)."""
    from diffusers.utils import logging as diffusers_logging

    kwargs = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        for module in modules:
            module.to(**kwargs)
    finally:
        diffusers_logging.set_verbosity(verbosity)


class LatentBackend(abc.ABC):
    """Base class of all backends; see the module docstring for the contract."""

    backend_name: ClassVar[str] = ""
    latent_prior: ClassVar[str | None] = "gaussian"
    default_method: ClassVar[str] = "slerp"
    supports_text_condition: ClassVar[bool] = False
    requires_text: ClassVar[bool] = False
    encoder_kind: ClassVar[str] = "amortized"

    #: Largest number of images or latents sent through a network at once.
    batch_size: int = 256
    #: Refinement steps that grids and synthesis use for inversion backends by default.
    DEFAULT_REFINE_STEPS: ClassVar[int] = 100

    def encode_kwargs(self, refine_steps: int | None = None) -> dict:
        """Keyword arguments for :meth:`encode` in high-level jobs (grids, synthesis, evaluation).

        Inversion backends refine their encoder's guess (``DEFAULT_REFINE_STEPS`` unless given);
        asking other backends to refine is an error.
        """
        if self.encoder_kind != "inversion":
            if refine_steps:
                raise ValueError(
                    f"refine_steps applies to inversion backends (GANs); {self.backend_name!r} encodes with {self.encoder_kind} encoding"
                )
            return {}
        return {"refine_steps": self.DEFAULT_REFINE_STEPS if refine_steps is None else refine_steps}

    def sampling_kwargs(self, num_inference_steps: int | None = None, guidance_scale: float | None = None) -> dict:
        """Keyword arguments for :meth:`encode` / :meth:`decode` of diffusion backends (DDIM steps,
        classifier-free guidance); None keeps the backend's default, and setting them for other
        backends is an error."""
        given = {
            k: v
            for k, v in (("num_inference_steps", num_inference_steps), ("guidance_scale", guidance_scale))
            if v is not None
        }
        if given and self.encoder_kind != "ddim-inversion":
            raise ValueError(f"{' and '.join(given)} apply to diffusion backends; {self.backend_name!r} has no sampler")
        return given

    # -- shape and placement -------------------------------------------------------------
    @property
    @abc.abstractmethod
    def image_size(self) -> int:
        """Height and width of the square images the backend encodes and decodes."""

    @property
    @abc.abstractmethod
    def image_channels(self) -> int:
        """1 for grayscale, 3 for RGB."""

    @property
    @abc.abstractmethod
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one latent (no batch dim)."""

    @abc.abstractmethod
    def modules(self) -> dict[str, torch.nn.Module]:
        """The torch modules that make up the backend, by name (for placement and saving)."""

    @property
    def device(self) -> torch.device:
        return next(iter(self.modules().values())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.modules().values())).dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "LatentBackend":
        move_modules(self.modules().values(), device, dtype)
        return self

    def eval(self) -> "LatentBackend":
        for module in self.modules().values():
            module.eval()
        return self

    # -- the contract --------------------------------------------------------------------
    @abc.abstractmethod
    def _encode(self, images: Tensor, **kwargs) -> Tensor:
        """Encode one validated batch (on the backend's device and dtype)."""

    @abc.abstractmethod
    def _decode(self, latents: Tensor, **kwargs) -> Tensor:
        """Decode one validated batch."""

    def encode(self, images: Tensor, *, texts: list[str] | None = None, cond: Tensor | None = None, **kwargs) -> Tensor:
        """Encode images (N, C, H, W) in [-1, 1] to latents (N, *latent_shape), in chunks of ``batch_size``.

        Text-conditioned backends take one text per image (``texts``) or its conditioning
        (``cond``, from :meth:`encode_text`, possibly blended).
        """
        images = self.check_images(images)
        return self._chunked(self._encode, images, texts, cond, kwargs)

    def decode(
        self, latents: Tensor, *, texts: list[str] | None = None, cond: Tensor | None = None, **kwargs
    ) -> Tensor:
        """Decode latents (N, *latent_shape) to images (N, C, H, W) in [-1, 1], in chunks of ``batch_size``."""
        latents = self.check_latents(latents)
        return self._chunked(self._decode, latents, texts, cond, kwargs)

    def encode_text(self, texts: list[str]) -> Tensor:
        """Conditioning for ``texts`` (N, *cond_shape), for text-conditioned backends.

        Conditionings of two texts have the same shape, so they blend with one λ like latents.
        """
        raise ValueError(f"backend {self.backend_name!r} is not text-conditioned; it takes no texts")

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` latents from the prior (N(0, I) for ``latent_prior == "gaussian"``)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        if self.latent_prior != "gaussian":
            raise ValueError(
                f"backend {self.backend_name!r} has no generative prior to sample from "
                "(latent_prior is None); encode real images instead"
            )
        gen_device = generator.device if generator is not None else torch.device("cpu")
        z = torch.randn((n, *self.latent_shape), generator=generator, device=gen_device)
        return z.to(device=self.device, dtype=self.dtype)

    def reconstruct(
        self, images: Tensor, *, texts: list[str] | None = None, cond: Tensor | None = None, **kwargs
    ) -> Tensor:
        """decode(encode(images)); sampler settings (``num_inference_steps``, ``guidance_scale``) apply to both."""
        if cond is None and texts is not None:
            cond = self.encode_text(texts)
        sampler = {k: kwargs[k] for k in ("num_inference_steps", "guidance_scale") if k in kwargs}
        return self.decode(self.encode(images, cond=cond, **kwargs), cond=cond, **sampler)

    @torch.inference_mode()
    def reconstruction_error(self, images: Tensor, **kwargs) -> Tensor:
        """Per-image mean squared error of encode → decode, in the [-1, 1] pixel scale."""
        images = self.check_images(images)
        recon = self.reconstruct(images, **kwargs)
        return (recon.float() - images.float()).pow(2).flatten(1).mean(dim=1)

    # -- validation ----------------------------------------------------------------------
    def check_images(self, images: Tensor) -> Tensor:
        if not isinstance(images, Tensor):
            raise TypeError(f"images must be a torch tensor, got {type(images).__name__}")
        expected = (self.image_channels, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"images must have shape (N, {expected[0]}, {expected[1]}, {expected[2]}) for backend "
                f"{self.backend_name!r}, got {tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise TypeError(f"images must be floating point in [-1, 1], got {images.dtype}")
        if not bool(torch.isfinite(images).all()):
            raise ValueError("images contain non-finite values (NaN or inf)")
        lo, hi = float(images.min()), float(images.max())
        if lo < -1.0 - 1e-3 or hi > 1.0 + 1e-3:
            raise ValueError(f"images must be scaled to [-1, 1], got values in [{lo:.3g}, {hi:.3g}]")
        return images.to(device=self.device, dtype=self.dtype)

    def check_latents(self, latents: Tensor) -> Tensor:
        if not isinstance(latents, Tensor):
            raise TypeError(f"latents must be a torch tensor, got {type(latents).__name__}")
        if latents.dim() < 1 or tuple(latents.shape[1:]) != tuple(self.latent_shape):
            raise ValueError(
                f"latents must have shape (N, {', '.join(map(str, self.latent_shape))}) for backend "
                f"{self.backend_name!r}, got {tuple(latents.shape)}"
            )
        if not latents.is_floating_point():
            raise TypeError(f"latents must be floating point, got {latents.dtype}")
        if not bool(torch.isfinite(latents).all()):
            raise ValueError("latents contain non-finite values (NaN or inf)")
        return latents.to(device=self.device, dtype=self.dtype)

    def _chunked(self, fn, x: Tensor, texts, cond, kwargs) -> Tensor:
        n = x.shape[0]
        if n == 0:
            raise ValueError("got an empty batch (0 items)")
        conditioned = texts is not None or cond is not None
        if conditioned and not self.supports_text_condition:
            raise ValueError(f"backend {self.backend_name!r} is not text-conditioned; do not pass texts or cond")
        if texts is not None and cond is not None:
            raise ValueError("pass texts or cond, not both")
        if self.requires_text and not conditioned:
            raise ValueError(
                f"texts: backend {self.backend_name!r} is text-conditioned and needs one text per item ({n}); "
                'pass texts=[...] ("" for unconditional) or cond='
            )
        if texts is not None:
            if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or len(texts) != n:
                got = f"a {type(texts).__name__}" if not isinstance(texts, (list, tuple)) else len(texts)
                raise ValueError(
                    f"texts: backend {self.backend_name!r} needs a list of one text per item ({n}), got {got}"
                )
        if cond is not None:
            cond = self.check_cond(cond, n)
        outs = []
        for start in range(0, n, self.batch_size):
            stop = start + self.batch_size
            chunk_kwargs = dict(kwargs)
            if texts is not None:
                chunk_kwargs["cond"] = self.encode_text(list(texts[start:stop]))
            elif cond is not None:
                chunk_kwargs["cond"] = cond[start:stop]
            outs.append(fn(x[start:stop], **chunk_kwargs))
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def check_cond(self, cond: Tensor, n: int) -> Tensor:
        """Validate a conditioning tensor for ``n`` items (the shape :meth:`encode_text` returns)."""
        if not isinstance(cond, Tensor) or not cond.is_floating_point():
            raise TypeError(f"cond must be a floating-point tensor from encode_text, got {type(cond).__name__}")
        expected = tuple(self.encode_text([""]).shape[1:])
        if tuple(cond.shape) != (n, *expected):
            raise ValueError(
                f"cond must have shape ({n}, {', '.join(map(str, expected))}) (one conditioning per item), got {tuple(cond.shape)}"
            )
        if not bool(torch.isfinite(cond).all()):
            raise ValueError("cond contains non-finite values (NaN or inf)")
        return cond.to(device=self.device, dtype=self.dtype)

    # -- save / load ---------------------------------------------------------------------
    @abc.abstractmethod
    def _config(self) -> dict[str, Any]:
        """Backend-level settings stored in config.json beside ``latentmix_backend``."""

    @abc.abstractmethod
    def _save_weights(self, directory: Path) -> None:
        """Write the weights (safetensors only) into ``directory``."""

    @classmethod
    @abc.abstractmethod
    def _load(cls, directory: Path, config: dict[str, Any], **kwargs) -> "LatentBackend":
        """Build the backend from a saved directory and its config.json."""

    def save_pretrained(self, directory: str | os.PathLike, *, extra_files: dict[str, str] | None = None) -> Path:
        """Save config.json + safetensors into ``directory``, atomically.

        ``extra_files`` (name → text) are written beside them, e.g. a MODEL_CARD.md.
        """
        config = {"latentmix_backend": self.backend_name, "latentmix_version": __version__, **self._config()}

        def write(tmp: Path) -> None:
            self._save_weights(tmp)
            (tmp / BACKEND_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
            for name, text in (extra_files or {}).items():
                (tmp / name).write_text(text)

        return atomic_directory(Path(directory), write)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **kwargs) -> "LatentBackend":
        """Load a backend saved by :meth:`save_pretrained` (safetensors only)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ValueError(f"backend directory {directory} does not exist")
        config = read_json(directory / BACKEND_CONFIG, "backend config")
        name = config.get("latentmix_backend")
        if name is None:
            raise ValueError(f"{directory / BACKEND_CONFIG} has no 'latentmix_backend' entry; not a latentmix backend")
        klass = get_backend_class(name)
        if cls is not LatentBackend and not issubclass(klass, cls):
            raise ValueError(f"{directory} holds a {name!r} backend, not a {cls.backend_name!r} one")
        refuse_pickles(directory)
        return klass._load(directory, config, **kwargs)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(image={self.image_channels}x{self.image_size}x{self.image_size}, "
            f"latent_shape={tuple(self.latent_shape)}, prior={self.latent_prior}, device={self.device})"
        )
