"""How backends are read from and written to disk: safetensors only, loaded whole or not at all.

* :func:`refuse_pickles`: a directory with pickled weights (``.bin``, ``.pt``, …) and no safetensors is
  refused — unpickling runs arbitrary code.
* :func:`load_weights`: a diffusers-style model (``config.json`` + ``*.safetensors``) is checked against
  the architecture its config describes *before* loading: a missing tensor, an unexpected extra one or a
  tensor of the wrong shape is a one-line ``ValueError`` naming the file and the first offending key —
  never a model with freshly initialised layers, never a traceback from deep inside the loader.
* :func:`read_json`: a JSON object or a one-line error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from latentmix.utils.validation import parse_json

BACKEND_CONFIG = "config.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
SAFETENSORS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "model.safetensors")


def refuse_pickles(directory: Path) -> None:
    """Raise if ``directory`` holds pickled weights and no safetensors beside them."""
    files = [p for p in Path(directory).rglob("*") if p.is_file()]
    pickles = [p for p in files if p.suffix in PICKLE_SUFFIXES]
    if pickles and not any(p.suffix == ".safetensors" for p in files):
        raise ValueError(
            f"{directory} holds pickled weights ({pickles[0].name}) and no .safetensors; latentmix refuses "
            "to load pickles (they can run arbitrary code): convert them to safetensors first"
        )


def read_json(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; ``what`` names it in errors ("backend config", …)."""
    if not path.is_file():
        raise ValueError(f"{what}: {path} is missing")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what}: {path} is not valid JSON ({exc})") from None
    data = parse_json(text, f"{what}: {path}")
    if not isinstance(data, dict):
        raise ValueError(f"{what}: {path} must hold a JSON object")
    return data


def variant_file(name: str, variant: str | None) -> str:
    """``diffusion_pytorch_model.safetensors`` of ``variant`` ``fp16``: ``diffusion_pytorch_model.fp16.safetensors``."""
    if variant is None:
        return name
    stem, _, suffix = name.partition(".")
    return f"{stem}.{variant}.{suffix}"


def weight_files(directory: Path, variant: str | None = None, names: tuple[str, ...] | None = None) -> list[Path]:
    """The safetensors files of a saved model (one file, or the shards a ``*.safetensors.index.json`` lists), of
    ``variant`` where given (``fp16``: ``*.fp16.safetensors``, as diffusers' and transformers' loaders name them);
    ``names``: the file names to look for (default: diffusers' and transformers' weights)."""
    directory = Path(directory)
    wanted = [variant_file(n, variant) for n in (names or SAFETENSORS_WEIGHTS)]
    if not any((directory / n).is_file() or (directory / f"{n}.index.json").is_file() for n in wanted):
        others = sorted(p.name for p in directory.glob("*.safetensors"))
        if variant is not None:
            held = f"it holds {', '.join(others)}" if others else "it holds no safetensors"
            raise ValueError(f"{directory}: no {variant} variant ({' or '.join(wanted)}); {held}")
        found = sorted({p.name.split(".")[-2] for p in directory.glob("*.*.safetensors")})
        if found:
            raise ValueError(
                f"{directory} holds only the {' and '.join(found)} variant of the weights "
                f"({others[0]}); load it with variant={found[0]!r} (--variant {found[0]})"
            )
    for name in wanted:
        index = directory / f"{name}.index.json"
        if index.is_file():
            shards = sorted(set(read_json(index, "weights index").get("weight_map", {}).values()))
            missing = [s for s in shards if not (directory / s).is_file()]
            if missing or not shards:
                raise ValueError(f"{index} names the shard {missing[0] if missing else '(none)'}, which is missing")
            return [directory / s for s in shards]
        if (directory / name).is_file():
            return [directory / name]
    raise ValueError(f"{directory} holds no safetensors weights ({' or '.join(SAFETENSORS_WEIGHTS)})")


def checkpoint_shapes(files: list[Path]) -> dict[str, tuple[tuple[int, ...], Path]]:
    """Every tensor's shape and file, read from the safetensors headers only (no weights are loaded)."""
    from safetensors import SafetensorError, safe_open

    shapes: dict[str, tuple[tuple[int, ...], Path]] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (a safe_open handle is not a dict)
                    shapes[key] = (tuple(f.get_slice(key).get_shape()), file)
        except (SafetensorError, OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{file} is not a readable safetensors file ({first})") from None
    return shapes


def expected_shapes(model_cls: Any, directory: Path) -> dict[str, tuple[int, ...]]:
    """The tensors the architecture in ``directory/config.json`` has, built on the meta device (no memory)."""
    try:
        config = model_cls.load_config(str(directory))
        with torch.device("meta"):
            skeleton = model_cls.from_config(config)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"could not load {model_cls.__name__} weights from {directory}: {first}") from None
    return {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}


def compare_tensors(
    expected: dict[str, tuple[int, ...]], found: dict[str, tuple[tuple[int, ...], Path]], where: Path
) -> None:
    """Raise naming the file and the first missing, wrongly shaped or unexpected tensor."""
    missing = [k for k in expected if k not in found]
    if missing:
        raise ValueError(
            f"{where}: the weights lack the tensor {missing[0]!r}"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
            + "; the model would be incomplete (refusing to initialise it at random)"
        )
    for key, shape in expected.items():
        got, file = found[key]
        if got != shape:
            raise ValueError(f"{file}: tensor {key!r} has shape {list(got)}, the model's config needs {list(shape)}")
    extra = [k for k in found if k not in expected]
    if extra:
        raise ValueError(
            f"{found[extra[0]][1]}: unexpected tensor {extra[0]!r}"
            + (f" and {len(extra) - 1} more" if len(extra) > 1 else "")
            + " that the model's config has no place for; is this the right model?"
        )


def load_weights(model_cls: Any, directory: str | Path, **kwargs: Any) -> Any:
    """Load a diffusers-style ``ModelMixin`` from ``directory`` (safetensors only), whole or not at all.

    The tensors in the file(s) are checked against the architecture first (see the module docstring).
    A checkpoint in an older key layout that diffusers itself converts on load (legacy attention names)
    is accepted when diffusers reports every tensor loaded.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"could not load {model_cls.__name__} weights from {directory}: not a directory")
    refuse_pickles(directory)
    files = weight_files(directory, kwargs.get("variant"))
    found = checkpoint_shapes(files)
    expected = expected_shapes(model_cls, directory)
    try:
        compare_tensors(expected, found, files[0])
    except ValueError as mismatch:
        model = _load_with_info(model_cls, directory, kwargs)
        if model is None:
            raise mismatch from None
        return model
    try:
        return model_cls.from_pretrained(str(directory), use_safetensors=True, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"could not load {model_cls.__name__} weights from {directory}: {first}") from None


def _load_with_info(model_cls: Any, directory: Path, kwargs: dict[str, Any]) -> Any:
    """diffusers' own load when it converts an older layout and reports nothing missing; else None."""
    try:
        model, info = model_cls.from_pretrained(
            str(directory), use_safetensors=True, output_loading_info=True, low_cpu_mem_usage=False, **kwargs
        )
    except Exception:  # any failure here means: not a layout diffusers converts; report our own finding
        return None
    if any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")):
        return None
    return model


def move_modules(modules, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
    """``module.to(device, dtype)`` for each module, without diffusers' dtype-cast warnings."""
    from diffusers.utils import logging as diffusers_logging

    kwargs = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        for module in modules:
            module.to(**kwargs)
    finally:
        diffusers_logging.set_verbosity(verbosity)
