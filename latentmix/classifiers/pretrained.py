"""The user's own classifier: any ``nn.Module`` that maps images to logits, or a Hugging Face
``AutoModelForImageClassification`` loaded with ``from_pretrained`` (a local directory or a hub id).

:class:`ImageClassifier` wraps the network with what its input needs, applied per batch on the training device:
latentmix's images (in [-1, 1], at the data's size and channels) are converted to the network's channels
(grey → RGB by repetition, RGB → grey by luminance), resized to its input side (bilinear, antialiased) and
normalised with its image processor's mean and std (``(pixel − mean) / std`` on pixels in [0, 1]). Mixing happens
before this (on the data's own images) or inside the network at named modules: :meth:`ImageClassifier.layer`
resolves a name of the network (``resnet.encoder.stages.1``) to the wrapped module, and :func:`default_layers`
finds a sensible set from the module tree (the blocks of the network's main ``ModuleList``: the stages of a
ResNet / ConvNeXt, the encoder layers of a ViT), not from a table per class.

A trained transformers model saves with ``save_pretrained`` (the class names as ``id2label`` / ``label2id``, the
fitted temperature and the input conversion as ``latentmix`` in its config.json, its image processor beside it);
``AutoModelForImageClassification.from_pretrained`` reloads it, and :func:`load_pretrained_classifier` rebuilds
the wrapper with the same conversion, so the logits are the same.
"""

from __future__ import annotations

import contextlib
import difflib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's "L" conversion
CONFIG_KEY = "latentmix"  # where a saved transformers model keeps its temperature and input conversion


@dataclass
class InputSpec:
    """What the network's input is: channels, side (None: the data's own), mean and std per channel on [0, 1]."""

    channels: int | None = None
    size: int | None = None
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)

    def __post_init__(self) -> None:
        self.mean, self.std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"normalize needs as many means as stds, got {len(self.mean)} and {len(self.std)}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"normalize: every std must be > 0, got {self.std}")
        if self.channels is not None and len(self.mean) not in (1, self.channels):
            raise ValueError(f"normalize gives {len(self.mean)} means for a {self.channels}-channel input")


def convert_channels(x: Tensor, channels: int | None) -> Tensor:
    """``x`` (B, C, H, W) with ``channels`` channels: grey repeated to RGB, RGB to grey by luminance."""
    if channels is None or x.shape[1] == channels:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, channels, -1, -1)
    if x.shape[1] == 3 and channels == 1:
        weights = torch.tensor(LUMINANCE, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * weights).sum(1, keepdim=True)
    raise ValueError(f"cannot convert {x.shape[1]}-channel images to the model's {channels} channels")


class ImageClassifier(nn.Module):
    """``net`` behind its input conversion: ``forward(images in [-1, 1])`` → logits (B, K).

    ``net`` is a transformers image classifier (its ``logits`` are taken) or any module returning a tensor.
    """

    def __init__(self, net: nn.Module, spec: InputSpec | None = None):
        super().__init__()
        self.net = net
        self.spec = spec or InputSpec()
        mean, std = torch.tensor(self.spec.mean), torch.tensor(self.spec.std)
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1), persistent=False)

    def prepare(self, x: Tensor) -> Tensor:
        """The network's input for latentmix images ``x``: channels, size, normalisation."""
        if x.dim() == 4:
            x = convert_channels(x, self.spec.channels)
            size = self.spec.size
            if size is not None and tuple(x.shape[-2:]) != (size, size):
                x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                              antialias=size < x.shape[-1])  # fmt: skip
            mean, std = cast(Tensor, self.mean), cast(Tensor, self.std)
            x = ((x + 1) / 2 - mean.to(x.dtype)) / std.to(x.dtype)
        return x

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(self.prepare(x))
        return out if isinstance(out, Tensor) else out.logits

    # -- names of the network's modules (manifold mixing, saliency, freezing) ----------------------------------

    def layer_names(self) -> list[str]:
        return [name for name, _ in self.net.named_modules() if name]

    def layer(self, name: str) -> str:
        """The wrapped name (``net.…``) of the network's module ``name``; ``input`` stays ``input``."""
        return name if name == "input" else f"net.{check_layer(self.net, name)}"

    @property
    def manifold_layers(self) -> tuple[str, ...]:
        """The default mixing layers, wrapped names (``input`` first)."""
        return tuple(self.layer(n) for n in default_layers(self.net))


def check_layer(net: nn.Module, name: str, what: str = "--manifold-layers") -> str:
    """``name`` if ``net`` has a module of that name, else a one-line ValueError naming the nearest ones."""
    names = [n for n, _ in net.named_modules() if n]
    if name in names:
        return name
    near = difflib.get_close_matches(name, names, n=3, cutoff=0.4) or default_layers(net)[1:4]
    raise ValueError(f"{what}: the model has no module {name!r}; nearest: {', '.join(near)}")


def main_blocks(net: nn.Module) -> list[str]:
    """Names of the blocks of ``net``'s trunk: the entries of the ``nn.ModuleList`` (≥ 2 entries) that holds the
    most parameters (a ResNet's stages, a ViT's layers); else ``net``'s own children but the last (the head)."""
    best, best_params = None, 0
    for name, module in net.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) >= 2:
            params = sum(p.numel() for p in module.parameters())
            if params > best_params:
                best, best_params = name, params
    if best is not None:
        blocks = cast(nn.ModuleList, net.get_submodule(best))
        return [f"{best}.{i}" if best else str(i) for i in range(len(blocks))]
    children = [n for n, m in net.named_children() if any(True for _ in m.parameters())]
    return children[:-1]


def default_layers(net: nn.Module) -> list[str]:
    """Manifold mixing's default layers: the input and the outputs of the trunk's blocks but the last."""
    return ["input", *main_blocks(net)[:-1]]


def head_module(net: nn.Module) -> nn.Module:
    """The classification head: transformers' ``classifier`` attribute, else the last ``nn.Linear``."""
    head = getattr(net, "classifier", None)
    if isinstance(head, nn.Module):
        return head
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("--freeze backbone: the model has no classifier attribute and no nn.Linear head")
    return linears[-1]


def freeze_backbone(net: nn.Module) -> int:
    """Train only the head (a linear probe); returns the number of trainable parameters."""
    head = head_module(net)
    for p in net.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)
    return sum(p.numel() for p in head.parameters())


# -- transformers models -----------------------------------------------------------------------------------------


def _processor_spec(source: str, trust_remote_code: bool) -> InputSpec | None:
    """Input size, mean and std from the model's image processor (None where it has none)."""
    local = Path(source)
    if local.is_dir() and not (local / "preprocessor_config.json").is_file():
        return None
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return None
    size = None
    for attr in ("crop_size", "size"):
        value = getattr(processor, attr, None)
        if value is None:
            continue
        value = dict(value) if not isinstance(value, dict) else value
        side = value.get("height") or value.get("shortest_edge")
        if side and getattr(processor, f"do_{'center_crop' if attr == 'crop_size' else 'resize'}", True):
            size = int(side)
            break
    if not getattr(processor, "do_normalize", True):
        return InputSpec(size=size, mean=(0.0,), std=(1.0,))
    mean = processor.image_mean if isinstance(processor.image_mean, list | tuple) else [processor.image_mean]
    std = processor.image_std if isinstance(processor.image_std, list | tuple) else [processor.image_std]
    return InputSpec(size=size, mean=tuple(mean), std=tuple(std))


@contextlib.contextmanager
def _quiet_resize(resizing: bool):
    """transformers' load report while the head is re-sized on purpose: only its errors (the mismatch is wanted)."""
    from transformers.utils import logging

    before = logging.get_verbosity()
    if resizing:
        logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(before)


def embedded_classifier(source: str) -> str:
    """``source``, or the directory of the embedded transformers classifier of that name (``shapes-resnet``)."""
    if Path(source).exists() or "/" in source:
        return source
    from latentmix.backends.loading import embedded_models_dir

    root = embedded_models_dir() / source
    return str(root) if is_hf_classifier(root) else source


def load_hf_classifier(
    source: str,
    class_names: list[str],
    *,
    spec: InputSpec | None = None,
    trust_remote_code: bool = False,
    scratch: bool = False,
) -> ImageClassifier:
    """``AutoModelForImageClassification.from_pretrained(source)`` with its head sized to ``class_names`` (kept
    when it already matches), behind the input conversion of its image processor (else ``spec``). ``scratch``:
    the same architecture from its config, with fresh weights drawn from torch's global generator (a config.json
    without weights suffices)."""
    from transformers import AutoConfig, AutoModelForImageClassification

    where = f"--model {source}"
    source = embedded_classifier(source)
    if Path(source).is_dir() and not (Path(source) / "config.json").is_file():
        raise ValueError(f"{where}: no config.json there; it is not a transformers model directory")
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as exc:
        if Path(source).exists() or source.startswith((".", "/")):
            raise ValueError(f"{where}: no transformers model there ({str(exc).splitlines()[0]})") from None
        raise ValueError(f"{where}: not a local directory, and the hub cannot be reached or has no such model "
                         "(offline? pass a local directory)") from None  # fmt: skip
    except ValueError as exc:
        raise ValueError(f"{where}: {str(exc).splitlines()[0]}") from None
    labels = {i: str(n) for i, n in enumerate(class_names)}
    same_head = config.num_labels == len(class_names)
    try:
        if scratch:
            config.id2label, config.label2id = labels, {n: i for i, n in labels.items()}
            net = AutoModelForImageClassification.from_config(config, trust_remote_code=trust_remote_code)
            return _wrap(net, source, spec, trust_remote_code)
        with _quiet_resize(not same_head):
            net = AutoModelForImageClassification.from_pretrained(
                source,
                id2label=labels,
                label2id={n: i for i, n in labels.items()},
                ignore_mismatched_sizes=not same_head,
                trust_remote_code=trust_remote_code,
            )
    except ValueError as exc:  # a config type without an image-classification head (a text model, a VAE, ...)
        raise ValueError(f"{where}: no image-classification model for this checkpoint "
                         f"({type(config).__name__}): {str(exc).splitlines()[0][:160]}") from None  # fmt: skip
    except (OSError, RuntimeError) as exc:
        hint = "; a config without weights trains with --init scratch" if isinstance(exc, OSError) else ""
        raise ValueError(f"{where}: the model cannot be loaded with a {len(class_names)}-class head "
                         f"({str(exc).splitlines()[0][:160]}){hint}") from None  # fmt: skip
    return _wrap(net, source, spec, trust_remote_code)


def _wrap(net: nn.Module, source: str, spec: InputSpec | None, trust_remote_code: bool) -> ImageClassifier:
    """``net`` behind the input conversion that latentmix saved with it, its image processor's, or ``spec``."""
    cfg: Any = net.config
    saved = getattr(cfg, CONFIG_KEY, None) or {}  # a model latentmix trained keeps its conversion
    found = InputSpec(**saved["input"]) if "input" in saved else _processor_spec(source, trust_remote_code)
    base = found or spec or InputSpec()
    base.channels = int(getattr(cfg, "num_channels", None) or base.channels or 3)
    if base.size is None and isinstance(getattr(cfg, "image_size", None), int):
        base.size = int(cfg.image_size)
    return ImageClassifier(net, base)


def save_hf_classifier(model: ImageClassifier, out: Path, class_names: list[str], temperature: float) -> None:
    """Write a transformers classifier to ``out`` (``save_pretrained``): class names, temperature and the input
    conversion in its config, and an image processor with the same size and normalisation."""
    net: Any = model.net
    labels = {i: str(n) for i, n in enumerate(class_names)}
    net.config.id2label, net.config.label2id = labels, {n: i for i, n in labels.items()}
    setattr(net.config, CONFIG_KEY, {"temperature": float(temperature), "class_names": list(class_names),
                                      "input": asdict(model.spec)})  # fmt: skip
    net.save_pretrained(out, safe_serialization=True)
    spec = model.spec
    processor = {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": spec.size is not None,
        "size": {"height": spec.size, "width": spec.size} if spec.size else None,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(spec.mean) * (3 // len(spec.mean) if len(spec.mean) == 1 else 1),
        "image_std": list(spec.std) * (3 // len(spec.std) if len(spec.std) == 1 else 1),
        "resample": 2,
    }
    (out / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")


def is_hf_classifier(path: Path) -> bool:
    """Whether ``path`` holds a saved transformers model (config.json with ``model_type``)."""
    try:
        return "model_type" in json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False


def load_pretrained_classifier(path: str | Path) -> ImageClassifier:
    """A transformers classifier saved by ``latentmix train --model … --save-model`` (eval mode); ``.config``
    holds its ``class_names`` and ``temperature`` as for latentmix's own classifiers."""
    from transformers import AutoModelForImageClassification

    net = AutoModelForImageClassification.from_pretrained(str(path))
    saved = getattr(net.config, CONFIG_KEY, None) or {}
    model = ImageClassifier(net, InputSpec(**saved.get("input", {})))
    names = saved.get("class_names") or [net.config.id2label[i] for i in range(net.config.num_labels)]
    # what latentmix's classifiers declare (the blend filter reads it): any image shape is converted on the way in
    declared = {"class_names": list(names), "temperature": float(saved.get("temperature", 1.0)), "image_shape": []}
    model.config = declared  # type: ignore[assignment]
    return model.eval()
