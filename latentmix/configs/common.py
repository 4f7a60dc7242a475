"""Field groups that many jobs share, declared once: the backend and its call options, the data and how it
is converted, the split.

A job's settings dataclass inherits the groups it takes (``class GridConfig(SplitSettings, DataSettings,
BackendSettings)``); where one job needs another default or help text for a shared field it says only that,
with :func:`override`, and keeps the group's check and flag. Standard library only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from latentmix.configs.choices import SPLITS, int_list, pairs, transform_names
from latentmix.configs.options import NON_NEGATIVE_INT, POSITIVE_INT, Check, number_in, one_of, option, validate_fields
from latentmix.utils import validation

GUIDANCE = Check(validation.guidance_scale)
STRENGTH = Check(validation.strength)
PAIRS = Check(pairs)
SEEDS = Check(int_list)
TRANSFORM_NAMES = Check(transform_names)
DEVICE = Check(validation.device_name)
FINITE = Check(validation.number)

BACKEND_HELP = (
    "embedded name, directory or hub id of the backend (default: digits-vae for digits, shapes-vae for shapes)"
)
DIFFUSION = "diffusion backends: "
OUT_DIR_HELP = "output directory (new or empty)"
STRENGTH_HELP = (
    "diffusion backends: walk between partly inverted latents, inverting this fraction of the DDIM steps, in (0, 1]; "
    "the sampler cleans each frame up from that noise level, and lower keeps more of the images (default: 1, all "
    "the way to noise; "
)
INVERSION_HELP = (
    "diffusion backends: how images are inverted to noise: ddim (plain DDIM inversion), fixed-point (each step "
    "refined by fixed-point iteration) or exact (iterated to convergence)"
)
ITERATIONS_HELP = "fixed-point / exact inversion: UNet calls per step beyond the first (default: 3; exact: at most 50)"


def override(group: type, name: str, **changes: Any) -> Any:
    """Field ``name`` of the shared ``group`` with another ``default``, ``help`` or other :func:`option`
    setting for one job; everything not named (the check, the flag, the path flag) stays the group's."""
    field = {f.name: f for f in dataclasses.fields(group)}[name]
    metadata = dict(field.metadata)
    default = changes.pop("default", field.default)
    unknown = set(changes) - set(metadata)
    if unknown:
        raise TypeError(f"override: {', '.join(sorted(unknown))} is not an option() setting")
    metadata.update(changes)
    return dataclasses.field(default=default, metadata=metadata)


class Settings:
    """Base of every job's settings: ``validate()`` runs each field's check; a job that has rules spanning
    fields adds them after ``super().validate()``."""

    def validate(self) -> None:
        validate_fields(self)


DTYPE_NAMES = ("fp32", "fp16", "bf16")
ATTENTION_SLICE = Check(validation.attention_slice)
VARIANT = Check(validation.variant_name)


@dataclass
class BackendChoice(Settings):
    """Which backend a job runs."""

    #: a name, a directory or a hub id; from Python also a loaded ``LatentBackend``
    backend: Any = option(None, BACKEND_HELP, path=True)


@dataclass
class RunSettings(BackendChoice):
    """Where and how the backend runs (:class:`latentmix.backends.RunOptions`): device, precision, batch sizes and
    diffusers' memory features. Declared once; every job with a backend takes them."""

    device: str = option(
        "auto", "where the backend runs: auto (CUDA, then MPS, then CPU), cpu, cuda[:N], mps", check=DEVICE,
        identity=False,
    )  # fmt: skip
    dtype: str = option(
        "fp32", "precision of the backend's networks (an autoencoder with force_upcast stays fp32, as in diffusers)",
        check=one_of(DTYPE_NAMES),
    )  # fmt: skip
    unet_batch_size: int | None = option(
        None, DIFFUSION + "latents per UNet call (guidance doubles the rows; default: 128)", check=POSITIVE_INT,
        identity=False,
    )  # fmt: skip
    vae_batch_size: int | None = option(
        None, "images per autoencoder call (default: 256)", check=POSITIVE_INT, identity=False
    )
    vae_slicing: bool = option(
        False, "diffusers autoencoders: decode one image at a time (less peak memory)", identity=False
    )
    vae_tiling: bool = option(False, "diffusers autoencoders: encode and decode large images in overlapping tiles")
    attention_slicing: str | None = option(
        None, DIFFUSION + "compute the UNet's attention in slices: auto, max or a number", check=ATTENTION_SLICE,
        identity=False,
    )  # fmt: skip
    variant: str | None = option(
        None, "diffusers folders: load the weight files of this variant (fp16: *.fp16.safetensors)", check=VARIANT
    )
    textual_inversion: tuple[str, ...] | None = option(
        None,
        "text-conditioned backends: add the learned token of each textual-inversion file (diffusers' "
        "learned_embeds.safetensors, or TOKEN=FILE for an emb_params file); name the token in the prompts",
        metavar="[TOKEN=]FILE",
    )
    lora: tuple[str, ...] | None = option(
        None,
        DIFFUSION + "fuse LoRA weights into the UNet (and text encoder): a directory of diffusers' "
        "pytorch_lora_weights.safetensors (a `fit lora` directory brings its class tokens too) or a .safetensors file",
        metavar="DIR",
    )
    lora_scale: float = option(1.0, DIFFUSION + "the scale LoRA weights are fused at (0: the base model)",
                               check=FINITE)  # fmt: skip
    height: int | None = option(
        None, DIFFUSION + "the image height decoded, a multiple of the VAE's scale times the UNet's down-sampling (64 "
        "for SD); data images are read square at the longer side and centre-cropped (default: the UNet's sample size)",
        check=POSITIVE_INT,
    )  # fmt: skip
    width: int | None = option(None, DIFFUSION + "the image width decoded (as --height)", check=POSITIVE_INT)
    cpu_offload: bool = option(
        False, "on an accelerator: keep each network on the CPU until it runs, the others moved back first (diffusers' "
        "enable_model_cpu_offload: peak memory of the largest network)", identity=False,
    )  # fmt: skip


@dataclass
class BackendSettings(RunSettings):
    """The backend a job runs, how it runs (:class:`RunSettings`), and the options its encode and decode calls take
    (each refused by a backend it does not apply to; see :class:`latentmix.backends.CallOptions`)."""

    refine_steps: int | None = option(
        None, "GAN backends: inversion refinement steps (default: the backend's, 100)", check=NON_NEGATIVE_INT
    )
    num_inference_steps: int | None = option(
        None, DIFFUSION + "sampler steps (default: the backend's)", check=POSITIVE_INT
    )
    guidance_scale: float | None = option(
        None, DIFFUSION + "classifier-free guidance, >= 1 (default: the backend's)", check=GUIDANCE
    )
    negative_prompt: str | None = option(
        None, DIFFUSION + "the prompt guidance steers away from (needs guidance_scale > 1; default: '')"
    )


@dataclass
class DataSettings(Settings):
    """The data a job reads, converted to the model's image shape only when asked."""

    data: str = option("digits", "'digits', 'shapes' or an image folder", path=True)
    resize: bool = option(False, "convert data whose image size or channels differ from the model's (else an error)")


HF_DATA = "Hugging Face datasets data: "


@dataclass
class DataColumns(Settings):
    """Which columns, splits and hub configuration of Hugging Face ``datasets`` data a job reads: command-line flags of
    every job with ``--data``, folded into the data's ``?`` options (:func:`latentmix.data.hf.with_options`)."""

    image_column: str | None = option(None, HF_DATA + "the image column (default: the Image feature, else image / img)")
    label_column: str | None = option(
        None, HF_DATA + "the label column, integers or a ClassLabel (default: the ClassLabel, else label …)"
    )
    text_column: str | None = option(
        None, HF_DATA + "the caption column (default: text / caption / sentence …, else captions from the class names)"
    )
    train_split: str | None = option(None, HF_DATA + "the split read as train (default: train)")
    test_split: str | None = option(None, HF_DATA + "the split read as test (default: test, else validation)")
    data_config: str | None = option(
        None, HF_DATA + "the hub configuration: --data ID --data-config NAME is datasets.load_dataset(ID, NAME)"
    )


@dataclass
class SplitSettings(Settings):
    """Which split of the data a job reads."""

    split: str = option("test", "which split of the data", check=one_of(SPLITS))


IMBALANCE = number_in(1.0)
IMBALANCE_HELP = (
    "draw a long-tailed labelled subset: labels_per_class examples of class 0 down to labels_per_class / R of the "
    "last class, exponentially (latentmix.data.long_tailed_counts)"
)


def check_imbalance(config) -> None:
    """A long-tailed draw is given by the count of its largest class: ``imbalance_ratio`` needs ``labels_per_class``."""
    if config.imbalance_ratio is not None and config.labels_per_class is None:
        raise ValueError("imbalance_ratio needs labels_per_class (the count of the largest, first class)")
