"""The backend contract every generative model in latentmix answers.

A backend maps images to latents and back:

* ``encode(images) -> latents``: images are float NCHW in [-1, 1] at ``image_size`` with
  ``image_channels`` channels (``image_shape`` is (height, width); a diffusion backend set to a non-square
  resolution also takes square images of side ``image_size`` = max(height, width), as data sets are read, and
  centre-crops them); latents have shape ``(N, *latent_shape)`` in the backend's
  documented, normalised space (the backend owns its scaling factors). A VAE encodes with its
  encoder, a GAN by inversion, a latent-diffusion model by DDIM inversion. Options that only
  some backends take (``refine_steps``, ``num_inference_steps``, ``strength``, …) travel as one
  :class:`~latentmix.backends.options.CallOptions` (``options=``), which the backend checks once
  (:meth:`LatentBackend.call_options`); ``**kwargs`` go to the backend's own ``_encode`` as they are.
* ``decode(latents) -> images`` in [-1, 1], batched.
* ``sample(n, generator=...) -> latents`` drawn from the prior (``latent_prior``).
* ``condition(texts)``: the conditioning of ``texts`` for text-conditioned backends and ``None`` for
  the others, so callers pass ``cond=backend.condition(texts)`` to any backend without asking which
  kind it is; :func:`mix_conditions` blends two conditionings (or two Nones).
* ``encode_distribution(images) -> (mean, std)``: the posterior over latents (``std`` is None for a
  deterministic encoder), for training on latents with fresh posterior samples.
* ``reconstruction_error(images)``: how faithfully encode → decode reproduces the input.

Capabilities are attributes that callers read instead of ``isinstance`` checks:

* ``latent_prior``: ``"gaussian"`` if ``sample`` draws N(0, I) latents that decode to data,
  ``None`` if the latent space has no generative prior (a bare autoencoder);
* ``default_method``: the interpolator grids and blends use when none is asked for;
* ``supports_text_condition`` / ``requires_text``: whether ``encode`` and ``decode`` take
  (or need) ``texts=`` / ``cond=``;
* ``encoder_kind``: ``"amortized"`` (one network pass), ``"inversion"`` or ``"ddim-inversion"``;
* ``first_stage``: the autoencoder a backend works on top of (latent diffusion), or None — its
  reconstruction error is the floor of the backend's own;
* ``add_textual_inversion``: text-conditioned backends: a learned token added to the text encoder;
* ``add_lora``: diffusion backends: LoRA weights fused into the UNet (and text encoders);
* ``clean_latents`` / ``partly_noised``: diffusion backends: the first stage's latents of images and those
  latents noised to the level sampling at a ``strength`` starts from (SDEdit); other backends refuse them;
* ``option_names``: the call options ``encode`` and ``decode`` take; ``last_encode_calls``: the
  network evaluations per item of the last encode, where the backend counts them;
* ``show_progress``: per instance, whether long calls (diffusion sampling) show a progress bar
  (:meth:`progress` sets it for a block).

Saved form: a directory with ``config.json`` (``latentmix_backend`` names the registered class)
and the backend's weights as safetensors (one diffusers-style subfolder per module). Pickled
weights are refused and weights are loaded whole or not at all (:mod:`latentmix.backends.files`).
``latentmix.testing.check_backend`` checks a backend against this contract.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from latentmix.backends.files import BACKEND_CONFIG, move_modules, read_json, refuse_pickles
from latentmix.backends.options import (
    DECODE_OPTIONS,
    PER_ITEM_OPTIONS,
    CallOptions,
    check_per_item,
    refuse_unsupported,
)
from latentmix.backends.registry import get_backend_class
from latentmix.utils.atomic import atomic_directory
from latentmix.utils.validation import positive_int
from latentmix.version import __version__

ENCODER_KINDS = ("amortized", "inversion", "ddim-inversion")


def mix_conditions(cond_a: Tensor | None, cond_b: Tensor | None, t, method: str = "lerp") -> Tensor | None:
    """Blend two conditionings from :meth:`LatentBackend.condition` with the same t as the latents
    (None for backends without text conditioning)."""
    if (cond_a is None) != (cond_b is None):
        raise ValueError("give both conditionings, or neither")
    if cond_a is None or cond_b is None:
        return None
    from latentmix.latent.interpolate import interpolate

    return interpolate(cond_a, cond_b, t, method)


def is_backend(obj: Any) -> bool:
    """Whether ``obj`` answers the backend contract (is a :class:`LatentBackend`): callers outside this package ask
    this, or a backend's capabilities, never for a backend class."""
    return isinstance(obj, LatentBackend)


class LatentBackend(abc.ABC):
    """Base class of all backends; see the module docstring for the contract."""

    backend_name: ClassVar[str] = ""
    latent_prior: ClassVar[str | None] = "gaussian"
    default_method: ClassVar[str] = "slerp"
    supports_text_condition: ClassVar[bool] = False
    requires_text: ClassVar[bool] = False
    encoder_kind: ClassVar[str] = "amortized"
    #: Whether long calls show a progress bar; set per instance (or for a block with :meth:`progress`).
    show_progress: bool = False
    #: What :func:`~latentmix.backends.load_backend` loaded it from (an embedded name, a directory, a hub id);
    #: None for a backend built in Python.
    source: str | None = None

    @property
    def label(self) -> str:
        """How reports and manifests name the backend: its :attr:`source`, else its registered name."""
        return self.source or self.backend_name

    #: Largest number of images or latents sent through a network at once.
    batch_size: int = 256
    #: Refinement steps that grids and synthesis use for inversion backends by default.
    DEFAULT_REFINE_STEPS: ClassVar[int] = 100
    #: The :class:`~latentmix.backends.options.CallOptions` this backend's encode and decode take.
    option_names: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def claims(cls, directory: Path) -> bool:
        """Whether ``directory`` holds a model this class loads. The default claims latentmix saves of
        this class; adapters of foreign layouts (diffusers folders, pipelines) override it."""
        config = Path(directory) / BACKEND_CONFIG
        if not config.is_file():
            return False
        try:
            return json.loads(config.read_text(encoding="utf-8")).get("latentmix_backend") == cls.backend_name
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            return False

    @property
    def first_stage(self) -> LatentBackend | None:
        """The autoencoder this backend works on top of, or None (see the module docstring)."""
        return None

    @contextlib.contextmanager
    def progress(self, enabled: bool = True) -> Iterator[LatentBackend]:
        """Show (or hide) progress bars of this backend inside a ``with`` block."""
        before = self.show_progress
        self.show_progress = bool(enabled)
        try:
            yield self
        finally:
            self.show_progress = before

    def call_options(self, options: CallOptions | None = None, /, **fields: Any) -> CallOptions:
        """``options`` (with ``fields`` set on top) checked for this backend, with the defaults jobs use filled in.

        An option the backend does not take (see ``option_names``) is a ValueError naming it, unless it holds the
        neutral value every backend accepts (``refine_steps=0``, ``inversion="ddim"``, ``sampler="ddim"``); values
        are checked by the backend's own rules. Jobs call this once, before any work, and pass the result to
        :meth:`encode` and :meth:`decode` (``options=``).
        """
        options = options if options is not None else CallOptions()
        if fields:
            options = options.replace(**fields)
        return self._resolve_options(refuse_unsupported(options, self.option_names, self))

    def _resolve_options(self, options: CallOptions) -> CallOptions:
        """Check the options this backend takes and fill in its job defaults (the base class takes none)."""
        return options

    @property
    def last_encode_calls(self) -> int | None:
        """Network evaluations per item of the last :meth:`encode`, where the backend counts them (a diffusion
        backend's UNet calls of its inversion); None where it does not."""
        return None

    # -- shape and placement -------------------------------------------------------------
    @property
    @abc.abstractmethod
    def image_size(self) -> int:
        """Height and width of the square images the backend encodes and decodes."""

    @property
    def image_shape(self) -> tuple[int, int]:
        """(height, width) of the images the backend decodes; square, ``(image_size, image_size)``, except for a
        diffusion backend set to another resolution (:meth:`set_resolution`)."""
        return (self.image_size, self.image_size)

    def set_resolution(self, height: int, width: int) -> None:
        """Decode (and encode) images of ``height`` × ``width``: diffusion backends on a diffusers autoencoder;
        the others refuse."""
        raise ValueError(
            f"height/width apply to diffusion backends on a diffusers autoencoder; {self.label!r} is a "
            f"{self.backend_name!r} backend with {self.image_size}x{self.image_size} images"
        )

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

    #: where the networks run when they are offloaded to the CPU between calls (``--cpu-offload``); else None
    execution_device: torch.device | None = None

    @property
    def device(self) -> torch.device:
        """Where the backend runs (its networks' device; with CPU offload, the accelerator they move to)."""
        if self.execution_device is not None:
            return self.execution_device
        return next(next(iter(self.modules().values())).parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(next(iter(self.modules().values())).parameters()).dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> LatentBackend:
        move_modules(self.modules().values(), device, dtype)
        return self

    def eval(self) -> LatentBackend:
        for module in self.modules().values():
            module.eval()
        return self

    # -- the contract --------------------------------------------------------------------
    @abc.abstractmethod
    def _encode(self, *args: Any, **kwargs: Any) -> Tensor:
        """Encode one validated batch of images (on the backend's device and dtype); each backend names the
        keyword arguments it takes."""

    @abc.abstractmethod
    def _decode(self, *args: Any, **kwargs: Any) -> Tensor:
        """Decode one validated batch of latents."""

    def encode(
        self,
        images: Tensor,
        *,
        texts: list[str] | None = None,
        cond: Tensor | None = None,
        options: CallOptions | None = None,
        **kwargs,
    ) -> Tensor:
        """Encode images (N, C, H, W) in [-1, 1] to latents (N, *latent_shape), in chunks of ``batch_size``.

        Text-conditioned backends take one text per image (``texts``) or its conditioning
        (``cond``, from :meth:`encode_text`, possibly blended). ``options`` (:meth:`call_options`) are the
        job's call options; ``kwargs`` go to the backend's own ``_encode`` as they are.
        """
        images = self.check_images(images)
        if options is not None:
            kwargs = {**self.call_options(options).encode_kwargs(), **kwargs}
        return self._chunked(self._encode, images, texts, cond, kwargs)

    def decode(
        self,
        latents: Tensor,
        *,
        texts: list[str] | None = None,
        cond: Tensor | None = None,
        options: CallOptions | None = None,
        **kwargs,
    ) -> Tensor:
        """Decode latents (N, *latent_shape) to images (N, C, H, W) in [-1, 1], in chunks of ``batch_size``;
        ``options`` and ``kwargs`` as for :meth:`encode`."""
        latents = self.check_latents(latents)
        if options is not None:
            kwargs = {**self.call_options(options).decode_kwargs(), **kwargs}
        return self._chunked(self._decode, latents, texts, cond, kwargs)

    def encode_text(self, texts: list[str]) -> Tensor:
        """Conditioning for ``texts`` (N, *cond_shape), for text-conditioned backends.

        Conditionings of two texts have the same shape, so they blend with one λ like latents.
        """
        raise ValueError(f"backend {self.backend_name!r} is not text-conditioned; it takes no texts")

    def condition(self, texts: list[str] | None) -> Tensor | None:
        """:meth:`encode_text` for text-conditioned backends, None for the others (``texts`` ignored)."""
        if not self.supports_text_condition:
            return None
        if texts is None:
            raise ValueError(f"texts: backend {self.backend_name!r} is text-conditioned and needs one text per item")
        return self.encode_text(list(texts))

    def add_textual_inversion(self, spec: str | os.PathLike) -> list[str]:
        """Text-conditioned backends with a token vocabulary: add the learned token(s) of a textual-inversion file
        (``FILE`` or ``TOKEN=FILE``, :mod:`latentmix.backends.adapters`); returns the tokens."""
        raise ValueError(f"textual_inversion: backend {self.backend_name!r} has no text encoder to add a token to")

    def add_lora(self, path: str | os.PathLike, scale: float = 1.0) -> list[str]:
        """Diffusion backends with a UNet: fuse the LoRA weights at ``path`` (diffusers' format,
        :mod:`latentmix.backends.lora`) at ``scale``, with the class tokens a ``fit lora`` directory holds; returns
        the adapted parts."""
        raise ValueError(f"lora: backend {self.backend_name!r} is not a diffusion backend with a UNet to adapt")

    def clean_latents(self, images: Tensor) -> Tensor:
        """Diffusion backends: the first stage's latents of ``images`` in this backend's latent shape."""
        raise ValueError(f"backend {self.backend_name!r} is not a diffusion backend; it has no noise levels")

    def partly_noised(
        self, z0: Tensor, noise: Tensor, strength: float = 1.0, num_inference_steps: int | None = None
    ) -> Tensor:
        """Diffusion backends: clean latents noised to where sampling at ``strength`` starts (SDEdit)."""
        raise ValueError(f"backend {self.backend_name!r} is not a diffusion backend; it has no noise levels")

    def encode_distribution(self, images: Tensor, **kwargs: Any) -> tuple[Tensor, Tensor | None]:
        """(mean, std) of the posterior over latents; the default is a deterministic encoder (std None)
        whose mean is :meth:`encode` (``kwargs`` go to it)."""
        return self.encode(images, **kwargs), None

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` latents from the prior (N(0, I) for ``latent_prior == "gaussian"``)."""
        positive_int(n, "n")
        if self.latent_prior != "gaussian":
            raise ValueError(
                f"backend {self.backend_name!r} has no generative prior to sample from "
                "(latent_prior is None); encode real images instead"
            )
        gen_device = generator.device if generator is not None else torch.device("cpu")
        z = torch.randn((n, *self.latent_shape), generator=generator, device=gen_device)
        return z.to(device=self.device, dtype=self.dtype)

    def reconstruct(
        self,
        images: Tensor,
        *,
        texts: list[str] | None = None,
        cond: Tensor | None = None,
        options: CallOptions | None = None,
        **kwargs,
    ) -> Tensor:
        """decode(encode(images)); the options decode takes (``num_inference_steps``, ``guidance_scale``,
        ``strength``) apply to both."""
        if cond is None and texts is not None:
            cond = self.encode_text(texts)
        sampler = {k: v for k, v in kwargs.items() if k in DECODE_OPTIONS}
        latents = self.encode(images, cond=cond, options=options, **kwargs)
        return self.decode(latents, cond=cond, options=options, **sampler)

    @torch.inference_mode()
    def reconstruction_error(self, images: Tensor, **kwargs) -> Tensor:
        """Per-image mean squared error of encode → decode, in the [-1, 1] pixel scale."""
        images = self.check_images(images)
        recon = self.reconstruct(images, **kwargs)
        return (recon.float() - images.float()).pow(2).flatten(1).mean(dim=1)

    # -- validation ----------------------------------------------------------------------
    def to_image_shape(self, images: Tensor) -> Tensor:
        """Square images (N, C, S, S) of side ``image_size``, as data sets are read, centre-cropped to a non-square
        ``image_shape``; any other images as they are."""
        square = (self.image_channels, self.image_size, self.image_size)
        if self.image_shape[0] != self.image_shape[1] and images.dim() == 4 and tuple(images.shape[1:]) == square:
            return centre_crop(images, self.image_shape)
        return images

    def check_images(self, images: Tensor) -> Tensor:
        if not isinstance(images, Tensor):
            raise TypeError(f"images must be a torch tensor, got {type(images).__name__}")
        images = self.to_image_shape(images)
        expected = (self.image_channels, *self.image_shape)
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
        if texts is not None and (isinstance(texts, str) or not isinstance(texts, (list, tuple)) or len(texts) != n):
            got = f"a {type(texts).__name__}" if not isinstance(texts, (list, tuple)) else len(texts)
            raise ValueError(f"texts: backend {self.backend_name!r} needs a list of one text per item ({n}), got {got}")
        if cond is not None:
            cond = self.check_cond(cond, n)
        per_item = {k: v for k, v in kwargs.items() if k in PER_ITEM_OPTIONS and isinstance(v, (list, tuple))}
        for key, values in per_item.items():
            check_per_item(key, values, n)
        outs = []
        for start in range(0, n, self.batch_size):
            stop = start + self.batch_size
            chunk_kwargs = {**kwargs, **{k: list(v[start:stop]) for k, v in per_item.items()}}
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
                f"cond must have shape ({n}, {', '.join(map(str, expected))}) (one conditioning per item), got "
                f"{tuple(cond.shape)}"
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
    def _load(cls, directory: Path, config: dict[str, Any], **kwargs) -> LatentBackend:
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
    def from_pretrained(cls, directory: str | os.PathLike, **kwargs) -> LatentBackend:
        """Load a backend saved by :meth:`save_pretrained` (safetensors only, loaded whole or not at all).

        ``trust_remote_code`` (default False) is passed on to backends that load transformers components;
        no Python code from the directory runs unless it is True.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise ValueError(f"backend directory {directory} does not exist")
        config = read_json(directory / BACKEND_CONFIG, "backend config")
        name = config.get("latentmix_backend")
        if name is None:
            raise ValueError(f"{directory / BACKEND_CONFIG} has no 'latentmix_backend' entry; not a latentmix backend")
        klass = get_backend_class(str(name))
        if cls is not LatentBackend and not issubclass(klass, cls):
            raise ValueError(f"{directory} holds a {name!r} backend, not a {cls.backend_name!r} one")
        refuse_pickles(directory)
        return klass._load(directory, config, **kwargs)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(image={self.image_channels}x{self.image_shape[0]}x{self.image_shape[1]}, "
            f"latent_shape={tuple(self.latent_shape)}, prior={self.latent_prior}, device={self.device})"
        )


def centre_crop(images: Tensor, shape: tuple[int, int]) -> Tensor:
    """The centre ``shape`` = (height, width) of images (N, C, H, W) at least that large."""
    height, width = shape
    top, left = (images.shape[-2] - height) // 2, (images.shape[-1] - width) // 2
    return images[..., top : top + height, left : left + width]
