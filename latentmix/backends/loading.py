"""``load_backend``: resolve an embedded model, a local directory or a hub id to a backend."""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

from latentmix.backends.base import LatentBackend
from latentmix.backends.files import BACKEND_CONFIG, read_json, variant_file
from latentmix.backends.registry import claiming_backend, registered_backends
from latentmix.backends.runtime import RunOptions


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


def load_directory(path: str | os.PathLike, **kwargs) -> LatentBackend:
    """Load the backend in a local directory: a latentmix save (its config.json names the class), or a
    layout a registered class claims (a diffusers AutoencoderKL folder, a Stable Diffusion pipeline)."""
    path = Path(path)
    config_file = path / BACKEND_CONFIG
    if config_file.is_file() and "latentmix_backend" in read_json(config_file, "backend config"):
        if kwargs.get("variant") is not None:
            raise ValueError(f"variant applies to diffusers folders; {path} is a latentmix save (one set of weights)")
        kwargs.pop("variant", None)
        return LatentBackend.from_pretrained(path, **kwargs)
    cls = claiming_backend(path)
    if cls is not None:
        return cls.from_pretrained(path, **kwargs)
    if not config_file.is_file():
        read_json(config_file, "backend config")  # raises: config.json is missing
    kind = read_json(config_file, "backend config").get("_class_name")
    raise ValueError(
        f"{config_file} is neither a latentmix backend (no 'latentmix_backend') nor a model a registered backend "
        f"loads (_class_name={kind!r}; registered: {', '.join(sorted(registered_backends()))})"
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


def load_hub(repo_id: str, **kwargs) -> LatentBackend:
    """Download a backend's configs and default safetensors (those of ``variant=`` where given) from the hub and load
    them (needs network access)."""
    from huggingface_hub import snapshot_download

    subfolder = kwargs.pop("subfolder", None)
    variant = kwargs.get("variant")
    patterns = [p if not p.endswith(".safetensors") else variant_file(p, variant) for p in HUB_PATTERNS]
    try:
        root = Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:  # network, missing repo, gated model: all end the same way for the user
        raise ValueError(
            f"backend {repo_id!r}: not an embedded model or local directory, and fetching it from the hub failed "
            f"({type(exc).__name__})"
        ) from None
    return load_directory(root / subfolder if subfolder else root, **kwargs)


def load_backend(
    name_or_path: str | os.PathLike | LatentBackend, *, device=None, run: RunOptions | None = None, **kwargs
) -> LatentBackend:
    """Load a backend by embedded name, local directory, or hub id, in that order; a loaded backend is taken as
    it is (so a job's ``backend`` setting may be either).

    Args:
        name_or_path: an embedded model (``"digits-vae"``, see :func:`embedded_models`), a directory
            saved by ``save_pretrained`` or holding a diffusers ``AutoencoderKL``, ``AutoencoderTiny`` or
            ``VQModel`` (or a Stable Diffusion pipeline), or a hub id such as ``"stabilityai/sd-vae-ft-mse"``
            or ``"madebyollin/taesd"`` (needs network access).
        device: where to place the backend (default: CPU; with ``run``, its device, where ``device`` stands for
            its ``auto``: a process's own GPU).
        run: device, precision, batch sizes and memory features (:class:`~latentmix.backends.RunOptions`); the
            device and precision are checked before any weights are read, the rest applied after loading.
        **kwargs: ``subfolder="vae"`` loads one component of a pipeline directory or repo; the rest go to the
            backend's loader (e.g. ``requantize=False`` for a VQModel).

    Returns:
        A :class:`~latentmix.backends.base.LatentBackend` in eval mode.
    """
    target = run.resolve_device(device) if run is not None else None  # before loading: a bad device reads nothing
    if run is not None and run.variant is not None:
        kwargs["variant"] = run.variant
    if isinstance(name_or_path, LatentBackend):
        if kwargs:
            raise TypeError(f"backend is already loaded; {', '.join(kwargs)} apply to loading one")
        if run is not None:  # a loaded backend stays where it is unless a device is named
            return run.apply(name_or_path, target if run.device != "auto" or device is not None else None).eval()
        return name_or_path.to(device).eval() if device is not None else name_or_path.eval()
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"backend must be a name, a path or a LatentBackend, got {type(name_or_path).__name__}")
    text = os.fspath(name_or_path)
    embedded = embedded_models()
    path = Path(text).expanduser()
    subfolder = kwargs.get("subfolder")
    if subfolder is not None and (Path(subfolder).is_absolute() or ".." in Path(subfolder).parts):
        raise ValueError(f"subfolder {subfolder!r} must be a folder inside the model directory")
    if run is not None and (run.height is not None or run.width is not None):  # a size the configs refuse reads nothing
        from latentmix.backends.resolution import check_resolution, folder_resolution_multiple

        folder = embedded_models_dir() / text if text in embedded else path
        multiple = folder_resolution_multiple(folder) if folder.is_dir() else None
        if multiple is not None:
            check_resolution(run.height, run.width, multiple)
    if text in embedded:
        backend = load_directory(embedded_models_dir() / text / kwargs.pop("subfolder", ""), **kwargs)
    elif path.is_dir():
        backend = load_directory(path / kwargs.pop("subfolder", ""), **kwargs)
    elif path.exists():
        raise ValueError(f"backend {text!r} is a file; expected a directory with config.json and safetensors")
    elif text.count("/") == 1 and not text.startswith((".", "/", "~")) and os.environ.get("HF_HUB_OFFLINE") != "1":
        backend = load_hub(text, **kwargs)
    else:
        raise ValueError(
            f"unknown backend {text!r}: not an embedded model ({', '.join(embedded) or 'none'}), "
            "not an existing directory, not a hub id (registered backend classes: "
            f"{', '.join(sorted(registered_backends()))})"
        )
    backend.source = text
    if run is not None:
        run.apply(backend, target)
    elif device is not None:
        backend.to(device)
    return backend.eval()
