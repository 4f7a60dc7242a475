"""Stable Diffusion XL behind the backend contract: two text encoders, pooled embeddings, size conditioning.

:class:`StableDiffusionXLBackend` is the latent-diffusion backend (:mod:`latentmix.backends.ldm`: DDIM inversion
and sampling, partial inversion, classifier-free guidance, batched walks) with SDXL's conditioning, as
``StableDiffusionXLPipeline`` builds it:

* the token states are the *penultimate* hidden states of both text encoders (``CLIPTextModel`` and
  ``CLIPTextModelWithProjection``), concatenated along the feature axis (768 + 1280 = 2048 for SDXL);
* the pooled embedding is the second encoder's projected end-of-text embedding (``text_embeds``);
* ``add_time_ids`` are (original size, crop top-left, target size) = (H, W, 0, 0, H, W) of the decoded image;
  the UNet takes both as ``added_cond_kwargs``;
* with no negative prompt, guidance steers away from zeros (``force_zeros_for_empty_prompt``, the pipeline's
  default) instead of the encoded ``""``.

One conditioning is one tensor, so a blend or a walk moves both token states and the pooled embedding with the
same t: :meth:`encode_text` returns the token rows followed by the pooled embedding packed into extra rows of the
same width (zero-padded), ``(N, L + ceil(P / D), D)``; the UNet call unpacks them. Inversion stays DDIM-based.

A plain diffusers SDXL folder (``model_index.json`` with ``text_encoder_2`` / ``tokenizer_2``) is claimed by this
class; a save writes one (plus latentmix's ``config.json``). ``add_lora`` reads SDXL LoRA files (the UNet and
both text encoders: diffusers' ``text_encoder`` / ``text_encoder_2`` keys, kohya's ``lora_te1_`` / ``lora_te2_``);
``add_textual_inversion`` reads SDXL embedding files (``clip_l`` and ``clip_g`` vectors).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from latentmix.backends import ldm_pipeline
from latentmix.backends.autoencoders import DiffusersAutoencoderBackend
from latentmix.backends.base import LatentBackend
from latentmix.backends.files import move_modules, read_json
from latentmix.backends.ldm import LatentDiffusionBackend
from latentmix.backends.ldm_pipeline import PIPELINE_INDEX
from latentmix.backends.registry import register_backend
from latentmix.data.text import TextEncoder

XL_COMPONENTS = ("vae", "unet", "scheduler", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")


@register_backend("latent-diffusion-xl")
class StableDiffusionXLBackend(LatentDiffusionBackend):
    """An SDXL model; see the module docstring.

    Args:
        autoencoder: a diffusers autoencoder backend (SDXL's ``AutoencoderKL``).
        unet: a ``UNet2DConditionModel`` with ``addition_embed_type="text_time"``.
        scheduler: any diffusers scheduler; its config builds the DDIM sampler and inverter.
        text_encoder: the first text encoder (``CLIPTextModel``) as a :class:`~latentmix.data.text.TextEncoder`.
        text_encoder_2: the second, with a projection (``CLIPTextModelWithProjection``).
        force_zeros_for_empty_prompt: guidance without a negative prompt steers away from zeros (SDXL's default).
        **kwargs: as for :class:`~latentmix.backends.ldm.LatentDiffusionBackend` (steps, guidance, text length);
            the text encoders run without the padding mask, as the pipeline runs them.
    """

    def __init__(
        self,
        autoencoder: LatentBackend,
        unet,
        scheduler,
        text_encoder: TextEncoder,
        text_encoder_2: TextEncoder,
        *,
        force_zeros_for_empty_prompt: bool = True,
        **kwargs,
    ):
        if not isinstance(autoencoder, DiffusersAutoencoderBackend):
            raise TypeError(f"autoencoder must be a diffusers autoencoder backend, got {type(autoencoder).__name__}")
        if not isinstance(text_encoder_2, TextEncoder):
            raise TypeError(f"text_encoder_2 must be a latentmix TextEncoder, got {type(text_encoder_2).__name__}")
        projection = getattr(text_encoder_2.model.config, "projection_dim", None)
        if not hasattr(text_encoder_2.model, "text_projection") or projection is None:
            raise TypeError(
                "text_encoder_2 must have a text projection (CLIPTextModelWithProjection), got "
                f"{type(text_encoder_2.model).__name__}"
            )
        if getattr(unet, "config", None) is not None and unet.config.get("addition_embed_type") != "text_time":
            raise ValueError(
                "unet: an SDXL UNet takes pooled text and size conditioning (addition_embed_type='text_time'), got "
                f"{unet.config.get('addition_embed_type')!r}"
            )
        self.text_encoder_2 = text_encoder_2
        kwargs.setdefault("text_attention_mask", False)
        for name in ("autoencoder_ref", "text_encoder_ref"):
            if kwargs.get(name) is not None:
                raise ValueError(f"{name}: an SDXL backend keeps its components (no references)")
        super().__init__(autoencoder, unet, scheduler, text_encoder, **kwargs)
        text_encoder_2.max_length = self.text_max_length
        self.pooled_dim = int(projection)
        expected = int(unet.add_embedding.linear_1.in_features)
        passed = int(unet.config.addition_time_embed_dim) * 6 + self.pooled_dim
        if expected != passed:
            raise ValueError(
                f"unet: expects an added embedding of {expected} values; 6 time ids x "
                f"{unet.config.addition_time_embed_dim} + the pooled text ({self.pooled_dim}) give {passed}"
            )
        self.force_zeros_for_empty_prompt = bool(force_zeros_for_empty_prompt)
        self.scale_factor = self.autoencoder.image_size // self.latent_shape[1]

    def _text_width(self, text_encoder: TextEncoder) -> int:
        return text_encoder.embedding_dim + self.text_encoder_2.embedding_dim

    @classmethod
    def from_pipeline(cls, pipe, **kwargs) -> StableDiffusionXLBackend:
        """Wrap a loaded ``StableDiffusionXLPipeline`` (or a namespace with its components)."""
        missing = [c for c in XL_COMPONENTS if getattr(pipe, c, None) is None]
        if missing:
            raise ValueError(f"pipeline {type(pipe).__name__} lacks the component(s) {', '.join(missing)}")
        autoencoder, unet, scheduler, text_encoder = ldm_pipeline.pipeline_parts(pipe, kwargs)
        second = TextEncoder(pipe.text_encoder_2, pipe.tokenizer_2, name=type(pipe.text_encoder_2).__name__)
        config = getattr(pipe, "config", None) or {}
        kwargs.setdefault("force_zeros_for_empty_prompt", bool(config.get("force_zeros_for_empty_prompt", True)))
        kwargs["text_attention_mask"] = False
        return cls(autoencoder, unet, scheduler, text_encoder, second, **kwargs)

    # -- placement -----------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        return {**super().modules(), "text_encoder_2": self.text_encoder_2.model}

    def to(self, device=None, dtype=None) -> StableDiffusionXLBackend:
        move_modules([self.text_encoder_2.model], device, dtype)
        super().to(device, dtype)
        return self

    def add_textual_inversion(self, spec: str | os.PathLike) -> list[str]:
        """Add an SDXL textual-inversion file's token (``clip_l`` and ``clip_g`` vectors) to both text encoders;
        see :mod:`latentmix.backends.adapters`."""
        from latentmix.backends.adapters import add_textual_inversion_xl

        tokens = add_textual_inversion_xl((self.text_encoder, self.text_encoder_2), spec)
        self._text_cache.clear()  # conditionings computed before the token existed
        return tokens

    def text_encoders(self) -> dict[str, TextEncoder]:
        return {"text_encoder": self.text_encoder, "text_encoder_2": self.text_encoder_2}

    # -- conditioning --------------------------------------------------------------------
    def _text_states(self, texts: list[str]) -> Tensor:
        """Both encoders' penultimate token states, concatenated, then the pooled embedding packed into rows."""
        states, pooled = [], None
        for encoder in (self.text_encoder, self.text_encoder_2):
            out, _ = encoder.outputs(
                texts, pad_to_max_length=True, attention_mask=self.text_attention_mask, output_hidden_states=True
            )
            states.append(out.hidden_states[-2])
            pooled = out.text_embeds if encoder is self.text_encoder_2 else pooled
        tokens = torch.cat([s.float() for s in states], dim=-1)
        return pack_pooled(tokens, pooled.float())  # type: ignore[union-attr]

    def split_condition(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        """(token states (N, L, D), pooled embeddings (N, P)) of a conditioning from :meth:`encode_text`."""
        rows = self.text_max_length
        return cond[:, :rows], cond[:, rows:].flatten(1)[:, : self.pooled_dim]

    def unconditional(self, n: int, negative_prompt: str | list[str] | None = None) -> Tensor:
        """Zeros where no negative prompt is given and the pipeline says so (SDXL's default), else as for SD."""
        if negative_prompt is None and self.force_zeros_for_empty_prompt:
            return torch.zeros_like(self.encode_text([""])).expand(n, -1, -1)
        return super().unconditional(n, negative_prompt)

    def time_ids(self, latents: Tensor) -> Tensor:
        """SDXL's size conditioning of ``latents``: (H, W, 0, 0, H, W) of the images they decode to, one row each."""
        height, width = (int(s) * self.scale_factor for s in latents.shape[-2:])
        ids = torch.tensor([height, width, 0, 0, height, width], device=latents.device, dtype=self.dtype)
        return ids.expand(latents.shape[0], -1)

    def _unet_output(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        tokens, pooled = self.split_condition(cond)
        added = {"text_embeds": pooled, "time_ids": self.time_ids(x)}
        return self.unet(x, t, encoder_hidden_states=tokens, added_cond_kwargs=added).sample

    # -- save / load ---------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        config = {k: v for k, v in super()._config().items() if k not in ("vae", "text_encoder")}
        return {**config, "force_zeros_for_empty_prompt": self.force_zeros_for_empty_prompt}

    def _save_weights(self, directory: Path) -> None:
        import diffusers

        self.unet.save_pretrained(directory / "unet", safe_serialization=True)
        self.scheduler.save_pretrained(directory / "scheduler")
        self.autoencoder.vae.save_pretrained(directory / "vae", safe_serialization=True)  # type: ignore[attr-defined]
        self.text_encoder.save_pretrained(directory / "text_encoder", directory / "tokenizer")
        self.text_encoder_2.save_pretrained(directory / "text_encoder_2", directory / "tokenizer_2")
        index = {
            "_class_name": "StableDiffusionXLPipeline",
            "_diffusers_version": diffusers.__version__,
            "force_zeros_for_empty_prompt": self.force_zeros_for_empty_prompt,
            "feature_extractor": [None, None],
            "image_encoder": [None, None],
            "scheduler": ["diffusers", "DDIMScheduler"],
            "text_encoder": ["transformers", type(self.text_encoder.model).__name__],
            "text_encoder_2": ["transformers", type(self.text_encoder_2.model).__name__],
            "tokenizer": ["transformers", type(self.text_encoder.tokenizer).__name__],
            "tokenizer_2": ["transformers", type(self.text_encoder_2.tokenizer).__name__],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", type(self.autoencoder.vae).__name__],  # type: ignore[attr-defined]
        }
        (directory / PIPELINE_INDEX).write_text(json.dumps(index, indent=2) + "\n")

    @classmethod
    def claims(cls, directory: Path) -> bool:
        """A latentmix save of this class, or a diffusers SDXL pipeline directory."""
        pipeline = ldm_pipeline.is_pipeline_dir(directory) and ldm_pipeline.is_xl_index(directory)
        return pipeline or LatentBackend.claims.__func__(cls, directory)  # type: ignore[attr-defined]

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, *, trust_remote_code: bool | None = None, **kwargs
    ) -> StableDiffusionXLBackend:
        """Load a diffusers SDXL pipeline directory, or a latentmix save of this class (``variant="fp16"`` reads
        ``*.fp16.safetensors``). Components are read from inside ``directory`` only; no remote code runs unless
        ``trust_remote_code``."""
        directory = Path(directory)
        if directory.is_dir() and ldm_pipeline.is_pipeline_dir(directory):
            if not ldm_pipeline.is_xl_index(directory):
                raise ValueError(f"{directory} is a Stable Diffusion pipeline without a second text encoder, not SDXL")
            variant = kwargs.pop("variant", None)
            return cls.from_pipeline(load_xl_pipeline_dir(directory, trust_remote_code, variant), **kwargs)
        if kwargs.get("variant") is not None:
            raise ValueError(f"variant applies to diffusers pipeline folders; {directory} is a latentmix save")
        kwargs.pop("variant", None)
        return LatentBackend.from_pretrained.__func__(cls, directory, trust_remote_code=trust_remote_code, **kwargs)  # type: ignore[attr-defined]

    @classmethod
    def _load(
        cls, directory: Path, config: dict[str, Any], *, trust_remote_code: bool | None = None, **kwargs
    ) -> StableDiffusionXLBackend:
        for key in ("num_inference_steps", "guidance_scale", "text_max_length", "force_zeros_for_empty_prompt"):
            if key in config:
                kwargs.setdefault(key, config[key])
        return cls.from_pipeline(load_xl_pipeline_dir(directory, trust_remote_code, None), **kwargs)


def pack_pooled(tokens: Tensor, pooled: Tensor) -> Tensor:
    """Token states (N, L, D) followed by the pooled embeddings (N, P), zero-padded into ceil(P / D) rows of width D."""
    n, _, width = tokens.shape
    rows = math.ceil(pooled.shape[-1] / width)
    padded = pooled.new_zeros(n, rows * width)
    padded[:, : pooled.shape[-1]] = pooled
    return torch.cat([tokens, padded.view(n, rows, width)], dim=1)


def load_xl_pipeline_dir(directory: Path, trust_remote_code: bool | None, variant: str | None) -> SimpleNamespace:
    """The components of a diffusers SDXL pipeline directory, as a pipeline-like namespace; every component must be
    there (a refiner, which lacks the first text encoder, is refused), pickles are refused and every weight file is
    checked before any weights are read."""
    import transformers

    index = read_json(directory / PIPELINE_INDEX, "pipeline index")
    ldm_pipeline.check_components(directory, index, XL_COMPONENTS, "an SDXL backend")
    second = str(index["text_encoder_2"][-1])
    model_class = getattr(transformers, second, None)
    if not (isinstance(model_class, type) and issubclass(model_class, transformers.PreTrainedModel)):
        raise ValueError(f"{directory / PIPELINE_INDEX}: text_encoder_2 {second!r} is not a transformers model class")
    text_encoder, vae, unet = ldm_pipeline.load_common(
        directory, ("text_encoder", "text_encoder_2"), trust_remote_code, variant
    )
    text_encoder_2 = ldm_pipeline.load_text_encoder(
        directory, "text_encoder_2", trust_remote_code, variant, tokenizer="tokenizer_2", model_class=model_class
    )
    return SimpleNamespace(
        vae=vae, unet=unet, scheduler=ldm_pipeline.load_scheduler(directory), text_encoder=text_encoder.model,
        tokenizer=text_encoder.tokenizer, text_encoder_2=text_encoder_2.model, tokenizer_2=text_encoder_2.tokenizer,
        config={"force_zeros_for_empty_prompt": bool(index.get("force_zeros_for_empty_prompt", True))},
    )  # fmt: skip
