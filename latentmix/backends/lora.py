"""LoRA weights loaded into a diffusion backend's UNet (and text encoders), through diffusers' loaders and peft.

``add_lora(unet, text_models, path, scale)`` (what :meth:`LatentDiffusionBackend.add_lora` runs) reads the file
that diffusers' training scripts, :meth:`StableDiffusionPipeline.save_lora_weights` (and SDXL's) and ``latentmix fit
lora`` write — ``pytorch_lora_weights.safetensors`` in a directory, or a ``.safetensors`` file (kohya / A1111 key
names, ``lora_te1_`` / ``lora_te2_`` for SDXL's two text encoders, are converted by diffusers' ``lora_state_dict``)
— as safetensors only: a pickle is refused, never unpickled. ``text_models`` names the backend's text encoders
(``{"text_encoder": …}``; SDXL adds ``"text_encoder_2"``); weights for a part the backend lacks are refused.

Every LoRA matrix is checked against the module it adapts before anything is injected (a file for another model
is a ValueError naming the first mismatch). The adapter is then *fused* at ``scale`` (diffusers' ``fuse_lora``:
``W + scale · (alpha / r) · B A``) and the peft layers removed, so sampling runs the plain modules at full speed;
``scale = 0`` leaves every weight as it was.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from latentmix.utils import validation

NAME = "lora"
WEIGHT_NAME = "pytorch_lora_weights.safetensors"
ADAPTER = "latentmix_lora"


def lora_file(path: str | os.PathLike) -> Path:
    """The LoRA weights file of ``path`` (a directory holding :data:`WEIGHT_NAME`, or a ``.safetensors`` file)."""
    p = Path(path)
    if p.is_dir():
        if not (p / WEIGHT_NAME).is_file():
            pickled = sorted(q.name for q in p.glob("*.bin"))
            extra = f" ({', '.join(pickled)} are pickles and are not read)" if pickled else ""
            raise ValueError(f"{NAME}: {p} holds no {WEIGHT_NAME}{extra}")
        return p / WEIGHT_NAME
    if not p.is_file():
        raise ValueError(f"{NAME}: {p} is neither a LoRA directory nor a file")
    if p.suffix != ".safetensors":
        raise ValueError(f"{NAME}: {p} is not a .safetensors file; pickled LoRA weights (.bin, .pt) are not read")
    return p


def read_lora(path: str | os.PathLike, xl: bool = False) -> tuple[dict, dict | None, dict | None]:
    """(state dict in diffusers' key names, network alphas, adapter metadata) of a LoRA file, read by diffusers'
    ``StableDiffusionPipeline.lora_state_dict`` (``StableDiffusionXLPipeline``'s where ``xl``) with safetensors
    only."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from safetensors import SafetensorError

    file = lora_file(path)
    reader = StableDiffusionXLPipeline if xl else StableDiffusionPipeline
    try:
        state, alphas, metadata = reader.lora_state_dict(
            str(file.parent), weight_name=file.name, use_safetensors=True, local_files_only=True,
            return_lora_metadata=True,
        )  # fmt: skip
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{NAME}: {file} is not a readable safetensors file ({exc})") from None
    if not state:
        raise ValueError(f"{NAME}: {file} holds no tensors")
    return state, alphas, metadata


def _part(state: dict, prefix: str) -> dict:
    return {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}


def check_shapes(model: nn.Module, state: dict, who: str, file: Path) -> None:
    """Each ``<module>.lora_A.weight`` / ``lora_B.weight`` of ``state`` (peft key names) adapts a linear or
    convolution module of ``model`` with matching input / output size; a ValueError names the first that does
    not."""
    modules = dict(model.named_modules())
    for key, value in state.items():
        for part in (".lora_A.", ".lora_B."):
            if part in key:
                break
        else:
            continue
        target = key.split(part)[0]
        module = modules.get(target)
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            raise ValueError(f"{NAME}: {file}: {who} has no linear or convolution module {target!r} (a LoRA for "
                             "another model)")  # fmt: skip
        size = module.in_features if isinstance(module, nn.Linear) else module.in_channels
        if part == ".lora_B.":
            size = module.out_features if isinstance(module, nn.Linear) else module.out_channels
        got = int(value.shape[1] if part == ".lora_A." else value.shape[0])
        if got != size:
            raise ValueError(f"{NAME}: {file}: {key} has size {got}, the {who}'s {target} has {size} (a LoRA for "
                             "another model)")  # fmt: skip


def add_lora(
    unet: Any, text_models: dict[str, nn.Module], path: str | os.PathLike, scale: float = 1.0, *, xl: bool = False
) -> list[str]:
    """Load the LoRA at ``path`` into ``unet`` and the text encoders of ``text_models`` (part name → model, the
    prefixes of the file's keys: ``text_encoder``, ``text_encoder_2``) that the file adapts, fuse it at ``scale`` and
    remove the adapter layers; returns the adapted parts (``["unet", "text_encoder"]``). Every part's shapes are
    checked before any is changed; ``xl`` reads the file with SDXL's key conversion."""
    from diffusers import StableDiffusionPipeline
    from diffusers.loaders.lora_base import fuse_text_encoder_lora
    from diffusers.utils import (
        convert_state_dict_to_diffusers,
        convert_state_dict_to_peft,
        convert_unet_state_dict_to_peft,
        recurse_remove_peft_layers,
    )

    scale = validation.number(scale, "lora_scale")
    file = lora_file(path)
    state, alphas, metadata = read_lora(path, xl=xl)
    known = ("unet", "text_encoder", "text_encoder_2")
    foreign = sorted({k.split(".", 1)[0] for k in state} - {"unet", *text_models})
    if foreign:
        ours = ", ".join(["unet", *text_models])
        if set(foreign) <= set(known):
            raise ValueError(f"{NAME}: {file} adapts {', '.join(foreign)}, which this backend does not have ({ours}; "
                             "a LoRA for another model)")  # fmt: skip
        raise ValueError(f"{NAME}: {file} holds no unet.* or text_encoder.* LoRA weights (first key: "
                         f"{next(k for k in state if k.split('.', 1)[0] in foreign)!r})")  # fmt: skip
    unet_state = _part(state, "unet")
    check_shapes(unet, convert_unet_state_dict_to_peft(unet_state), "UNet", file)
    texts: dict[str, dict] = {}
    for part, model in text_models.items():
        text_state = _part(state, part)
        if text_state:
            peft_named = any(".lora_A." in k or ".lora_B." in k for k in text_state)
            peft = text_state if peft_named else convert_state_dict_to_peft(convert_state_dict_to_diffusers(text_state))
            check_shapes(model, peft, part.replace("_", " "), file)
            texts[part] = peft
    parts = []
    if unet_state:
        StableDiffusionPipeline.load_lora_into_unet(state, alphas, unet, adapter_name=ADAPTER, metadata=metadata)
        unet.fuse_lora(lora_scale=float(scale), adapter_names=[ADAPTER])
        unet.unload_lora()
        parts.append("unet")
    for part, peft in texts.items():
        model = text_models[part]
        _inject(model, peft, _metadata(metadata, part), _metadata(alphas, part), file, part)
        fuse_text_encoder_lora(model, lora_scale=float(scale), adapter_names=[ADAPTER])
        recurse_remove_peft_layers(model)
        if hasattr(model, "peft_config"):
            del model.peft_config
        parts.append(part)
    return parts


def _metadata(values: dict | None, part: str) -> dict:
    """The entries of ``values`` (adapter metadata or network alphas) under ``part.``, without the prefix."""
    return {k[len(part) + 1 :]: v for k, v in (values or {}).items() if k.startswith(part + ".")}


def _inject(model: nn.Module, state: dict, meta: dict, alphas: dict, file: Path, part: str) -> None:
    """Add the LoRA layers of ``state`` (peft key names) to a transformers text encoder with peft itself (the
    adapter config from the file's metadata for ``part``, else from its shapes: rank, targets, alpha = network alpha
    or rank)."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    if meta:
        config = LoraConfig(**{k: v for k, v in meta.items() if k in LoraConfig.__dataclass_fields__})
    else:
        ranks = {int(v.shape[1]) for k, v in state.items() if ".lora_B." in k}
        if len(ranks) != 1:
            raise ValueError(f"{NAME}: {file}: the {part}'s LoRA has ranks {sorted(ranks)}; expected one")
        rank = ranks.pop()
        alpha = next(iter((alphas or {}).values()), rank)
        targets = sorted({k.split(".lora_")[0].rsplit(".", 1)[-1] for k in state if ".lora_" in k})
        config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets)
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    result = set_peft_model_state_dict(model, state, adapter_name=ADAPTER)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise ValueError(f"{NAME}: {file}: {part} weight {unexpected[0]!r} matches no module")
