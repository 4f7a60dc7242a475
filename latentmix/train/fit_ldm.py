"""Fit the denoising UNet of a latent-diffusion backend (``latentmix fit ldm``).

The autoencoder (the embedded digits VAE by default) and the text encoder (MiniLM by default) stay
frozen and are *referenced* by the saved backend, not copied. The training images are encoded **once**:
the autoencoder's posterior means and standard deviations are cached (:meth:`encode_distribution`), and
every step draws a fresh posterior sample from them (as Stable Diffusion trains on
``latent_dist.sample()``); the captions' hidden states come from a per-caption cache. The UNet learns to
predict the noise added at a random timestep (ε-prediction, the scheduler's ``add_noise``). A fraction
``cond_dropout`` of captions is replaced by the empty text, so the same network is the unconditional
model of classifier-free guidance. An exponential moving average of the weights (warmed up as diffusers'
``EMAModel`` does) is what gets saved.

The loop is accelerate-based as documented: the UNet and optimiser are ``prepare``d (DDP across processes,
mixed precision), and the examples come from a prepared loader whose **global** batch is split between the
processes, shuffled with a per-epoch seed. Training state goes to ``<out>.train/`` (one file) every
``checkpoint_every`` steps; running the same command again resumes from it — mid-epoch too, by skipping the
batches already seen — and continues exactly as an uninterrupted run would.
"""

from __future__ import annotations

import copy
import math
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch
from diffusers import DDIMScheduler, UNet2DConditionModel
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from latentmix.backends import LatentBackend, LatentDiffusionBackend, load_backend
from latentmix.configs import LDMFitConfig
from latentmix.data import digits_prompt, load_matching
from latentmix.data.digits import DIGITS_TRAIN_DESCRIPTION
from latentmix.data.text import TextEncoder
from latentmix.train.cards import model_card
from latentmix.train.checkpoint import (
    load_checkpoint,
    load_module,
    load_optimizer,
    module_tensors,
    optimizer_tensors,
    save_checkpoint,
)
from latentmix.train.common import (
    FitResult,
    check_finite_loss,
    ema_decay,
    ema_update,
    initial_weight_share,
    split_batch_accelerator,
    warn,
)
from latentmix.utils.locks import holds_outputs

__all__ = ["LDMFitConfig", "build_scheduler", "build_unet", "fit_ldm"]
WARMUP_STEPS = 200  # linear learning-rate warm-up before the cosine decay


def unet_shape(config: LDMFitConfig, latent_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(channels, s, s) the UNet denoises: a spatial autoencoder latent as it is, a flat one reshaped to
    ``latent_channels`` square maps."""
    if len(latent_shape) == 3 and latent_shape[1] == latent_shape[2]:
        return (int(latent_shape[0]), int(latent_shape[1]), int(latent_shape[2]))
    numel = math.prod(latent_shape)
    side = math.isqrt(max(numel // config.latent_channels, 1))
    if config.latent_channels * side * side != numel:
        raise ValueError(
            f"latent_channels: the autoencoder's {numel} latent values do not form "
            f"{config.latent_channels} square maps; choose a channel count c with {numel}/c a square"
        )
    return (config.latent_channels, side, side)


def build_unet(config: LDMFitConfig, latent_shape: tuple[int, ...], text_dim: int) -> UNet2DConditionModel:
    """A UNet2DConditionModel over the autoencoder's latents (see :func:`unet_shape`), cross-attending to text."""
    channels, side, _ = unet_shape(config, latent_shape)
    assert config.block_channels is not None, "resolve the config first"
    n = len(config.block_channels)
    return UNet2DConditionModel(
        sample_size=side,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=tuple(config.block_channels),
        layers_per_block=config.layers_per_block,
        down_block_types=("CrossAttnDownBlock2D",) * n,
        up_block_types=("CrossAttnUpBlock2D",) * n,
        cross_attention_dim=config.cross_attention_dim,
        encoder_hid_dim=text_dim,
        encoder_hid_dim_type="text_proj",
        attention_head_dim=config.attention_head_dim,
        norm_num_groups=8,
    )


def build_scheduler(config: LDMFitConfig) -> DDIMScheduler:
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule=config.beta_schedule,
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )


DEFAULT_AUTOENCODERS = {"digits": "digits-vae", "shapes": "shapes-vae"}


def autoencoder_name(config: LDMFitConfig) -> str:
    """The autoencoder to fit on: the one given, or the embedded VAE of the digits / shapes — never a model of
    other data."""
    from latentmix.backends import embedded_models

    if config.autoencoder is not None:
        return config.autoencoder
    default = DEFAULT_AUTOENCODERS.get(str(config.data))
    if default is not None and default in embedded_models():
        return default
    raise ValueError(
        f"autoencoder: fit ldm --data {config.data} needs an autoencoder fitted on that data: first "
        f"`latentmix fit vae --data {config.data} --out my-vae`, then pass --autoencoder my-vae"
    )


def _load_parts(config: LDMFitConfig) -> tuple[LatentBackend, TextEncoder]:
    name = autoencoder_name(config)
    autoencoder = load_backend(name)
    if autoencoder.supports_text_condition or autoencoder.encoder_kind != "amortized":
        raise ValueError(
            f"autoencoder: {name!r} is a {autoencoder.backend_name} backend; a latent-diffusion model "
            "needs an autoencoder (a VAE, AutoencoderKL, AutoencoderTiny or VQModel)"
        )
    text_encoder = TextEncoder.from_pretrained(config.text_encoder, device="cpu")
    text_encoder.max_length = config.text_max_length
    return autoencoder, text_encoder


class _Examples:
    """The training set on the device: cached posterior moments, caption rows, and the caption hidden states."""

    def __init__(
        self, config: LDMFitConfig, autoencoder: LatentBackend, text_encoder: TextEncoder, device, quiet: bool
    ):
        name = autoencoder_name(config)
        train = load_matching(
            config.data, "train", autoencoder.image_size, autoencoder.image_channels, resize=config.resize,
            who=f"autoencoder {name!r}", fix=f"fit one on this data (latentmix fit vae --data {config.data} ...)",
        )  # fmt: skip
        if len(train) < 2:
            raise ValueError(f"data {config.data!r} holds {len(train)} training image(s); need at least 2")
        self.count = len(train)
        with torch.inference_mode(), autoencoder.progress(not quiet):
            mean, std = autoencoder.encode_distribution(train.images(range(len(train))))
        self.latent_shape = tuple(autoencoder.latent_shape)
        self.shape = unet_shape(config, self.latent_shape)
        self.mean = mean.float().reshape(len(train), *self.shape).to(device)
        self.std = None if std is None else std.float().reshape(len(train), *self.shape).to(device)
        captions = [*sorted(set(train.texts)), ""]
        hidden, _ = text_encoder.hidden_states(captions, pad_to_max_length=True)
        self.hidden = hidden.float().to(device)  # (captions + 1, L, D); the last row is ""
        row_of = {c: i for i, c in enumerate(captions)}
        self.caption_index = torch.tensor([row_of[t] for t in train.texts], device=device)
        self.empty = len(captions) - 1

    def latents(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """A fresh posterior sample of the latents of examples ``idx`` (the means for deterministic encoders)."""
        if self.std is None:
            return self.mean[idx]
        eps = torch.randn(self.mean[idx].shape, generator=gen).to(self.mean.device)
        return self.mean[idx] + self.std[idx] * eps


class _UNetRun:
    """The UNet, its EMA, optimiser and prepared loader of one run; ``train`` runs the remaining steps."""

    def __init__(self, config: LDMFitConfig, accelerator, examples: _Examples, text_dim: int, ckpt, train_dir: Path):
        self.config, self.accelerator, self.examples, self.train_dir = config, accelerator, examples, train_dir
        torch.manual_seed(config.seed)
        unet = build_unet(config, examples.latent_shape, text_dim)
        self.scheduler = build_scheduler(config)
        self.ema = copy.deepcopy(unet).eval().requires_grad_(False)
        optimizer = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.step = 0
        if ckpt is not None:
            load_module(unet, ckpt.tensors, "unet")
            load_module(self.ema, ckpt.tensors, "ema")
            load_optimizer(optimizer, ckpt.tensors, "opt")
            self.step = int(ckpt.progress["step"])
        assert config.steps is not None and config.batch_size is not None, "resolve the config first"
        self.total = config.steps
        self.batch = min(config.batch_size, examples.count - examples.count % accelerator.num_processes)
        loader = DataLoader(TensorDataset(torch.arange(examples.count)), batch_size=self.batch, shuffle=True,
                            drop_last=True, generator=torch.Generator().manual_seed(config.seed))  # fmt: skip
        self.unet, self.optimizer, self.loader = accelerator.prepare(unet, optimizer, loader)
        self.ema.to(accelerator.device)
        self.losses: list[float] = []

    def train(self, show: bool) -> None:
        config, acc = self.config, self.accelerator
        per_epoch = len(self.loader)
        bar = tqdm(total=self.total, initial=self.step, desc="fit ldm", disable=not show)
        while self.step < self.total:
            epoch, skip = divmod(self.step, per_epoch)
            self.loader.set_epoch(epoch)  # the shuffle of an epoch depends on (seed, epoch) only
            for (idx,) in acc.skip_first_batches(self.loader, skip) if skip else self.loader:
                if self.step >= self.total:
                    break
                self.losses.append(self._step(idx))
                self.step += 1
                bar.update()
                if self.step % 50 == 0:
                    bar.set_postfix(loss=f"{sum(self.losses[-50:]) / len(self.losses[-50:]):.4f}")
                if (self.step % config.checkpoint_every == 0 or self.step == self.total) and acc.is_main_process:
                    self._save()
        bar.close()

    def _step(self, idx: torch.Tensor) -> float:
        """One optimisation step on examples ``idx``; its randomness depends on (seed, step, process) only."""
        config, acc, ex, step = self.config, self.accelerator, self.examples, self.step
        device = acc.device
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + 7_919 * (step + 1) + acc.process_index)
        z0 = ex.latents(idx, gen)
        noise = torch.randn(z0.shape, generator=gen).to(device)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (len(idx),), generator=gen).to(device)
        drop = torch.rand(len(idx), generator=gen).to(device) < config.cond_dropout
        cond = ex.hidden[torch.where(drop, ex.empty, ex.caption_index[idx])]
        x_t = self.scheduler.add_noise(z0, noise, t)
        warm = min(1.0, (step + 1) / WARMUP_STEPS)
        for group in self.optimizer.param_groups:
            group["lr"] = config.lr * warm * 0.5 * (1 + math.cos(math.pi * step / self.total))
        with acc.autocast():
            loss = (self.unet(x_t, t, encoder_hidden_states=cond).sample.float() - noise).pow(2).mean()
        check_finite_loss(loss, step, self.train_dir)
        self.optimizer.zero_grad(set_to_none=True)
        acc.backward(loss)
        acc.clip_grad_norm_(self.unet.parameters(), 1.0)
        self.optimizer.step()
        ema_update(self.ema, acc.unwrap_model(self.unet), ema_decay(step, config.ema_decay, config.ema_warmup))
        return float(loss.detach())

    def _save(self) -> None:
        tensors = {
            **module_tensors("unet", self.accelerator.unwrap_model(self.unet)),
            **module_tensors("ema", self.ema),
        }
        tensors.update(optimizer_tensors(self.optimizer, "opt"))
        save_checkpoint(self.train_dir, self.config, tensors, {"step": self.step})


def resolve(config: LDMFitConfig, latent_shape: tuple[int, ...]) -> LDMFitConfig:
    """The settings a run uses, with the defaults that depend on the autoencoder filled in: a tiny latent map
    (up to 4 x 4, the digits VAE's) gets one UNet level of 64 channels and 8,000 steps of 256; a larger map two
    levels (32, 64) and 1,500 steps of 128 — about 15 minutes on 2 CPU cores for an 8 x 8 map."""
    side = unet_shape(config, latent_shape)[1]
    tiny = side <= 4
    return replace(
        config,
        block_channels=config.block_channels or ((64,) if tiny else (32, 64)),
        steps=config.steps or (8000 if tiny else 1500),
        batch_size=config.batch_size or (256 if tiny else 128),
    )


def convergence_warnings(config: LDMFitConfig, count: int) -> None:
    """Warn (``FitWarning``) where the settings cannot converge as they are."""
    assert config.steps is not None and config.batch_size is not None
    if config.steps <= WARMUP_STEPS:
        warn(f"the learning-rate warm-up ({WARMUP_STEPS} steps) is as long as the run ({config.steps} steps)")
    passes = config.steps * min(config.batch_size, count) / max(count, 1)
    if passes < 50:
        warn(f"{config.steps} steps of {config.batch_size} are {passes:.0f} passes over {count} images: too few "
             "for a denoiser to learn its captions (at least 50 are advised)")  # fmt: skip
    share = initial_weight_share(config.steps, config.ema_decay, config.ema_warmup)
    if share > 0.1:
        warn(f"the saved EMA weights would still be {100 * share:.0f} % the random initial ones after "
             f"{config.steps} steps; keep --ema-warmup on or lower --ema-decay")  # fmt: skip


@holds_outputs(lambda out, **_: [out])
def fit_ldm(
    config: LDMFitConfig, out: str | os.PathLike, *, quiet: bool = False, command: str | None = None
) -> FitResult:
    """Train (or resume training) the UNet of a latent-diffusion backend; save the backend to ``out``."""
    config.validate()
    out = Path(out)
    train_dir = Path(f"{out}.train")
    autoencoder, text_encoder = _load_parts(config)
    config = resolve(config, tuple(autoencoder.latent_shape))
    assert config.batch_size is not None
    accelerator = split_batch_accelerator(config.batch_size, config.seed, config.cpu, config.mixed_precision)
    ckpt = load_checkpoint(train_dir, config)
    autoencoder.to(accelerator.device)
    show = not quiet and accelerator.is_local_main_process
    examples = _Examples(config, autoencoder, text_encoder, accelerator.device, quiet=not show)
    convergence_warnings(config, examples.count)
    run = _UNetRun(config, accelerator, examples, text_encoder.embedding_dim, ckpt, train_dir)
    started = time.perf_counter()
    run.train(show)
    accelerator.wait_for_everyone()

    autoencoder.to("cpu")
    backend = LatentDiffusionBackend(
        autoencoder,
        run.ema.cpu().float(),
        run.scheduler,
        text_encoder,
        num_inference_steps=config.num_inference_steps,
        guidance_scale=config.guidance_scale,
        text_max_length=config.text_max_length,
        autoencoder_ref=None if Path(autoencoder_name(config)).is_dir() else autoencoder_name(config),
        text_encoder_ref=None if Path(config.text_encoder).is_dir() else config.text_encoder,
    )
    last = run.losses[-200:]
    metrics = {
        "train_seconds_this_run": round(time.perf_counter() - started, 1),
        "train_images": examples.count,
        "final_loss_mean_last_200": round(sum(last) / len(last), 5) if last else None,
        "unet_parameters": sum(p.numel() for p in backend.unet.parameters()),
        "processes": accelerator.num_processes,
        "global_batch": run.batch,
        "device": f"{accelerator.device.type} ({platform.machine()})",
    }
    if str(config.data) == "digits" and config.evaluate and accelerator.is_main_process:
        metrics.update(digits_metrics(backend))
    if accelerator.is_main_process:
        backend.save_pretrained(out, extra_files={"MODEL_CARD.md": _card(config, metrics, command)})
    accelerator.wait_for_everyone()
    return FitResult(backend, metrics, out)


def digits_metrics(backend: LatentDiffusionBackend) -> dict:
    """Round trip of the digits test split (50 DDIM steps, the saved guidance) against the autoencoder's own,
    and the reference classifier's agreement with samples generated from the digits prompt of each class."""
    from latentmix.classifiers.reference import load_reference_classifier
    from latentmix.data import DigitsDataset

    test = DigitsDataset("test")
    x = test.images(range(len(test)))
    with torch.inference_mode():
        ae = float(backend.autoencoder.reconstruction_error(x).mean())
        ldm = float(backend.reconstruction_error(x, texts=test.texts, num_inference_steps=50).mean())
        clf = load_reference_classifier()
        gen = torch.Generator().manual_seed(0)
        labels = torch.arange(10).repeat_interleave(50)
        noise = backend.sample(len(labels), generator=gen)
        images = backend.decode(noise, texts=[digits_prompt(c) for c in labels.tolist()])
        agree = float((clf(images.float()).argmax(1) == labels).float().mean())
    return {
        "test_recon_mse_autoencoder": round(ae, 5),
        "test_recon_mse_ddim_50": round(ldm, 5),
        "text_conditional_consistency": round(agree, 4),
    }


def _card(config: LDMFitConfig, metrics: dict, command: str | None) -> str:
    data = DIGITS_TRAIN_DESCRIPTION if config.data == "digits" else f"`{config.data}` (its train split)"
    return model_card(
        title="Latent-diffusion backend",
        command=command,
        default_command="latentmix fit ldm (Python API)",
        description=(
            "A text-conditioned UNet2DConditionModel (EMA weights) and a DDIM scheduler over the latents of "
            f"`{autoencoder_name(config)}`, conditioned on `{config.text_encoder}` hidden states (both referenced, not "
            f"copied), fitted on {data} with its captions."
        ),
        metrics=metrics,
        notes=(
            "Reconstruction MSE is per pixel on the [-1, 1] scale: DDIM inversion then DDIM sampling, 50 steps each, "
            "against the autoencoder's own encode → decode. Text-conditional consistency: the reference classifier's "
            'agreement with 50 samples per class generated from "a handwritten digit {c}".',
        )
        if "test_recon_mse_ddim_50" in metrics
        else (),
        settings=config,
    )
