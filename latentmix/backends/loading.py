"""``load_backend``: resolve an embedded model, a local directory or a hub id to a backend."""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

from latentmix.backends.base import BACKEND_CONFIG, LatentBackend, read_json, registered_backends
from latentmix.backends.vae import AutoencoderKLBackend


def embedded_models_dir() -> Path:
    """Directory of the embedded checkpoints: the installed ``latentmix.embedded`` package, or
    ``models/`` beside the package when running from a source checkout."""
    try:
        return Path(str(importlib.resources.files("latentmix.embedded")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "models"


def embedded_models() -> list[str]:
    """Names of the embedded backends, e.g. ``["digits-vae"]``."""
    root = embedded_models_dir()
    return sorted(
        p.name
        for p in root.iterdir()
        if (p / BACKEND_CONFIG).is_file() and "latentmix_backend" in (p / BACKEND_CONFIG).read_text()
    )


def _from_directory(path: Path, **kwargs) -> LatentBackend:
    if (path / "model_index.json").is_file() and not (path / BACKEND_CONFIG).is_file():
        from latentmix.backends.ldm import LatentDiffusionBackend

        return LatentDiffusionBackend.from_pretrained(path, **kwargs)
    config = read_json(path / BACKEND_CONFIG, "backend config")
    if "latentmix_backend" in config:
        return LatentBackend.from_pretrained(path, **kwargs)
    if config.get("_class_name") == "AutoencoderKL":
        return AutoencoderKLBackend.from_diffusers(str(path), **kwargs)
    raise ValueError(
        f"{path / BACKEND_CONFIG} is neither a latentmix backend (no 'latentmix_backend') nor a diffusers "
        f"AutoencoderKL (_class_name={config.get('_class_name')!r})"
    )


#: What a hub download fetches: configs, tokenizer files and the default safetensors of each
#: component (not fp16 / EMA variants, nor the single-file checkpoints beside them).
HUB_PATTERNS = [
    "*.json",
    "*.txt",
    "*.model",
    "diffusion_pytorch_model.safetensors",
    "*/diffusion_pytorch_model.safetensors",
    "*/model.safetensors",
]


def _from_hub(repo_id: str, **kwargs) -> LatentBackend:
    from huggingface_hub import snapshot_download

    subfolder = kwargs.pop("subfolder", None)
    try:
        root = Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except Exception as exc:  # network, missing repo, gated model: all end the same way for the user
        raise ValueError(
            f"backend {repo_id!r}: not an embedded model or local directory, and fetching it from the hub failed ({type(exc).__name__})"
        ) from None
    return _from_directory(root / subfolder if subfolder else root, **kwargs)


def load_backend(name_or_path: str | os.PathLike, *, device=None, **kwargs) -> LatentBackend:
    """Load a backend by embedded name, local directory, or hub id, in that order.

    Args:
        name_or_path: an embedded model (``"digits-vae"``, see :func:`embedded_models`), a directory
            saved by ``save_pretrained`` or holding a diffusers ``AutoencoderKL``, or a hub id such
            as ``"stabilityai/sd-vae-ft-mse"`` (needs network access).
        device: where to place the backend (default: CPU).
        **kwargs: passed to the backend's loader (e.g. ``subfolder="vae"`` for a pipeline repo).

    Returns:
        A :class:`~latentmix.backends.base.LatentBackend` in eval mode.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"backend must be a name or a path, got {type(name_or_path).__name__}")
    text = os.fspath(name_or_path)
    embedded = embedded_models()
    path = Path(text).expanduser()
    if text in embedded:
        backend = _from_directory(embedded_models_dir() / text, **kwargs)
    elif path.is_dir():
        backend = _from_directory(path, **kwargs)
    elif path.exists():
        raise ValueError(f"backend {text!r} is a file; expected a directory with config.json and safetensors")
    elif text.count("/") == 1 and not text.startswith((".", "/", "~")) and os.environ.get("HF_HUB_OFFLINE") != "1":
        backend = _from_hub(text, **kwargs)
    else:
        raise ValueError(
            f"unknown backend {text!r}: not an embedded model ({', '.join(embedded) or 'none'}), "
            f"not an existing directory, not a hub id (registered backend classes: {', '.join(sorted(registered_backends()))})"
        )
    if device is not None:
        backend.to(device)
    return backend.eval()
