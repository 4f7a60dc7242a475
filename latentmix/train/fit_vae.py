"""Fit latentmix's :class:`~latentmix.backends.vae.ConvVAE` on a dataset (``latentmix fit vae``).

The loop is accelerate-based and device-agnostic: CPU, one GPU or several processes run the same
code. Randomness comes from ``seed`` only (weights, shuffling, reparameterisation noise). After
training, ``scaling_factor`` is set so that the encoded training set has unit variance per latent
dimension, and the reconstruction error is measured on the held-out split when there is one.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from latentmix.backends.vae import ConvVAE, VAEBackend
from latentmix.configs import VAEFitConfig
from latentmix.data import load_dataset
from latentmix.data.digits import DIGITS_TRAIN_DESCRIPTION
from latentmix.train.cards import model_card
from latentmix.train.common import FitResult, check_finite_loss, random_shift, warn
from latentmix.utils.device import has_accelerator
from latentmix.utils.locks import holds_outputs

__all__ = ["VAEFitConfig", "fit_vae"]


@torch.inference_mode()
def _posterior_means(model: ConvVAE, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    device = next(model.parameters()).device
    return torch.cat(
        [
            model.encode(images[i : i + batch_size].to(device))[0].float().cpu()
            for i in range(0, len(images), batch_size)
        ]
    )


IMAGE_PASSES = 100_000  # default run length: image passes at 32 x 32 (fewer for larger images, more for smaller)
MIN_EPOCHS, MAX_EPOCHS = 20, 300


def resolve(config: VAEFitConfig, count: int, side: int, channels: int) -> VAEFitConfig:
    """The settings a run uses: every "default: from the data" field filled in (recorded in the model card).

    Images up to 16 px (digits) get a flat 16-d latent, blocks 32 64 with 2 convs each; larger images a
    4-channel latent map at 1/4 of the side (blocks 32 64 128, 1 conv each), as latent diffusion wants.
    The run lasts about 100,000 image passes of a 32 x 32 image's cost (at least 20 and at most 300 epochs;
    300 for the digits), and the KL weight warms up over a fifteenth of it.
    """
    small = side <= 16
    latent_channels = config.latent_channels if config.latent_channels is not None else (0 if small else 4)
    blocks = config.block_channels if config.block_channels is not None else ((32, 64) if small else (32, 64, 128))
    layers = config.layers_per_block if config.layers_per_block is not None else (2 if small else 1)
    epochs = config.epochs
    if epochs is None:
        epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(IMAGE_PASSES * (32 / side) ** 2 / max(count, 1))))
    warmup = config.kl_warmup_epochs
    if warmup is None:
        warmup = min(20, max(1, round(epochs / 15)))
    return replace(
        config, image_size=side, channels=channels, latent_channels=latent_channels, block_channels=tuple(blocks),
        layers_per_block=layers, epochs=epochs, kl_warmup_epochs=warmup,
    )  # fmt: skip


def convergence_warnings(config: VAEFitConfig, count: int) -> None:
    """Warn (``FitWarning``) where the settings cannot converge as they are."""
    assert config.epochs is not None and config.kl_warmup_epochs is not None
    if config.kl_warmup_epochs >= config.epochs and config.kl_weight > 0:
        warn(f"the KL warm-up ({config.kl_warmup_epochs} epochs) is as long as the run ({config.epochs} epochs): "
             "the KL weight never reaches kl_weight; lower kl_warmup_epochs")  # fmt: skip
    steps = config.epochs * max(1, count // config.batch_size)
    if config.epochs < MIN_EPOCHS or steps < 200:
        warn(f"{config.epochs} epochs ({steps} steps) over {count} images are few to fit a VAE; "
             f"at least {MIN_EPOCHS} epochs and 200 steps are advised")  # fmt: skip


@holds_outputs(lambda out, **_: [out])
def fit_vae(
    config: VAEFitConfig, out: str | os.PathLike | None = None, *, quiet: bool = False, command: str | None = None
) -> FitResult:
    """Train a ConvVAE; save it to ``out`` if given.

    Args:
        config: a :class:`~latentmix.configs.VAEFitConfig`.
        out: directory to save the backend to (config.json + safetensors + MODEL_CARD.md).
        quiet: hide the progress bar.
        command: the command line recorded in the model card.

    Returns:
        A :class:`~latentmix.train.common.FitResult` (the :class:`VAEBackend`, its metrics, ``out``).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    config.validate()
    train = load_dataset(config.data, split="train", image_size=config.image_size, channels=config.channels)
    if len(train) < 2:
        raise ValueError(f"data {config.data!r} holds {len(train)} image(s); need at least 2 to fit a VAE")
    config = resolve(config, len(train), train.image_size, train.channels)
    convergence_warnings(config, len(train))
    test = None
    if str(config.data) == "digits":
        test = load_dataset("digits", split="test", image_size=train.image_size, channels=train.channels)
    images = train.images(range(len(train)))

    accelerator = Accelerator(cpu=config.cpu or not has_accelerator(), mixed_precision=config.mixed_precision)
    set_seed(config.seed)
    torch.manual_seed(config.seed)
    blocks = config.block_channels
    assert blocks is not None
    factor = 2 ** (len(blocks) - 1)
    if train.image_size % factor:
        raise ValueError(f"image_size {train.image_size} must be divisible by {factor} for {len(blocks)} blocks")
    model = ConvVAE(
        in_channels=train.channels,
        image_size=train.image_size,
        latent_dim=config.latent_dim,
        block_channels=tuple(blocks),
        layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels or None,
    )
    model, stats, train_seconds = _train(config, accelerator, model, images, quiet)
    means = _posterior_means(model, images)
    scaling_factor = float(1.0 / means.std().clamp_min(1e-6))
    backend = VAEBackend(model, scaling_factor=scaling_factor)
    metrics = {
        "train_seconds": round(train_seconds, 1),
        "train_images": len(train),
        "processes": accelerator.num_processes,
        "train_recon_mse": float(backend.reconstruction_error(images).mean()),
        "scaling_factor": scaling_factor,
        "final_kl": stats.get("kl"),
    }
    if test is not None:
        metrics["test_images"] = len(test)
        metrics["test_recon_mse"] = float(backend.reconstruction_error(test.images(range(len(test)))).mean())
    if out is not None and accelerator.is_main_process:
        backend.save_pretrained(out, extra_files={"MODEL_CARD.md": _card(config, metrics, command, accelerator.device)})
    accelerator.wait_for_everyone()
    return FitResult(backend, metrics, None if out is None else Path(out))


def _train(config: VAEFitConfig, accelerator, model: ConvVAE, images: torch.Tensor, quiet: bool):
    """The training loop: returns the unwrapped model (eval mode), the last step's loss terms and the seconds taken."""
    loader_gen = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(TensorDataset(images), batch_size=config.batch_size, shuffle=True, generator=loader_gen,
                        drop_last=len(images) > config.batch_size)  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # accelerate steps a prepared scheduler once per process per call: count single-process steps
    assert config.epochs is not None and config.kl_warmup_epochs is not None
    total = config.epochs * len(loader)

    def cosine(step: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    noise_gen = torch.Generator(device=accelerator.device).manual_seed(config.seed * 1000 + accelerator.process_index)
    start = time.perf_counter()
    bar = tqdm(range(config.epochs), desc="fit vae", disable=quiet or not accelerator.is_local_main_process)
    stats: dict = {}
    step = 0
    for epoch in bar:
        model.train()
        beta = config.kl_weight * min(1.0, (epoch + 1) / max(1, config.kl_warmup_epochs))
        for (x,) in loader:
            x = random_shift(x, config.augment_shift, noise_gen)
            with accelerator.autocast():
                loss, stats = _vae_loss(model, x, beta, config.pixel_sigma, noise_gen)
            check_finite_loss(loss, step)
            step += 1
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            scheduler.step()
        bar.set_postfix(loss=f"{float(loss.detach()):.2f}", mse=f"{stats['mse']:.4f}", kl=f"{stats['kl']:.1f}")
    seconds = time.perf_counter() - start
    accelerator.wait_for_everyone()
    return accelerator.unwrap_model(model).float().eval(), stats, seconds


def _vae_loss(model, x, beta: float, sigma: float, generator) -> tuple[torch.Tensor, dict]:
    """Negative ELBO per image: SSE / (2 sigma^2) + beta * KL(q(z|x) || N(0, I))."""
    recon, mean, logvar = model(x, generator=generator)
    sse = (recon.float() - x.float()).pow(2).flatten(1).sum(dim=1)
    kl = 0.5 * (mean.float().pow(2) + logvar.float().exp() - 1.0 - logvar.float()).flatten(1).sum(dim=1)
    loss = (sse / (2 * sigma**2) + beta * kl).mean()
    return loss, {"mse": float(sse.detach().mean()) / x[0].numel(), "kl": float(kl.detach().mean())}


def _card(config: VAEFitConfig, metrics: dict, command: str | None, device) -> str:
    data = DIGITS_TRAIN_DESCRIPTION if config.data == "digits" else f"`{config.data}` (its train split)"
    return model_card(
        title="ConvVAE backend",
        command=command,
        default_command="latentmix fit vae (Python API)",
        description=f"A convolutional VAE with a Gaussian latent, fitted on {data}. The settings below are the ones "
        "the run used (defaults resolved from the data).",
        metrics=metrics,
        notes=("Reconstruction MSE is per pixel on the [-1, 1] scale, encoding with the posterior mean.",),
        settings=config,
        device=device,
    )
