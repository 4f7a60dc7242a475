"""Fit the GAN backend (``latentmix fit gan``): the GAN phase, then the inversion-encoder phase.

GAN phase: hinge loss, spectral norm in the discriminator, Adam(β = 0, 0.9), an exponential moving
average of the generator weights (the one saved and sampled from; warmed up as diffusers' ``EMAModel``
does, so a short run saves trained weights). Encoder phase: the generator and discriminator are frozen
and the encoder learns ``E(G(z)) ≈ z`` on generated images and ``G(E(x)) ≈ x`` (pixels and
discriminator features) on real ones.

accelerate runs the loop as documented: the networks and optimisers are ``prepare``d (DDP across
processes), the real images come from a prepared loader whose **global** batch of ``batch_size`` is
split between the processes (``split_batches``), and the shuffle is seeded per epoch, so every process
trains the same model on its share of each batch.

Training state goes to ``<out>.train/`` (:mod:`latentmix.train.checkpoint`, one file) every
``checkpoint_every`` epochs, with a grid of samples from fixed latents; running the same command again
resumes from it. Randomness is re-derived from (seed, phase, epoch, process), so a resumed run continues
exactly as an uninterrupted one would.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from latentmix.backends.gan import Discriminator, GANBackend, Generator, InversionEncoder
from latentmix.configs import GANFitConfig
from latentmix.data import load_dataset
from latentmix.data.digits import DIGITS_TRAIN_DESCRIPTION
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
    random_shift,
    split_batch_accelerator,
    warn,
)
from latentmix.utils.locks import holds_outputs
from latentmix.utils.viz import grid_image, save_png

__all__ = ["GANFitConfig", "fit_gan"]


@dataclass
class _Nets:
    G: torch.nn.Module  # Generator (DDP-wrapped once prepared)
    D: torch.nn.Module  # Discriminator
    E: torch.nn.Module  # InversionEncoder
    G_ema: Generator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    opt_e: torch.optim.Optimizer

    def modules(self, unwrap) -> dict[str, torch.nn.Module]:
        return {"G": unwrap(self.G), "D": unwrap(self.D), "E": unwrap(self.E), "G_ema": self.G_ema}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"g": self.opt_g, "d": self.opt_d, "e": self.opt_e}


def _build(config: GANFitConfig, channels: int, size: int) -> _Nets:
    torch.manual_seed(config.seed)
    G = Generator(config.latent_dim, channels, size, config.width)
    D = Discriminator(channels, size, config.width)
    E = InversionEncoder(config.latent_dim, channels, size, config.width)
    betas = (0.0, 0.9)
    return _Nets(
        G, D, E, copy.deepcopy(G).eval(),
        torch.optim.Adam(G.parameters(), lr=config.lr, betas=betas),
        torch.optim.Adam(D.parameters(), lr=config.lr, betas=betas),
        torch.optim.Adam(E.parameters(), lr=1e-3),
    )  # fmt: skip


def convergence_warnings(config: GANFitConfig, count: int) -> None:
    """Warn (``FitWarning``) where the settings cannot converge as they are."""
    steps = config.epochs * max(1, count // config.batch_size)
    if config.epochs < 50 or steps < 1000:
        warn(f"{config.epochs} GAN epochs ({steps} steps) are few for a generator to converge "
             "(at least 50 epochs and 1,000 steps are advised)")  # fmt: skip
    share = initial_weight_share(steps, config.ema_decay, config.ema_warmup)
    if share > 0.1:
        warn(f"the saved generator (an EMA) would still be {100 * share:.0f} % its random initial weights after "
             f"{steps} steps; keep --ema-warmup on or lower --ema-decay")  # fmt: skip


@holds_outputs(lambda out, **_: [out])
def fit_gan(
    config: GANFitConfig, out: str | os.PathLike, *, quiet: bool = False, command: str | None = None
) -> FitResult:
    """Train (or resume training) a GAN with its inversion encoder; save the backend to ``out``."""
    config.validate()
    out = Path(out)
    train_dir = Path(f"{out}.train")
    accelerator = split_batch_accelerator(config.batch_size, config.seed, config.cpu)
    ckpt = load_checkpoint(train_dir, config)
    train = load_dataset(config.data, split="train", image_size=config.image_size, channels=config.channels)
    size, ch = train.image_size, train.channels
    images = train.images(range(len(train)))
    if len(images) < config.batch_size:
        raise ValueError(
            f"data {config.data!r} has {len(images)} training images, fewer than batch_size={config.batch_size}"
        )
    convergence_warnings(config, len(images))
    nets = _build(config, ch, size)
    phase, start_epoch = "gan", 0
    if ckpt is not None:
        for name, module in nets.modules(lambda m: m).items():
            load_module(module, ckpt.tensors, name)
        for name, opt in nets.optimizers().items():
            load_optimizer(opt, ckpt.tensors, f"opt_{name}")
        phase, start_epoch = ckpt.progress["phase"], ckpt.progress["epoch"]
    loader = DataLoader(TensorDataset(images), batch_size=config.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(config.seed))  # fmt: skip
    nets.G, nets.D, nets.E, nets.opt_g, nets.opt_d, nets.opt_e, loader = accelerator.prepare(
        nets.G, nets.D, nets.E, nets.opt_g, nets.opt_d, nets.opt_e, loader
    )
    device = accelerator.device
    nets.G_ema.to(device)
    run = _Run(config, accelerator, nets, loader, train_dir, ch, size, quiet)
    started = time.perf_counter()
    if phase == "gan":
        run.gan_phase(start_epoch)
        phase, start_epoch = "encoder", 0
    if phase == "encoder":
        run.encoder_phase(start_epoch)
    accelerator.wait_for_everyone()

    D, E = accelerator.unwrap_model(nets.D), accelerator.unwrap_model(nets.E)
    backend = GANBackend(nets.G_ema.cpu().float(), D.cpu().float(), E.cpu().float().eval())
    metrics = {
        "train_seconds_this_run": round(time.perf_counter() - started, 1),
        "train_images": len(train),
        "processes": accelerator.num_processes,
        "steps_per_epoch": len(loader),
        "batch_per_process": run.local_batch,
    }
    if accelerator.is_main_process:
        if str(config.data) == "digits":
            metrics.update(_digits_metrics(backend))
        backend.save_pretrained(out, extra_files={"MODEL_CARD.md": _card(config, metrics, command)})
    accelerator.wait_for_everyone()
    return FitResult(backend, metrics, out)


class _Run:
    """The two training phases over prepared networks; checkpoints every ``checkpoint_every`` epochs."""

    def __init__(
        self, config: GANFitConfig, accelerator, nets: _Nets, loader, train_dir: Path, ch: int, size: int, quiet: bool
    ):
        self.config, self.accelerator, self.nets, self.loader = config, accelerator, nets, loader
        self.train_dir, self.ch, self.size = train_dir, ch, size
        self.local_batch = 0  # real images per step on this process (the global batch split across processes)
        self.quiet = quiet or not accelerator.is_local_main_process
        gen = torch.Generator().manual_seed(config.seed + 99)
        self.fixed_z = torch.randn(32, config.latent_dim, generator=gen).to(accelerator.device)

    def batches(self, epoch: int, phase_id: int):
        """This process's share of each global batch, shifted, with latents drawn from (seed, phase, epoch, rank)."""
        config, acc = self.config, self.accelerator
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + phase_id * 10_007 + epoch + 7 * acc.process_index)
        self.loader.set_epoch(epoch)
        for (x,) in self.loader:
            self.local_batch = len(x)
            x = random_shift(x, config.augment_shift, gen)
            yield x, torch.randn(len(x), config.latent_dim, generator=gen).to(acc.device)

    def checkpoint(self, phase_name: str, epoch: int) -> None:
        if not self.accelerator.is_main_process:
            return
        nets = self.nets
        tensors = {}
        for name, module in nets.modules(self.accelerator.unwrap_model).items():
            tensors.update(module_tensors(name, module))
        for name, opt in nets.optimizers().items():
            tensors.update(optimizer_tensors(opt, f"opt_{name}"))
        save_checkpoint(self.train_dir, self.config, tensors, {"phase": phase_name, "epoch": epoch})
        (self.train_dir / "samples").mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            samples = nets.G_ema(self.fixed_z).cpu().reshape(4, 8, self.ch, self.size, self.size)
        save_png(grid_image(samples), self.train_dir / "samples" / f"{phase_name}-epoch-{epoch:04d}.png")

    def gan_phase(self, start_epoch: int) -> None:
        config, acc, nets = self.config, self.accelerator, self.nets
        G, D = nets.G, nets.D
        per_epoch = len(self.loader)
        bar = tqdm(range(start_epoch, config.epochs), desc="fit gan", disable=self.quiet)
        for epoch in bar:
            G.train(), D.train()
            for i, (x, z) in enumerate(self.batches(epoch, 0)):
                step = epoch * per_epoch + i
                with torch.no_grad():
                    fake = G(z)
                scores = D(torch.cat([x, fake]))
                loss_d = torch.relu(1 - scores[: len(x)]).mean() + torch.relu(1 + scores[len(x) :]).mean()
                check_finite_loss(loss_d, step, self.train_dir, "discriminator loss")
                nets.opt_d.zero_grad(set_to_none=True)
                acc.backward(loss_d)
                nets.opt_d.step()
                loss_g = -D(G(z)).mean()
                check_finite_loss(loss_g, step, self.train_dir, "generator loss")
                nets.opt_g.zero_grad(set_to_none=True)
                acc.backward(loss_g)
                nets.opt_g.step()
                ema_update(nets.G_ema, acc.unwrap_model(G), ema_decay(step, config.ema_decay, config.ema_warmup))
            bar.set_postfix(d=f"{float(loss_d.detach()):.3f}", g=f"{float(loss_g.detach()):.3f}")
            done = epoch + 1 == config.epochs
            if (epoch + 1) % config.checkpoint_every == 0 or done:
                self.checkpoint("encoder" if done else "gan", 0 if done else epoch + 1)

    def encoder_phase(self, start_epoch: int) -> None:
        config, acc, nets = self.config, self.accelerator, self.nets
        G_ema, D, E = nets.G_ema.eval(), acc.unwrap_model(nets.D).eval(), nets.E
        for p in list(G_ema.parameters()) + list(D.parameters()):
            p.requires_grad_(False)
        per_epoch = len(self.loader)
        bar = tqdm(range(start_epoch, config.encoder_epochs), desc="fit encoder", disable=self.quiet)
        for epoch in bar:
            E.train()
            for i, (x, z) in enumerate(self.batches(epoch, 1)):
                with torch.no_grad():
                    fake = G_ema(z)
                guess_fake, guess_real = E(torch.cat([fake, x])).split([len(fake), len(x)])
                latent_loss = (guess_fake - z).pow(2).mean()
                recon = G_ema(guess_real)
                pixel_loss = (recon - x).pow(2).mean()
                feature_loss = (D.features(recon) - D.features(x)).pow(2).mean()
                loss = latent_loss + config.pixel_weight * pixel_loss + config.feature_weight * feature_loss
                check_finite_loss(loss, epoch * per_epoch + i, self.train_dir, "encoder loss")
                nets.opt_e.zero_grad(set_to_none=True)
                acc.backward(loss)
                nets.opt_e.step()
            bar.set_postfix(latent=f"{float(latent_loss.detach()):.3f}", pixel=f"{float(pixel_loss.detach()):.4f}")
            done = epoch + 1 == config.encoder_epochs
            if (epoch + 1) % config.checkpoint_every == 0 or done:
                self.checkpoint("done" if done else "encoder", epoch + 1)


def _digits_metrics(backend: GANBackend) -> dict:
    """Reconstruction error of the digits test split: encoder only, and refined by 200 steps."""
    from latentmix.data import DigitsDataset

    test = DigitsDataset("test")
    x_test = test.images(range(len(test)))
    with torch.inference_mode():
        encoder_only = float((backend.decode(backend.encode(x_test)) - x_test).pow(2).mean())
    z = backend.encode(x_test, refine_steps=200)
    with torch.inference_mode():
        refined = float((backend.decode(z) - x_test).pow(2).mean())
    return {"test_recon_mse_encoder": encoder_only, "test_recon_mse_refined_200": refined}


def _card(config: GANFitConfig, metrics: dict, command: str | None) -> str:
    data = DIGITS_TRAIN_DESCRIPTION if config.data == "digits" else f"`{config.data}` (its train split)"
    return model_card(
        title="GAN backend",
        command=command,
        default_command="latentmix fit gan (Python API)",
        description=(
            f"Generator (EMA weights), spectral-norm discriminator and inversion encoder, fitted on {data}. "
            "Samples from fixed latents during training are in `<out>.train/samples/` of the run (not shipped)."
        ),
        metrics=metrics,
        notes=(
            "Reconstruction MSE is per pixel on the [-1, 1] scale; refined = 200 batched Adam steps from the "
            "encoder's guess. `latentmix evaluate --backend digits-gan` gives the full quality report (BENCHMARKS.md).",
        ),
        settings=config,
    )
