"""Where and how a backend runs: device, precision, batch sizes and diffusers' memory features, set once.

:class:`RunOptions` is what the run settings of every job with a backend carry (``--device``, ``--dtype``,
``--unet-batch-size``, ``--vae-batch-size``, ``--vae-slicing``, ``--vae-tiling``, ``--attention-slicing``,
``--variant``, ``--height``, ``--width``). :func:`~latentmix.backends.load_backend` checks them *before* any weights
are read (a device this machine lacks, a precision it cannot run, a size the folder's configs cannot take) and
applies them after loading (:meth:`RunOptions.apply`), through diffusers' own mechanisms:

* ``dtype``: every module is cast (``fp16``/``bf16``), except an autoencoder whose config sets ``force_upcast``
  (Stable Diffusion's VAE overflows in half precision), which stays float32 as diffusers' pipelines keep it;
* ``unet_batch_size``: latents per UNet call (classifier-free guidance doubles the rows of each call, as in
  diffusers' pipelines); ``vae_batch_size``: images per autoencoder call;
* ``vae_slicing`` / ``vae_tiling``: ``AutoencoderKL.enable_slicing()`` / ``enable_tiling()`` (one image at a time;
  overlapping tiles for large images);
* ``attention_slicing``: ``UNet2DConditionModel.set_attention_slice("auto" | "max" | N)``;
* ``height`` / ``width``: the resolution a diffusion backend decodes (and encodes) at; the latents follow;
* ``cpu_offload``: each network waits on the CPU and moves to the accelerator when it runs, the others moved back
  first (diffusers' ``enable_model_cpu_offload``, through accelerate's ``CpuOffload`` hooks);
* ``variant``: the weight files of that variant (``diffusion_pytorch_model.fp16.safetensors``), as diffusers'
  loaders read them;
* ``textual_inversion``: learned token embeddings added to the text encoder (:mod:`latentmix.backends.adapters`),
  before the cast;
* ``lora`` / ``lora_scale``: LoRA weights fused into the UNet (and text encoder) at that scale
  (:mod:`latentmix.backends.lora`; a ``fit lora`` directory brings its class tokens), before the cast.

An option that does not apply to the loaded backend (a UNet batch size for a VAE) is a ValueError naming it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from latentmix.configs.common import DTYPE_NAMES
from latentmix.utils import validation

DTYPES = dict(zip(DTYPE_NAMES, (torch.float32, torch.float16, torch.bfloat16), strict=True))


@dataclass(frozen=True)
class RunOptions:
    """Device, precision, batch sizes and memory features of a backend; see the module docstring.

    Attributes:
        device: ``auto`` (CUDA, then MPS, then the CPU), ``cpu``, ``cuda[:N]``, ``mps``, ``xpu``.
        dtype: ``fp32``, ``fp16`` or ``bf16``.
        unet_batch_size: latents per UNet call (None: the backend's, 128).
        vae_batch_size: images per autoencoder call (None: the backend's, 256).
        vae_slicing, vae_tiling: diffusers autoencoders: decode one image at a time / in overlapping tiles.
        attention_slicing: ``auto``, ``max`` or a number of slices for the UNet's attention (None: off).
        variant: load the weight files of this variant (``fp16``).
        textual_inversion: textual-inversion files (``FILE`` or ``TOKEN=FILE``, safetensors) or directories to add.
        lora: LoRA directories (``pytorch_lora_weights.safetensors``) or ``.safetensors`` files to fuse.
        lora_scale: the scale every LoRA is fused at (0: the base model).
        height, width: diffusion backends on a diffusers autoencoder: the image size decoded (None: the UNet's
            ``sample_size`` times the VAE's scale); multiples of the VAE's scale times the UNet's down-sampling.
        cpu_offload: backends of several networks, on an accelerator: model CPU offload
            (:mod:`latentmix.backends.offload`).
    """

    device: str = "auto"
    dtype: str = "fp32"
    unet_batch_size: int | None = None
    vae_batch_size: int | None = None
    vae_slicing: bool = False
    vae_tiling: bool = False
    attention_slicing: str | int | None = None
    variant: str | None = None
    textual_inversion: tuple[str, ...] = ()
    lora: tuple[str, ...] = ()
    lora_scale: float = 1.0
    height: int | None = None
    width: int | None = None
    cpu_offload: bool = False

    def __post_init__(self) -> None:
        validation.device_name(self.device)
        validation.choice(self.dtype, "dtype", tuple(DTYPES))
        for name in ("unet_batch_size", "vae_batch_size", "height", "width"):
            if getattr(self, name) is not None:
                validation.positive_int(getattr(self, name), name)
        for name in ("vae_slicing", "vae_tiling", "cpu_offload"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {type(getattr(self, name)).__name__}")
        if self.attention_slicing is not None:
            object.__setattr__(self, "attention_slicing", validation.attention_slice(self.attention_slicing))
        if self.variant is not None:
            validation.variant_name(self.variant)
        for name in ("textual_inversion", "lora"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
                raise TypeError(f"{name} must be a list of files, got {type(value).__name__}")
            object.__setattr__(self, name, tuple(str(v) for v in value))
        object.__setattr__(self, "lora_scale", validation.number(self.lora_scale, "lora_scale"))
        if self.lora_scale != 1.0 and not self.lora:
            raise ValueError("lora_scale applies to the LoRA weights of --lora; none were given")

    @classmethod
    def from_settings(cls, settings: Any) -> RunOptions:
        """The run options a job's settings carry in fields of the same names (defaults where it has none)."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{n: getattr(settings, n) for n in names if getattr(settings, n, None) is not None})

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def resolve_device(self, default: torch.device | str | None = None) -> torch.device:
        """The device to run on (``default``, e.g. a process's own GPU, stands for ``auto`` where given), checked
        with the precision: a device this machine lacks, or a precision it cannot run, is a ValueError naming the
        setting — raised before any weights are read."""
        from latentmix.utils.device import resolve_device

        device = torch.device(default) if self.device == "auto" and default is not None else resolve_device(self.device)
        check_precision(device, self.dtype)
        if self.cpu_offload and device.type == "cpu":
            raise ValueError("cpu_offload keeps the networks on the CPU between calls to an accelerator (CUDA, MPS, "
                             "XPU); on the CPU they are there already — drop --cpu-offload")  # fmt: skip
        return device

    def apply(self, backend: Any, device: torch.device | None = None) -> Any:
        """Place ``backend`` on ``device`` (None: where it is) in this precision and set its batch sizes and memory
        features; returns it."""
        for spec in self.textual_inversion:
            backend.add_textual_inversion(spec)
        for path in self.lora:
            backend.add_lora(path, self.lora_scale)
        unet = getattr(backend, "unet", None)
        autoencoder = backend.first_stage or backend
        model = getattr(autoencoder, "vae", None)  # a diffusers autoencoder's model
        if unet is None:
            _refuse(backend, "unet_batch_size", self.unet_batch_size is not None, "diffusion backends (a UNet)")
            _refuse(backend, "attention_slicing", self.attention_slicing is not None, "diffusion backends (a UNet)")
        memory = {"vae_slicing": "enable_slicing", "vae_tiling": "enable_tiling"}
        for name, method in memory.items():
            if getattr(self, name) and not hasattr(model, method):
                decoder = type(model or next(iter(autoencoder.modules().values()))).__name__
                raise ValueError(
                    f"{name} applies to diffusers autoencoders that implement {method}() (AutoencoderKL); "
                    f"{backend.label!r} decodes with {decoder}"
                )
        if self.height is not None or self.width is not None:
            height, width = backend.image_shape
            backend.set_resolution(self.height or height, self.width or width)
        dtype = None if self.dtype == "fp32" else self.torch_dtype
        if self.cpu_offload:
            from latentmix.backends.offload import enable_cpu_offload

            if len(set(backend.modules().values())) < 2:
                raise ValueError(f"cpu_offload applies to backends of several networks (diffusion: text encoder, UNet, "
                                 f"VAE); {backend.label!r} has one")  # fmt: skip
            backend.to(None, dtype)
            enable_cpu_offload(backend, device if device is not None else self.resolve_device())
        else:
            backend.to(device, dtype)
        if self.unet_batch_size is not None:
            backend.batch_size = self.unet_batch_size
        if self.vae_batch_size is not None:
            autoencoder.batch_size = self.vae_batch_size
        if self.vae_slicing:
            model.enable_slicing()  # type: ignore[union-attr]
        if self.vae_tiling:
            model.enable_tiling()  # type: ignore[union-attr]
        if self.attention_slicing is not None:
            unet.set_attention_slice(self.attention_slicing)  # type: ignore[union-attr]
        return backend


def square_only(backend: Any, job: str, why: str) -> None:
    """A ValueError naming ``height`` / ``width`` where ``job`` cannot take the non-square resolution ``backend`` was
    set to (``why``: what needs square images)."""
    height, width = backend.image_shape
    if height != width:
        raise ValueError(f"height/width: {job} needs square images ({why}); {height}x{width} was asked for — pass the "
                         "same --height and --width")  # fmt: skip


def _refuse(backend: Any, name: str, given: bool, who: str) -> None:
    if given:
        raise ValueError(f"{name} applies to {who}; {backend.label!r} is a {backend.backend_name!r} backend")


def check_precision(device: torch.device, dtype: str) -> None:
    """Whether ``device`` runs ``dtype`` (a tiny convolution and attention in it, the kernels a UNet needs); a
    ValueError naming ``dtype`` otherwise."""
    if dtype == "fp32":
        return
    if device.type == "cuda" and dtype == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"dtype bf16: {torch.cuda.get_device_name(device)} does not support bfloat16; use fp16")
    torch_dtype = DTYPES[dtype]
    try:
        x = torch.ones(1, 2, 4, 4, device=device, dtype=torch_dtype)
        torch.nn.functional.conv2d(x, torch.ones(2, 2, 3, 3, device=device, dtype=torch_dtype), padding=1)
        torch.nn.functional.group_norm(x, 1)
        q = x.flatten(2).transpose(1, 2)
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    except (RuntimeError, NotImplementedError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"dtype {dtype}: this {device.type} device cannot run it ({first}); use fp32") from None
