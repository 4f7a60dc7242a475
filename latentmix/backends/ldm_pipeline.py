"""The latent-diffusion backend's folders: diffusers pipeline directories and latentmix saves of it.

What :class:`~latentmix.backends.ldm.LatentDiffusionBackend` reads and writes on disk, apart from the sampler:

* a plain diffusers pipeline directory (``model_index.json`` with ``vae/``, ``unet/``, ``scheduler/``,
  ``text_encoder/``, ``tokenizer/``, e.g. a local Stable Diffusion checkout): :func:`is_pipeline_dir`,
  :func:`load_pipeline_dir`, and the index written for a save that is one (:func:`pipeline_index`);
* a latentmix save (``config.json`` naming the backend), whose autoencoder and text encoder may be
  *references* (an embedded backend, the default text encoder, a hub id) instead of copies:
  :func:`load_saved` and :func:`component_dir`, which keeps every component inside the directory;
* an already loaded pipeline object: :func:`pipeline_parts`.

Each loader returns the constructor's arguments; the backend class builds itself from them.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from diffusers import DDIMScheduler, UNet2DConditionModel

from latentmix.backends.autoencoders import (
    AutoencoderKLBackend,
    AutoencoderTinyBackend,
    DiffusersAutoencoderBackend,
    VQModelBackend,
    downsample_factor,
)
from latentmix.backends.base import LatentBackend
from latentmix.backends.files import BACKEND_CONFIG, load_weights, read_json, refuse_pickles, weight_files
from latentmix.backends.loading import embedded_models, embedded_models_dir, load_directory, load_hub
from latentmix.data.text import DEFAULT_TEXT_ENCODER_NAMES, TextEncoder

PIPELINE_INDEX = "model_index.json"
PIPELINE_COMPONENTS = ("vae", "unet", "scheduler", "text_encoder", "tokenizer")


def unet_sample_shape(unet: UNet2DConditionModel) -> tuple[int, int, int]:
    """(channels, side, side) of the latents a UNet denoises."""
    size = unet.config.sample_size
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ValueError(f"the UNet's sample_size {tuple(size)} is not square; latentmix backends are square")
        size = size[0]
    return (int(unet.config.in_channels), int(size), int(size))


def pipeline_parts(pipe, kwargs: dict[str, Any]) -> tuple[LatentBackend, Any, Any, TextEncoder]:
    """(autoencoder, unet, scheduler, text encoder) of a loaded diffusers pipeline (``StableDiffusionPipeline`` or
    one with the same components); ``kwargs`` gets the text settings the pipeline implies (set where not given)."""
    missing = [c for c in PIPELINE_COMPONENTS if getattr(pipe, c, None) is None]
    if missing:
        raise ValueError(f"pipeline {type(pipe).__name__} lacks the component(s) {', '.join(missing)}")
    adapters = {a.model_class: a for a in (AutoencoderKLBackend, AutoencoderTinyBackend, VQModelBackend)}
    adapter = adapters.get(type(pipe.vae))
    if adapter is None:
        raise TypeError(
            f"pipeline vae must be an AutoencoderKL, AutoencoderTiny or VQModel, got {type(pipe.vae).__name__}"
        )
    autoencoder = adapter(pipe.vae, image_size=unet_sample_shape(pipe.unet)[1] * downsample_factor(pipe.vae))
    text_encoder = TextEncoder(pipe.text_encoder, pipe.tokenizer, name=type(pipe.text_encoder).__name__)
    kwargs.setdefault("text_max_length", getattr(pipe.tokenizer, "model_max_length", 77))
    kwargs.setdefault("text_attention_mask", bool(getattr(pipe.text_encoder.config, "use_attention_mask", False)))
    return autoencoder, pipe.unet, pipe.scheduler, text_encoder


def is_diffusers_autoencoder(autoencoder: LatentBackend) -> bool:
    """Whether the autoencoder is one of diffusers' (any resolution its downsampling divides)."""
    return isinstance(autoencoder, DiffusersAutoencoderBackend)


def is_plain_diffusers_autoencoder(autoencoder: LatentBackend) -> bool:
    """Whether the autoencoder is a diffusers model saved as a plain diffusers folder (nothing of latentmix's
    own to keep: a VQ backend that decodes without re-quantizing is saved as a latentmix backend)."""
    return isinstance(autoencoder, DiffusersAutoencoderBackend) and getattr(autoencoder, "requantize", True)


def pipeline_index(autoencoder: LatentBackend, text_encoder: TextEncoder) -> dict[str, Any]:
    """The ``model_index.json`` of a save that is a complete Stable Diffusion pipeline folder."""
    import diffusers

    return {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", type(text_encoder.model).__name__],
        "tokenizer": ["transformers", type(text_encoder.tokenizer).__name__],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", type(autoencoder.vae).__name__],  # type: ignore[attr-defined]
    }


def is_pipeline_dir(directory: Path) -> bool:
    """A diffusers pipeline directory (``model_index.json``) that is not a latentmix save."""
    directory = Path(directory)
    return (directory / PIPELINE_INDEX).is_file() and not (directory / BACKEND_CONFIG).is_file()


def is_xl_index(directory: Path) -> bool:
    """Whether ``directory``'s ``model_index.json`` describes an SDXL pipeline (a second text encoder)."""
    try:
        index = json.loads((Path(directory) / PIPELINE_INDEX).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(index, dict) and ("text_encoder_2" in index or "XL" in str(index.get("_class_name", "")))


def check_components(directory: Path, index: dict[str, Any], components: tuple[str, ...], who: str) -> None:
    """Every component folder the pipeline needs is there and named in its index; a ValueError listing the missing
    ones otherwise."""
    missing = [c for c in components if not (directory / c).is_dir() or (index.get(c) or [None])[0] is None]
    if missing:
        raise ValueError(
            f"pipeline directory {directory} is missing the component(s) {', '.join(missing)} "
            f"({who} needs {', '.join(components)})"
        )


def load_pipeline_dir(
    directory: Path, *, trust_remote_code: bool | None = None, variant: str | None = None
) -> SimpleNamespace:
    """The components of a diffusers pipeline directory, as a pipeline-like namespace for :func:`pipeline_parts`.

    Components are read from inside ``directory`` only; pickles are refused before anything is read. ``variant``
    (``fp16``) reads each component's ``*.fp16.safetensors``, as ``from_pretrained(variant=)`` does.
    """
    index = read_json(directory / PIPELINE_INDEX, "pipeline index")
    if is_xl_index(directory):
        raise ValueError(
            f"{directory} is an SDXL pipeline ({index.get('_class_name')}: two text encoders, pooled embeddings); "
            "load it with load_backend() or StableDiffusionXLBackend.from_pretrained()"
        )
    check_components(directory, index, PIPELINE_COMPONENTS, "a latent-diffusion backend")
    text_encoder, vae, unet = load_common(directory, ("text_encoder",), trust_remote_code, variant)
    return SimpleNamespace(
        vae=vae, unet=unet, scheduler=load_scheduler(directory), text_encoder=text_encoder.model,
        tokenizer=text_encoder.tokenizer,
    )  # fmt: skip


def load_common(
    directory: Path, text_encoders: tuple[str, ...], trust_remote_code: bool | None, variant: str | None
) -> tuple[Any, Any, UNet2DConditionModel]:
    """The first text encoder, the autoencoder model and the UNet of a pipeline folder, after refusing pickles and
    checking every component's weight files (``text_encoders``: their folders) before any weights are read."""
    refuse_pickles(directory)
    for part, names in (("unet", None), ("vae", None), *((t, ("model.safetensors",)) for t in text_encoders)):
        weight_files(directory / part, variant, names)
    text_encoder = load_text_encoder(directory, text_encoders[0], trust_remote_code, variant)
    vae = load_directory(directory / "vae", variant=variant)
    if not isinstance(vae, DiffusersAutoencoderBackend):
        raise ValueError(f"{directory / 'vae'} is not a diffusers autoencoder (AutoencoderKL, Tiny or VQModel)")
    return text_encoder, vae.vae, load_weights(UNet2DConditionModel, directory / "unet", variant=variant)


def load_saved(
    directory: Path, config: dict[str, Any], *, trust_remote_code: bool | None = None, **kwargs
) -> tuple[tuple, dict[str, Any]]:
    """The constructor's (positional, keyword) arguments of a latentmix save: components inside ``directory``
    or named by reference in its ``config.json``, and the saved sampler settings (``kwargs`` win)."""
    for part in ("unet", "scheduler"):
        if not (directory / part).is_dir():
            raise ValueError(f"{directory} is missing the component {part}")
    vae_ref, te_ref = str(config.get("vae", "vae")), str(config.get("text_encoder", "text_encoder"))
    vae_dir, te_dir = (component_dir(directory, ref, key) for ref, key in ((vae_ref, "vae"), (te_ref, "text_encoder")))
    unet = load_weights(UNet2DConditionModel, directory / "unet")
    if vae_dir is not None:
        autoencoder = load_directory(vae_dir)
    elif vae_ref in embedded_models():
        autoencoder = load_directory(embedded_models_dir() / vae_ref)
    else:
        autoencoder = load_hub(vae_ref)
    if te_dir is not None:
        text_encoder = load_text_encoder(directory, te_ref, trust_remote_code)
    else:
        text_encoder = TextEncoder.from_pretrained(te_ref, device="cpu", trust_remote_code=trust_remote_code)
    kwargs.setdefault("num_inference_steps", int(config.get("num_inference_steps", 50)))
    kwargs.setdefault("guidance_scale", float(config.get("guidance_scale", 1.0)))
    kwargs.setdefault("text_max_length", config.get("text_max_length"))
    kwargs.setdefault("text_attention_mask", bool(config.get("text_attention_mask", True)))
    kwargs["autoencoder_ref"] = None if vae_dir is not None else vae_ref
    kwargs["text_encoder_ref"] = None if te_dir is not None else te_ref
    return (autoencoder, unet, load_scheduler(directory), text_encoder), kwargs


def component_dir(directory: Path, ref: str, key: str) -> Path | None:
    """The folder of component ``ref`` inside the pipeline ``directory``, or None when ``ref`` is a name
    (an embedded backend, the default text encoder, a hub id). A reference that leads outside the
    directory (an absolute path, ``..``, a symlink out) is refused: a saved backend's config.json must not
    make latentmix read arbitrary places on disk."""
    where = directory / BACKEND_CONFIG
    if Path(ref).is_absolute() or ".." in Path(ref).parts:
        raise ValueError(
            f"{where}: '{key}' = {ref!r} points outside the backend directory; components must live inside it "
            "(to combine parts from elsewhere, load them and build LatentDiffusionBackend(...) in Python)"
        )
    candidate = directory / ref
    if candidate.exists():
        if not candidate.resolve().is_relative_to(directory.resolve()):
            raise ValueError(
                f"{where}: '{key}' = {ref!r} is a link to {candidate.resolve()}, outside the backend directory"
            )
        if not candidate.is_dir():
            raise ValueError(f"{where}: '{key}' = {ref!r} is not a directory")
        return candidate
    if ref == key:
        raise ValueError(f"{directory} is missing the component {key}")
    known = ref in embedded_models() or ref in DEFAULT_TEXT_ENCODER_NAMES or is_hub_id(ref)
    if not known:
        raise ValueError(
            f"{where}: '{key}' = {ref!r} is neither a folder inside {directory}, an embedded model, nor a hub id"
        )
    if Path(ref).exists():
        raise ValueError(
            f"{where}: '{key}' = {ref!r} names a folder outside the backend directory (relative to the current "
            "directory); components must live inside it"
        )
    return None


def is_hub_id(ref: str) -> bool:
    parts = ref.split("/")
    return len(parts) == 2 and all(parts) and not ref.startswith((".", "~"))


def load_scheduler(directory: Path) -> DDIMScheduler:
    config = read_json(directory / "scheduler" / "scheduler_config.json", "scheduler config")
    return DDIMScheduler.from_config(config)


def load_text_encoder(
    directory: Path,
    folder: str,
    trust_remote_code: bool | None,
    variant: str | None = None,
    tokenizer: str = "tokenizer",
    model_class: Any = None,
) -> TextEncoder:
    """The text encoder saved in ``directory/folder`` with its tokenizer (``directory/tokenizer``); on CPU
    (``load_backend(device=...)`` places the whole backend). ``model_class``: as in
    :meth:`TextEncoder.from_pretrained`."""
    if not (directory / tokenizer).is_dir():
        raise ValueError(f"{directory} is missing the component {tokenizer}")
    return TextEncoder.from_pretrained(
        directory / folder, tokenizer=directory / tokenizer, device="cpu", trust_remote_code=trust_remote_code,
        variant=variant, model_class=model_class,
    )  # fmt: skip
