"""Latent diffusion behind the backend contract: autoencoder + text-conditioned UNet + DDIM.

``LatentDiffusionBackend`` wraps an autoencoder backend (latentmix's VAE or a diffusers
``AutoencoderKL``, ``AutoencoderTiny`` or ``VQModel``), a diffusers ``UNet2DConditionModel`` that
cross-attends to per-token text hidden states, a text encoder and a DDIM scheduler:

* ``encode(images, texts=...)``: autoencoder latents, then deterministic DDIM inversion
  (``DDIMInverseScheduler``) to the noise latent; ``decode(noise, texts=...)``: deterministic
  DDIM sampling (η = 0) back to autoencoder latents, then the autoencoder's decoder. Noise
  latents are N(0, I) under the prior, so slerp is the default interpolator.
* conditioning is the text encoder's last hidden states, padded to ``text_max_length`` tokens
  so that two prompts blend position by position (:meth:`encode_text`); ``decode(..., cond=)``
  takes blended conditionings directly.
* classifier-free guidance: ``guidance_scale`` 1 runs the conditional model only; above 1 each
  UNet call carries the unconditional ("") and conditional halves in one batch. The same scale
  is used for inversion and sampling by default, so a round trip reproduces its input.
* every item of a batch shares the timesteps, so any number of walk frames go through the UNet
  together (in chunks of ``batch_size``), not one pipeline call per frame.

An autoencoder with flat latents (the digits VAE's 16-d vector) is reshaped to the UNet's
``(in_channels, sample_size, sample_size)``; the sizes must agree.

Saved layout: a diffusers Stable Diffusion pipeline directory (``unet/``, ``scheduler/``,
``vae/``, ``text_encoder/``, ``tokenizer/`` and, when the autoencoder is a diffusers model,
``model_index.json``) plus latentmix's ``config.json``. The autoencoder and the text encoder may
be *references* instead of copies (``"vae": "digits-vae"``, ``"text_encoder": "all-MiniLM-L6-v2"``),
which is how the embedded ``digits-ldm`` stays small. ``from_pretrained`` also reads a plain
diffusers pipeline directory such as a local Stable Diffusion checkout; the folder handling lives in
:mod:`latentmix.backends.ldm_pipeline`, the sampler and the inverter here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    DDIMInverseScheduler,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UNet2DConditionModel,
)
from torch import Tensor, nn
from tqdm.auto import tqdm

from latentmix.backends import ldm_pipeline
from latentmix.backends.base import LatentBackend
from latentmix.backends.diffusion import fixed_point_invert
from latentmix.backends.files import move_modules
from latentmix.backends.ldm_pipeline import PIPELINE_INDEX, unet_sample_shape
from latentmix.backends.options import CallOptions, check_per_item
from latentmix.backends.registry import register_backend
from latentmix.backends.resolution import check_resolution, resolution_multiple
from latentmix.configs import INVERSIONS, SAMPLERS
from latentmix.data.text import TextEncoder, check_texts
from latentmix.utils import validation


def _check_partial(keep: int | None, inversion: str, sampler: str) -> None:
    """A partial round trip (``keep`` steps of a strength below 1) inverts and samples with plain DDIM."""
    if keep is not None and inversion != "ddim":
        raise ValueError(f"strength below 1 needs inversion='ddim', got inversion={inversion!r}")
    if keep is not None and sampler != "ddim":
        raise ValueError(f"strength below 1 needs sampler='ddim', got sampler={sampler!r}")


@register_backend("latent-diffusion")
class LatentDiffusionBackend(LatentBackend):
    """A text-conditioned latent diffusion model; see the module docstring.

    Args:
        autoencoder: the backend whose latents the UNet denoises (a :class:`VAEBackend` or an
            :class:`AutoencoderKLBackend`).
        unet: a diffusers ``UNet2DConditionModel``.
        scheduler: any diffusers scheduler; its config builds the DDIM sampler and inverter.
        text_encoder: a :class:`~latentmix.data.text.TextEncoder` (MiniLM, CLIP, …).
        num_inference_steps: default DDIM steps of ``encode`` and ``decode``.
        guidance_scale: default classifier-free guidance scale (>= 1; 1 is off).
        text_max_length: tokens every text is padded / truncated to (default: the tokenizer's, capped at 77).
        text_attention_mask: run the text encoder with the padding mask (True for BERT-like
            encoders such as MiniLM; Stable Diffusion runs CLIP without it).
        autoencoder_ref, text_encoder_ref: names saved in place of copies (an embedded backend,
            ``"all-MiniLM-L6-v2"``); None saves the component itself.
    """

    latent_prior = "gaussian"
    default_method = "slerp"
    supports_text_condition = True
    requires_text = True
    encoder_kind = "ddim-inversion"
    batch_size = 128
    option_names = frozenset(
        {"num_inference_steps", "guidance_scale", "strength", "inversion", "inversion_iterations", "sampler",
         "negative_prompt"}
    )  # fmt: skip

    def __init__(
        self,
        autoencoder: LatentBackend,
        unet: UNet2DConditionModel,
        scheduler,
        text_encoder: TextEncoder,
        *,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        text_max_length: int | None = None,
        text_attention_mask: bool = True,
        autoencoder_ref: str | None = None,
        text_encoder_ref: str | None = None,
    ):
        if not isinstance(autoencoder, LatentBackend) or autoencoder.supports_text_condition:
            raise TypeError(
                "autoencoder must be an unconditional LatentBackend (a VAE, AutoencoderKL, AutoencoderTiny or "
                f"VQModel), got {type(autoencoder).__name__}"
            )
        if not isinstance(unet, UNet2DConditionModel):
            raise TypeError(f"unet must be a diffusers UNet2DConditionModel, got {type(unet).__name__}")
        if not hasattr(scheduler, "config"):
            raise TypeError(f"scheduler must be a diffusers scheduler, got {type(scheduler).__name__}")
        if not isinstance(text_encoder, TextEncoder):
            raise TypeError(f"text_encoder must be a latentmix TextEncoder, got {type(text_encoder).__name__}")
        cfg = unet.config
        shape = unet_sample_shape(unet)
        if int(cfg.out_channels) != shape[0]:
            raise ValueError(f"unet: out_channels {cfg.out_channels} must equal in_channels {shape[0]}")
        ae_numel = int(torch.Size(autoencoder.latent_shape).numel())
        if ae_numel != shape[0] * shape[1] * shape[2]:
            raise ValueError(
                f"unet: sample shape {shape} holds {shape[0] * shape[1] * shape[2]} values but the autoencoder's "
                f"latents {tuple(autoencoder.latent_shape)} hold {ae_numel}"
            )
        text_dim = int(cfg.encoder_hid_dim) if cfg.encoder_hid_dim_type == "text_proj" else int(cfg.cross_attention_dim)
        if text_dim != self._text_width(text_encoder):
            raise ValueError(
                f"unet: expects text hidden states of size {text_dim}, the text encoder gives "
                f"{self._text_width(text_encoder)}"
            )
        self.autoencoder = autoencoder
        self.unet = unet.eval()
        self.scheduler = DDIMScheduler.from_config(scheduler.config)
        self.text_encoder = text_encoder
        self.text_max_length = int(text_max_length or min(text_encoder.max_length, 77))
        text_encoder.max_length = self.text_max_length
        self.text_attention_mask = bool(text_attention_mask)
        self.num_inference_steps = validation.positive_int(num_inference_steps, "num_inference_steps")
        self.guidance_scale = validation.guidance_scale(guidance_scale)
        self.autoencoder_ref, self.text_encoder_ref = autoencoder_ref, text_encoder_ref
        self._shape = shape
        self._text_cache: dict[str, Tensor] = {}
        self.last_inversion_calls: int | None = None  # UNet calls per latent of the last invert()

    def _text_width(self, text_encoder: TextEncoder) -> int:
        """The width of the per-token states the UNet cross-attends to."""
        return text_encoder.embedding_dim

    @classmethod
    def from_pipeline(cls, pipe, **kwargs) -> LatentDiffusionBackend:
        """Wrap an already loaded diffusers pipeline (``StableDiffusionPipeline`` or one with the
        same components: ``vae``, ``unet``, ``scheduler``, ``text_encoder``, ``tokenizer``)."""
        return cls(*ldm_pipeline.pipeline_parts(pipe, kwargs), **kwargs)

    # -- shape and placement -------------------------------------------------------------
    @property
    def image_size(self) -> int:
        return self.autoencoder.image_size

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.autoencoder.image_shape

    def set_resolution(self, height: int, width: int) -> None:
        """Decode and encode ``height`` × ``width`` images (``--height`` / ``--width``): the latents follow (⅛ of the
        side for Stable Diffusion's VAE). Both must be multiples of the VAE's scale factor times the UNet's
        down-sampling (64 for SD 1.5 / 2.x and SDXL; as in diffusers' pipelines, the UNet is fully convolutional)."""
        if not ldm_pipeline.is_diffusers_autoencoder(self.autoencoder):
            raise ValueError(
                f"height/width apply to diffusion backends on a diffusers autoencoder (AutoencoderKL, AutoencoderTiny, "
                f"VQModel); {self.label!r} decodes with {type(self.autoencoder).__name__}, "
                f"{self.image_size}x{self.image_size} only"
            )
        multiple = resolution_multiple(self.autoencoder.downsample_factor,  # type: ignore[attr-defined]
                                                    len(self.unet.config.down_block_types))  # fmt: skip
        check_resolution(height, width, multiple)
        self.autoencoder.set_resolution(height, width)
        self._shape = tuple(self.autoencoder.latent_shape)  # type: ignore[assignment]

    @property
    def image_channels(self) -> int:
        return self.autoencoder.image_channels

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def first_stage(self) -> LatentBackend:
        """The autoencoder whose latents the UNet denoises."""
        return self.autoencoder

    def modules(self) -> dict[str, nn.Module]:
        return {
            "unet": self.unet,
            "text_encoder": self.text_encoder.model,
            **{f"autoencoder.{k}": m for k, m in self.autoencoder.modules().items()},
        }

    def to(self, device=None, dtype=None) -> LatentDiffusionBackend:
        move_modules([self.unet, self.text_encoder.model], device, dtype)
        self.autoencoder.to(
            device, dtype
        )  # by its own rules (an AutoencoderKL with force_upcast stays float32 for float16)
        self._text_cache.clear()
        return self

    def add_textual_inversion(self, spec: str | os.PathLike) -> list[str]:
        from latentmix.backends.adapters import add_textual_inversion

        tokens = add_textual_inversion(self.text_encoder, spec)
        self._text_cache.clear()  # conditionings computed before the token existed
        return tokens

    def add_lora(self, path: str | os.PathLike, scale: float = 1.0) -> list[str]:
        from latentmix.backends.adapters import EMBEDS_DIR
        from latentmix.backends.lora import add_lora

        encoders = self.text_encoders()
        models = {part: encoder.model for part, encoder in encoders.items()}
        parts = add_lora(self.unet, models, path, scale, xl="text_encoder_2" in encoders)
        if Path(path).is_dir() and (Path(path) / EMBEDS_DIR).is_dir():  # a `fit lora` directory: its class tokens
            self.add_textual_inversion(path)
        for encoder in encoders.values():
            encoder.clear_cache()
        self._text_cache.clear()  # conditionings computed before the text encoder changed
        return parts

    def text_encoders(self) -> dict[str, TextEncoder]:
        """The text encoders, by the names of their parts in a pipeline folder (and of a LoRA file's keys)."""
        return {"text_encoder": self.text_encoder}

    # -- text conditioning ---------------------------------------------------------------
    def encode_text(self, texts: list[str]) -> Tensor:
        """Per-token hidden states (N, text_max_length, D) of ``texts``, cached per text."""
        texts = check_texts(texts)
        if not texts:
            raise ValueError("texts is empty")
        todo = sorted({t for t in texts if t not in self._text_cache})
        for start in range(0, len(todo), 256):
            chunk = todo[start : start + 256]
            for text, h in zip(chunk, self._text_states(chunk), strict=True):
                self._text_cache[text] = h.float().cpu()
        return torch.stack([self._text_cache[t] for t in texts]).to(device=self.device, dtype=self.dtype)

    def _text_states(self, texts: list[str]) -> Tensor:
        """The conditioning rows of ``texts``, uncached: the text encoder's last hidden states, padded."""
        mask = self.text_attention_mask
        return self.text_encoder.hidden_states(texts, pad_to_max_length=True, attention_mask=mask)[0]

    def _resolve_options(self, options: CallOptions) -> CallOptions:
        """Check the sampler's options by this backend's rules (steps within the training timesteps, a strength
        that keeps a step and goes with DDIM inversion and sampling)."""
        name = options.name
        if options.num_inference_steps is not None:
            self._settings(validation.positive_int(options.num_inference_steps, name("num_inference_steps")), None)
        if options.guidance_scale is not None:
            validation.guidance_scale(options.guidance_scale, name("guidance_scale"))
        if options.inversion is not None:
            validation.choice(options.inversion, name("inversion"), INVERSIONS)
        if options.inversion_iterations is not None:
            validation.non_negative_int(options.inversion_iterations, name("inversion_iterations"))
        if options.sampler is not None:
            validation.choice(options.sampler, name("sampler"), SAMPLERS)
        if options.strength is not None:
            keep = self.kept_steps(options.strength, options.num_inference_steps, name=name("strength"))
            _check_partial(keep, options.inversion or "ddim", options.sampler or "ddim")
        if options.negative_prompt is not None:
            negative = options.negative_prompt
            check_texts([negative] if isinstance(negative, str) else list(negative))
            scale = self.guidance_scale if options.guidance_scale is None else options.guidance_scale
            if scale == 1.0:
                raise ValueError(
                    f"{name('negative_prompt')} needs {name('guidance_scale')} > 1 (at 1 only the conditional model "
                    "runs, and there is nothing to steer away from)"
                )
        return options

    @property
    def last_encode_calls(self) -> int | None:
        """UNet calls per latent of the last inversion (:meth:`invert`)."""
        return self.last_inversion_calls

    # -- diffusion -----------------------------------------------------------------------
    def unconditional(self, n: int, negative_prompt: str | list[str] | None = None) -> Tensor:
        """The conditioning guidance steers away from, for ``n`` items: the negative prompt (one for all, or one per
        item), ``""`` where None."""
        if negative_prompt is None or isinstance(negative_prompt, str):
            return self.encode_text([negative_prompt or ""]).expand(n, -1, -1)
        check_per_item("negative_prompt", negative_prompt, n)
        return self.encode_text(list(negative_prompt))

    def predict_noise(
        self, x: Tensor, t: Tensor, cond: Tensor, guidance_scale: float, uncond: Tensor | None = None
    ) -> Tensor:
        """The UNet's output for x_t (float32), with classifier-free guidance in one batched call (``uncond``: the
        conditioning it steers away from, default ``""``)."""
        x_in = x.to(self.dtype)
        if guidance_scale == 1.0:
            return self._unet_output(x_in, t, cond).float()
        uncond = self.unconditional(x.shape[0]) if uncond is None else uncond
        out = self._unet_output(torch.cat([x_in, x_in]), t, torch.cat([uncond, cond])).float()
        eps_uncond, eps_cond = out.chunk(2)
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond)

    def _unet_output(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """One UNet call on x_t conditioned on ``cond`` (rows of :meth:`encode_text`)."""
        return self.unet(x, t, encoder_hidden_states=cond).sample

    def kept_steps(self, strength: float, num_inference_steps: int | None = None, name: str = "strength") -> int | None:
        """How many DDIM steps a round trip at ``strength`` runs (None: all of them; diffusers' img2img rule,
        ``int(num_inference_steps * strength)``, the backend's steps where None); an error names ``name`` when it
        keeps none."""
        strength = validation.strength(strength, name)
        if strength == 1.0:
            return None
        steps = self._settings(num_inference_steps, None)[0]
        keep = int(steps * strength)
        if keep < 1:
            raise ValueError(
                f"{name} {strength:g} keeps no step of {steps} (num_inference_steps * {name} must be >= 1)"
            )
        return keep

    def clean_latents(self, images: Tensor) -> Tensor:
        """The autoencoder latents of ``images`` in the UNet's shape (N, *latent_shape): what :meth:`invert` and
        :meth:`partly_noised` start from."""
        return self.autoencoder.encode(images).reshape(images.shape[0], *self._shape)

    def partly_noised(
        self, z0: Tensor, noise: Tensor, strength: float = 1.0, num_inference_steps: int | None = None
    ) -> Tensor:
        """Clean latents ``z0`` noised with ``noise`` to the level at which sampling at ``strength`` starts
        (SDEdit, diffusers' img2img): ``√ᾱ_t·z0 + √(1 − ᾱ_t)·noise`` at the first of the last
        ``int(num_inference_steps * strength)`` DDIM timesteps (the first timestep at strength 1). :meth:`denoise`
        with the same strength and steps takes them back to an image."""
        steps = self._settings(num_inference_steps, None)[0]
        keep = self.kept_steps(strength, steps)
        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(steps, device=z0.device)
        timesteps = scheduler.timesteps
        t = timesteps[0 if keep is None else len(timesteps) - keep]
        return scheduler.add_noise(z0.float(), noise.to(z0.device).float(), t.reshape(1)).float()

    def _settings(self, steps: int | None, guidance_scale: float | None) -> tuple[int, float]:
        """The sampler's steps and guidance scale (the backend's defaults where None), checked."""
        steps = validation.positive_int(self.num_inference_steps if steps is None else steps, "num_inference_steps")
        guidance_scale = validation.guidance_scale(self.guidance_scale if guidance_scale is None else guidance_scale)
        if steps > self.scheduler.config.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps must be <= {self.scheduler.config.num_train_timesteps} (the training timesteps), "
                f"got {steps}"
            )
        return steps, guidance_scale

    def _run(
        self,
        scheduler,
        x: Tensor,
        cond: Tensor,
        steps: int,
        guidance_scale: float,
        desc: str,
        keep: int | None = None,
        uncond: Tensor | None = None,
    ) -> Tensor:
        """Step ``x`` through the scheduler's timesteps: all of them, or the ``keep`` lowest-noise ones (the first
        ``keep`` of an inversion, the last ``keep`` of sampling: a partial round trip, see ``strength``). Unit-variance
        noise is scaled to the scheduler's ``init_noise_sigma`` and each input by ``scale_model_input`` (both the
        identity for DDIM and DPM-Solver; Euler works in σ-scaled latents), as diffusers' pipelines do."""
        scheduler.set_timesteps(steps, device=x.device)
        timesteps = scheduler.timesteps
        if keep is not None:
            inverse = isinstance(scheduler, DDIMInverseScheduler)
            timesteps = timesteps[:keep] if inverse else timesteps[len(timesteps) - keep :]
        x = x.float()
        if keep is None and not isinstance(scheduler, DDIMInverseScheduler):
            x = x * scheduler.init_noise_sigma
        for t in tqdm(timesteps, desc=desc, disable=not self.show_progress, leave=False):
            eps = self.predict_noise(scheduler.scale_model_input(x, t), t, cond, guidance_scale, uncond)
            x = scheduler.step(eps, t, x).prev_sample
        return x

    @torch.no_grad()
    def invert(
        self,
        z0: Tensor,
        cond: Tensor,
        *,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        inversion: str = "ddim",
        inversion_iterations: int | None = None,
        strength: float = 1.0,
        negative_prompt: str | list[str] | None = None,
    ) -> Tensor:
        """Invert autoencoder latents (N, *latent_shape) to noise latents (always DDIM-based: DDIM inversion, or
        its fixed-point refinement; the sampler that takes them back is DDIM). ``negative_prompt``: what guidance
        steers away from (as in :meth:`denoise`; the same one makes the round trip).

        ``strength`` < 1 inverts only the first ``int(num_inference_steps * strength)`` steps: the latent at that
        intermediate noise level (img2img's ``strength``), which :meth:`denoise` with the same strength takes back.
        Walks between such partly noised latents stay closer to the images' layout and are cleaned up by the
        sampler instead of cross-fading (SDEdit, Meng et al. 2022; Wang & Golland 2023); DDIM inversion only.

        ``inversion="ddim"`` is deterministic DDIM inversion (``DDIMInverseScheduler``); ``"fixed-point"`` and
        ``"exact"`` refine every step by fixed-point iteration (:mod:`latentmix.backends.diffusion`), at
        ``inversion_iterations`` extra UNet calls per step (at most, for ``"exact"``). The UNet calls per latent
        of the last call are kept in ``last_inversion_calls``.
        """
        steps, guidance_scale = self._settings(num_inference_steps, guidance_scale)
        keep = self.kept_steps(strength, steps)
        _check_partial(keep, inversion, "ddim")
        uncond = self.unconditional(z0.shape[0], negative_prompt) if guidance_scale != 1.0 else None
        if inversion == "ddim":
            inverse = DDIMInverseScheduler.from_config(self.scheduler.config)
            self.last_inversion_calls = steps if keep is None else keep
            return self._run(inverse, z0, cond, steps, guidance_scale, "DDIM inversion", keep, uncond)
        if inversion_iterations is not None:
            validation.non_negative_int(inversion_iterations, "inversion_iterations")
        x, calls = fixed_point_invert(
            lambda x, t: self.predict_noise(x, t, cond, guidance_scale, uncond),
            z0,
            DDIMScheduler.from_config(self.scheduler.config),
            steps,
            method=inversion,
            iterations=inversion_iterations,
            show_progress=self.show_progress,
        )
        self.last_inversion_calls = calls
        return x

    @torch.no_grad()
    def denoise(
        self,
        noise: Tensor,
        cond: Tensor,
        *,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        sampler: str = "ddim",
        strength: float = 1.0,
        negative_prompt: str | list[str] | None = None,
    ) -> Tensor:
        """Deterministic sampling from noise latents to autoencoder latents, float32: DDIM (η = 0), or for prior
        latents ``sampler="dpm-solver"`` (DPM-Solver++, second order: fewer steps) or ``"euler"`` (diffusers'
        ``EulerDiscreteScheduler``), each built from the backend's scheduler config. With ``strength`` < 1 the
        latents are partly noised ones from :meth:`invert` at the same strength, and only the last
        ``int(num_inference_steps * strength)`` DDIM steps run. ``negative_prompt`` (one for all, or one per item)
        replaces ``""`` as what guidance steers away from."""
        steps, guidance_scale = self._settings(num_inference_steps, guidance_scale)
        keep = self.kept_steps(strength, steps)
        _check_partial(keep, "ddim", sampler)
        if sampler == "ddim":
            scheduler = DDIMScheduler.from_config(self.scheduler.config)
        elif sampler == "dpm-solver":
            scheduler = DPMSolverMultistepScheduler.from_config(
                self.scheduler.config, algorithm_type="dpmsolver++", solver_order=2
            )
        elif sampler == "euler":
            scheduler = EulerDiscreteScheduler.from_config(self.scheduler.config)
        else:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        uncond = self.unconditional(noise.shape[0], negative_prompt) if guidance_scale != 1.0 else None
        return self._run(scheduler, noise, cond, steps, guidance_scale, f"{sampler} sampling", keep, uncond)

    def _encode(
        self,
        images: Tensor,
        *,
        cond: Tensor,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        inversion: str = "ddim",
        inversion_iterations: int | None = None,
        strength: float = 1.0,
        negative_prompt: str | list[str] | None = None,
    ) -> Tensor:
        z0 = self.clean_latents(images)
        noise = self.invert(
            z0, cond, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, inversion=inversion,
            inversion_iterations=inversion_iterations, strength=strength, negative_prompt=negative_prompt,
        )  # fmt: skip
        return noise.to(self.dtype)

    def _decode(
        self,
        latents: Tensor,
        *,
        cond: Tensor,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        sampler: str = "ddim",
        strength: float = 1.0,
        negative_prompt: str | list[str] | None = None,
    ) -> Tensor:
        z0 = self.denoise(
            latents, cond, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, sampler=sampler,
            strength=strength, negative_prompt=negative_prompt,
        )  # fmt: skip
        return self.autoencoder.decode(z0.reshape(latents.shape[0], *self.autoencoder.latent_shape).to(self.dtype))

    # -- save / load ---------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        return {
            "vae": self.autoencoder_ref or "vae",
            "text_encoder": self.text_encoder_ref or "text_encoder",
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "text_max_length": self.text_max_length,
            "text_attention_mask": self.text_attention_mask,
            "image_size": getattr(self.autoencoder, "native_image_size", self.image_size),  # --height/--width: a run's
        }

    def _save_weights(self, directory: Path) -> None:
        self.unet.save_pretrained(directory / "unet", safe_serialization=True)
        self.scheduler.save_pretrained(directory / "scheduler")
        plain = ldm_pipeline.is_plain_diffusers_autoencoder(self.autoencoder)
        if self.autoencoder_ref is None:
            if plain:
                model: Any = getattr(self.autoencoder, "vae")  # noqa: B009 (a diffusers adapter's model)
                model.save_pretrained(directory / "vae", safe_serialization=True)
            else:
                self.autoencoder.save_pretrained(directory / "vae")
        if self.text_encoder_ref is None:
            self.text_encoder.save_pretrained(directory / "text_encoder", directory / "tokenizer")
        if self.autoencoder_ref is None and self.text_encoder_ref is None and plain:
            index = ldm_pipeline.pipeline_index(self.autoencoder, self.text_encoder)
            (directory / PIPELINE_INDEX).write_text(json.dumps(index, indent=2) + "\n")

    @classmethod
    def claims(cls, directory: Path) -> bool:
        """A latentmix save of this class, or a diffusers pipeline directory (``model_index.json``) that is not an
        SDXL one (:mod:`latentmix.backends.sdxl` claims those)."""
        pipeline = ldm_pipeline.is_pipeline_dir(directory) and not ldm_pipeline.is_xl_index(directory)
        return pipeline or super().claims(directory)

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, *, trust_remote_code: bool | None = None, **kwargs
    ) -> LatentDiffusionBackend:
        """Load a saved backend, or a diffusers Stable Diffusion pipeline directory (``model_index.json``).

        Components are read from inside ``directory`` only (or named: an embedded autoencoder, the default
        text encoder, a hub id); ``variant="fp16"`` reads a pipeline folder's ``*.fp16.safetensors``.
        ``trust_remote_code`` lets a text encoder with custom code run it; off by
        default, and that code is never run without it.
        """
        directory = Path(directory)
        variant = kwargs.pop("variant", None)
        if directory.is_dir() and ldm_pipeline.is_pipeline_dir(directory):
            pipe = ldm_pipeline.load_pipeline_dir(directory, trust_remote_code=trust_remote_code, variant=variant)
            return cls.from_pipeline(pipe, **kwargs)
        if variant is not None:
            raise ValueError(f"variant applies to diffusers pipeline folders; {directory} is a latentmix save")
        return super().from_pretrained(directory, trust_remote_code=trust_remote_code, **kwargs)  # type: ignore[return-value]

    @classmethod
    def _load(
        cls, directory: Path, config: dict[str, Any], *, trust_remote_code: bool | None = None, **kwargs
    ) -> LatentDiffusionBackend:
        args, kwargs = ldm_pipeline.load_saved(directory, config, trust_remote_code=trust_remote_code, **kwargs)
        try:
            return cls(*args, **kwargs)
        except TypeError as exc:  # components of the wrong kind: a problem of the directory, not of the code
            raise ValueError(f"{directory}: {exc}") from None
