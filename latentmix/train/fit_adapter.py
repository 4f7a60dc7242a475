"""Adapt a pretrained text-conditioned diffusion backend to the user's few labelled images (``latentmix fit lora``,
``latentmix fit textual-inversion``).

The recipe of DA-Fusion (textual inversion: one new token per class) and Diff-Mix (DreamBooth-LoRA + textual
inversion): each training image is captioned by the prompt template with its class's token (``"a photo of a
<cat>"``), and the denoiser learns to predict the noise added to its latents at a random timestep (the
ε-prediction loss the backend was trained with). Only the new parameters learn:

* one vector per class token, put in place of the token's row of the (frozen) input embeddings, so no existing
  word changes meaning; a token starts as the mean embedding of its class name's word pieces;
* with ``fit lora``, peft LoRA of rank r on the UNet's attention projections (``to_q``, ``to_k``, ``to_v``,
  ``to_out.0``) — and, with ``--text-encoder-lora``, the text encoders' — while every base weight stays frozen.

SDXL has two text encoders: a token learns one vector in each, the LoRA covers both, and the UNet is conditioned
as the backend samples (both encoders' penultimate states, the pooled embedding, the size ids).

The images are encoded once (the autoencoder's posterior moments; a fresh posterior sample per step). Each step's
randomness depends on (seed, step, process) only, so a run is deterministic by seed; accelerate splits each global
batch between processes. The new parameters and the optimiser's state go to ``<out>.train/`` (one file) every
``checkpoint_every`` steps; the same command again resumes from there — mid-epoch too — and ends as an
uninterrupted run would. The output directory holds what diffusers and the community tools read:

* ``pytorch_lora_weights.safetensors`` (``fit lora``): diffusers' LoRA format with its adapter metadata —
  ``StableDiffusionPipeline.load_lora_weights(DIR)`` loads it, as does ``latentmix synthesize --lora DIR``;
* ``learned_embeds/<class>.safetensors``: one diffusers textual-inversion file per class token
  (``load_textual_inversion``, ``--textual-inversion``); for SDXL ``{"clip_l", "clip_g"}`` with the token in the
  file's metadata;
* ``prompts.json``: each class's prompt (for ``synthesize --prompts``), ``config.json``, ``MODEL_CARD.md``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from latentmix.backends import LatentBackend, load_backend
from latentmix.backends.adapters import XL_PARTS, append_tokens, new_tokens
from latentmix.backends.lora import WEIGHT_NAME
from latentmix.configs.adapters import TOKEN_PATTERN, LoRAFitConfig, TextualInversionFitConfig
from latentmix.data import Subset, load_matching
from latentmix.data.base import labelled_subset
from latentmix.data.text import TextEncoder
from latentmix.train.cards import model_card
from latentmix.train.checkpoint import (
    Checkpoint,
    load_checkpoint,
    load_optimizer,
    load_rng,
    optimizer_tensors,
    rng_tensors,
    save_checkpoint,
)
from latentmix.train.common import FitResult, check_finite_loss, split_batch_accelerator
from latentmix.utils.atomic import atomic_directory, atomic_save_safetensors
from latentmix.utils.locks import holds_outputs

__all__ = ["UNET_TARGETS", "AdapterRun", "adapter_dataset", "class_tokens", "fit_adapter"]
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
#: the attention projections of the text encoders latentmix meets (CLIP; BERT / MiniLM)
TEXT_TARGETS = {"q_proj": ("q_proj", "k_proj", "v_proj", "out_proj"), "query": ("query", "key", "value")}
MARKER = "latentmix_adapter"
EMBEDS = "learned_embeds"


def slug(name: str) -> str:
    """A class name as it appears in a token and a file name (lower case, runs of other characters → ``-``)."""
    return re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-") or "class"


def class_tokens(class_names: list[str]) -> dict[str, str]:
    """``{class name: token}`` (``<slug>``; a slug two classes share gets the class index appended)."""
    slugs = [slug(c) for c in class_names]
    return {c: TOKEN_PATTERN.format(slug=s if slugs.count(s) == 1 else f"{s}-{i}")
            for i, (c, s) in enumerate(zip(class_names, slugs, strict=True))}  # fmt: skip


def _diffusion_parts(backend: LatentBackend, name: str) -> tuple[Any, dict[str, TextEncoder]]:
    """The UNet and the text encoders (by part name: ``text_encoder``, SDXL's ``text_encoder_2``) of a backend that
    fit lora / textual-inversion can adapt."""
    unet, text = getattr(backend, "unet", None), getattr(backend, "text_encoder", None)
    if not backend.supports_text_condition or unet is None or text is None or not hasattr(backend, "scheduler"):
        raise ValueError(f"backend: {name!r} is a {backend.backend_name} backend; fit lora / textual-inversion "
                         "adapt a text-conditioned diffusion backend (a UNet and a text encoder)")  # fmt: skip
    encoders = backend.text_encoders() if hasattr(backend, "text_encoders") else {"text_encoder": text}
    return unet, encoders


def _targets(model: nn.Module, names: tuple[str, ...]) -> list[str]:
    return sorted({n.split(".")[-1] if not n.endswith("out.0") else "to_out.0"
                   for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.endswith(names)})  # fmt: skip


def _text_targets(model: nn.Module) -> tuple[str, ...]:
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    for key, targets in TEXT_TARGETS.items():
        if key in names:
            return targets
    raise ValueError(f"text_encoder_lora: {type(model).__name__} has none of the attention projections latentmix "
                     "adapts (q_proj / query)")  # fmt: skip


class _Tokens:
    """The learned class tokens of one text encoder: added to its tokenizer, their vectors one small (C, D) parameter
    that a forward hook puts in place of the tokens' rows of the input embeddings (which stay frozen, as every other
    row: no existing word changes meaning, and AdamW updates C·D numbers, not the whole vocabulary). ``shared``: the
    tokenizer is one an earlier encoder's tokens were already added to."""

    def __init__(self, text_encoder, tokens: dict[str, str], device, shared: bool = False):
        tokenizer = text_encoder.tokenizer
        words = {c: tokenizer(c, add_special_tokens=False)["input_ids"] or tokenizer("object",
                 add_special_tokens=False)["input_ids"] for c in tokens}  # fmt: skip
        if shared:
            ids = append_tokens(text_encoder, list(tokens.values()))
        else:
            ids = new_tokens(text_encoder, list(tokens.values()), "tokens:", "was this backend adapted already?")
        embeddings = text_encoder.model.get_input_embeddings()
        self.names = list(tokens.values())
        self.ids = torch.tensor(ids, device=device)
        with torch.no_grad():
            start = torch.stack([embeddings.weight[torch.tensor(words[c])].mean(0) for c in tokens]).float()
            embeddings.weight[self.ids] = start.to(embeddings.weight.dtype)  # what the tokens read before training
        self.vectors = nn.Parameter(start.to(device))
        self.hook = embeddings.register_forward_hook(self._replace)

    def _replace(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        match = inputs[0].unsqueeze(-1) == self.ids  # (N, L, C)
        found = match.any(-1, keepdim=True)
        learned = self.vectors.to(output.dtype)[match.float().argmax(-1)]
        return torch.where(found, learned, output)

    def sync(self, accelerator) -> None:
        """Average the vectors' gradient over the processes (the parameter lives outside any DDP module)."""
        if accelerator.num_processes > 1 and self.vectors.grad is not None:
            self.vectors.grad = accelerator.reduce(self.vectors.grad, reduction="mean")

    def saved(self) -> dict[str, torch.Tensor]:
        return {t: self.vectors[i].detach().float().cpu().reshape(1, -1).clone() for i, t in enumerate(self.names)}


def _saved_tokens(learned: dict[str, _Tokens]) -> dict[str, dict[str, torch.Tensor]]:
    """Each token's textual-inversion file contents: ``{token: vector}`` (diffusers' format), or for SDXL's two
    encoders ``{"clip_l": …, "clip_g": …}`` (the community format; the token goes in the file's metadata)."""
    saved = {part: tokens.saved() for part, tokens in learned.items()}
    if "text_encoder_2" not in saved:
        return {token: {token: vector} for token, vector in saved["text_encoder"].items()}
    first, second = saved["text_encoder"], saved["text_encoder_2"]
    return {token: {XL_PARTS[0]: first[token], XL_PARTS[1]: second[token]} for token in first}


class AdapterRun:
    """One adaptation run: the frozen backend with its new parameters, the optimiser and the prepared loader."""

    def __init__(
        self,
        config: TextualInversionFitConfig,
        backend: LatentBackend,
        dataset,
        accelerator,
        quiet: bool,
        ckpt: Checkpoint | None = None,
        train_dir: Path | None = None,
    ):
        self.config, self.backend, self.acc, self.train_dir = config, backend, accelerator, train_dir
        self.lora = isinstance(config, LoRAFitConfig)
        unet, encoders = _diffusion_parts(backend, config.backend)
        self.unet, self.encoders = unet.requires_grad_(False), encoders
        self.xl = "text_encoder_2" in encoders  # SDXL: both encoders' penultimate states, pooled text, size ids
        for encoder in encoders.values():
            encoder.model.requires_grad_(False)
        names = list(dataset.class_names)
        labels = dataset.labels
        self.class_names = names
        self.tokens = class_tokens(names) if config.learns_tokens else {}
        torch.manual_seed(config.seed)
        #: the learned class tokens of each text encoder (SDXL: one vector per token in each)
        self.learned: dict[str, _Tokens] = {}
        for part, encoder in encoders.items() if config.learns_tokens else ():
            shared = any(encoders[p].tokenizer is encoder.tokenizer for p in self.learned)
            self.learned[part] = _Tokens(encoder, self.tokens, accelerator.device, shared=shared)
        self.prompts = {c: config.prompt_template.format(token=self.tokens.get(c, c), **{"class": c}) for c in names}
        params: list[dict[str, Any]] = []
        if self.learned:
            vectors = [tokens.vectors for tokens in self.learned.values()]
            params.append({"params": vectors, "lr": config.token_lr, "weight_decay": 0.0})
        self.unet_targets: list[str] = []
        if self.lora:
            from peft import LoraConfig

            cfg: LoRAFitConfig = config  # type: ignore[assignment]
            alpha = cfg.alpha or cfg.rank
            self.unet_targets = _targets(unet, UNET_TARGETS)
            unet.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=alpha, lora_dropout=cfg.dropout,
                                        init_lora_weights="gaussian", target_modules=self.unet_targets))  # fmt: skip
            for encoder in encoders.values() if cfg.text_encoder_lora else ():
                from peft import inject_adapter_in_model  # peft directly, as diffusers' training scripts do

                text_config = LoraConfig(
                    r=cfg.rank,
                    lora_alpha=alpha,
                    lora_dropout=cfg.dropout,
                    init_lora_weights="gaussian",
                    target_modules=list(_text_targets(encoder.model)),
                )
                inject_adapter_in_model(text_config, encoder.model)
            models = [unet, *(encoder.model for encoder in encoders.values())]
            lora_params = [p for m in models for n, p in m.named_parameters() if "lora_" in n]
            for p in lora_params:
                p.requires_grad_(True)
            params.append({"params": lora_params, "lr": cfg.lr, "weight_decay": 1e-2})
        self.trainable_lora = sum(p.numel() for n, p in unet.named_parameters() if "lora_" in n)
        self.text_lora = {part: sum(p.numel() for n, p in e.model.named_parameters() if "lora_" in n)
                          for part, e in encoders.items()}  # fmt: skip
        self.trainable_text_lora = sum(self.text_lora.values())
        self.unet_base = sum(p.numel() for n, p in unet.named_parameters() if "lora_" not in n)

        # the data, encoded once
        device = accelerator.device
        backend.to(device)
        first: Any = backend.first_stage
        with torch.inference_mode(), first.progress(not quiet):
            mean, std = first.encode_distribution(dataset.images(range(len(dataset))))
        shape = tuple(backend.latent_shape)
        self.mean = mean.float().reshape(len(dataset), *shape).clone().to(device)
        self.std = None if std is None else std.float().reshape(len(dataset), *shape).clone().to(device)
        class_of = torch.as_tensor(labels).long()
        present = sorted(set(class_of.tolist()))
        self.prompt_rows = [self.prompts[names[c]] for c in present]
        row = {c: i for i, c in enumerate(present)}
        self.row_of = torch.tensor([row[int(c)] for c in class_of], device=device)
        masked = getattr(backend, "text_attention_mask", True)
        self.batch_text = {}  # each encoder's tokenized prompts (SDXL runs its encoders without the padding mask)
        for part, encoder in encoders.items():
            tok = encoder.tokenizer(self.prompt_rows, padding="max_length", max_length=encoder.max_length,
                                    truncation=True, return_tensors="pt")  # fmt: skip
            self.batch_text[part] = {k: v.to(device) for k, v in tok.items() if k != "attention_mask" or masked}
        self.scheduler = getattr(backend, "scheduler")  # noqa: B009 (checked by _diffusion_parts)
        self.count = len(dataset)
        batch = min(config.batch_size, self.count - self.count % accelerator.num_processes)
        loader = DataLoader(TensorDataset(torch.arange(self.count)), batch_size=batch, shuffle=True, drop_last=True,
                            generator=torch.Generator().manual_seed(config.seed))  # fmt: skip
        self.optimizer = torch.optim.AdamW(params, betas=(0.9, 0.999))
        # only modules with trainable weights are prepared (DDP); the token vectors are averaged by `_Tokens.sync`
        self.unet_run = unet
        self.text_runs = {part: encoder.model for part, encoder in encoders.items()}
        if self.lora:
            self.unet_run, self.optimizer, self.loader = accelerator.prepare(unet, self.optimizer, loader)
        else:
            self.optimizer, self.loader = accelerator.prepare(self.optimizer, loader)
        for part, count in self.text_lora.items():
            if count:
                self.text_runs[part] = accelerator.prepare(self.text_runs[part])
        self.unet_run.train(self.lora)
        for model in self.text_runs.values():
            model.train(False)
        self.losses: list[float] = []
        self.step = 0
        if ckpt is not None:
            self._restore(ckpt)
        #: the prompts' conditionings where nothing in the text encoders learns (computed once)
        self.fixed_hidden = None
        if not self.learned and not self.trainable_text_lora:
            with torch.no_grad():
                self.fixed_hidden = self._hidden()

    def _hidden(self) -> torch.Tensor:
        """The prompts' conditionings, one row per class present: the text encoder's last hidden states, or SDXL's
        (both encoders' penultimate states concatenated, the pooled embedding packed after them, as the backend's
        ``encode_text``)."""
        if not self.xl:
            return self.text_runs["text_encoder"](**self.batch_text["text_encoder"]).last_hidden_state
        from latentmix.backends.sdxl import pack_pooled

        first = self.text_runs["text_encoder"](**self.batch_text["text_encoder"], output_hidden_states=True)
        second = self.text_runs["text_encoder_2"](**self.batch_text["text_encoder_2"], output_hidden_states=True)
        tokens = torch.cat([first.hidden_states[-2].float(), second.hidden_states[-2].float()], dim=-1)
        return pack_pooled(tokens, second.text_embeds.float())

    def _noise_prediction(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if not self.xl:
            return self.unet_run(x_t, t, encoder_hidden_states=cond).sample
        tokens, pooled = self.backend.split_condition(cond)  # type: ignore[attr-defined]
        added = {"text_embeds": pooled, "time_ids": self.backend.time_ids(x_t)}  # type: ignore[attr-defined]
        return self.unet_run(x_t, t, encoder_hidden_states=tokens, added_cond_kwargs=added).sample

    def models(self) -> dict[str, nn.Module]:
        """The UNet and the text encoders by part name, unwrapped from what accelerate prepared."""
        runs = {"unet": self.unet_run, **self.text_runs}
        return {part: self.acc.unwrap_model(model) for part, model in runs.items()}

    def _new_parameters(self) -> dict[str, torch.Tensor]:
        """Everything that learns, by checkpoint key: each part's LoRA weights and each encoder's token vectors."""
        found = {f"lora.{part}.{n}": p for part, m in self.models().items()
                 for n, p in m.named_parameters() if "lora_" in n}  # fmt: skip
        return {**found, **{f"tokens.{part}": tokens.vectors for part, tokens in self.learned.items()}}

    def _state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint holds: the LoRA weights, the token vectors, the optimiser's moments, the RNG."""
        tensors = {key: p.detach().cpu() for key, p in self._new_parameters().items()}
        return {**tensors, **optimizer_tensors(self.optimizer, "opt"), **rng_tensors({})}

    def _restore(self, ckpt: Checkpoint) -> None:
        with torch.no_grad():
            for key, p in self._new_parameters().items():
                p.copy_(ckpt.tensors[key])
        load_optimizer(self.optimizer, ckpt.tensors, "opt")
        load_rng({}, ckpt.tensors)
        self.step = int(ckpt.progress["step"])

    def train(self, show: bool) -> None:
        config, acc = self.config, self.acc
        per_epoch = len(self.loader)
        what = "fit lora" if self.lora else "fit textual-inversion"
        bar = tqdm(total=config.steps, initial=self.step, desc=what, disable=not show)
        while self.step < config.steps:
            epoch, skip = divmod(self.step, per_epoch)
            self.loader.set_epoch(epoch)  # the shuffle of an epoch depends on (seed, epoch) only
            for (idx,) in acc.skip_first_batches(self.loader, skip) if skip else self.loader:
                if self.step >= config.steps:
                    break
                self.losses.append(self.train_step(idx, self.step))
                self.step += 1
                bar.update()
                if self.step % 25 == 0:
                    bar.set_postfix(loss=f"{sum(self.losses[-25:]) / len(self.losses[-25:]):.4f}")
                done = self.step % config.checkpoint_every == 0 or self.step == config.steps
                if done and self.train_dir is not None and acc.is_main_process:
                    save_checkpoint(self.train_dir, config, self._state(), {"step": self.step})
        bar.close()

    def train_step(self, idx: torch.Tensor, step: int) -> float:
        acc, device = self.acc, self.acc.device
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + 7_919 * (step + 1) + acc.process_index)
        idx = idx.to(device)
        z0 = self.mean[idx]
        if self.std is not None:
            z0 = z0 + self.std[idx] * torch.randn(z0.shape, generator=gen).to(device)
        noise = torch.randn(z0.shape, generator=gen).to(device)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (len(idx),), generator=gen).to(device)
        x_t = self.scheduler.add_noise(z0, noise, t)
        with acc.autocast():
            hidden = self.fixed_hidden if self.fixed_hidden is not None else self._hidden()
            cond = hidden[self.row_of[idx]]
            pred = self._noise_prediction(x_t, t, cond).float()
            loss = (pred - noise).pow(2).mean()
        check_finite_loss(loss, step)
        self.optimizer.zero_grad(set_to_none=True)
        acc.backward(loss)
        for tokens in self.learned.values():
            tokens.sync(acc)
        self.optimizer.step()
        return float(loss.detach())


def _save(run: AdapterRun, out: Path, config: TextualInversionFitConfig, metrics: dict, command: str | None) -> None:
    models = run.models()

    def write(tmp: Path) -> None:
        if run.lora:
            from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
            from diffusers.utils import convert_state_dict_to_diffusers
            from peft.utils import get_peft_model_state_dict

            def part(model: Any) -> tuple[dict | None, dict | None]:
                if not getattr(model, "peft_config", None):
                    return None, None
                state = convert_state_dict_to_diffusers(get_peft_model_state_dict(model))
                meta = next(iter(model.peft_config.values())).to_dict()
                return {k: v.detach().float().cpu().contiguous() for k, v in state.items()}, meta

            layers: dict[str, Any] = {}
            for name, model in models.items():
                if name == "unet" or run.text_lora[name]:
                    state, meta = part(model)
                    layers[f"{name}_lora_layers"], layers[f"{name}_lora_adapter_metadata"] = state, meta
            pipeline = StableDiffusionXLPipeline if run.xl else StableDiffusionPipeline
            pipeline.save_lora_weights(tmp, weight_name=WEIGHT_NAME, **layers)
        if run.learned:
            (tmp / EMBEDS).mkdir()
            for token, tensors in _saved_tokens(run.learned).items():
                meta = {"token": token} if run.xl else None  # SDXL files are named by the file, or by this
                atomic_save_safetensors(tmp / EMBEDS / f"{slug(token.strip('<>'))}.safetensors", tensors, meta)
        (tmp / "prompts.json").write_text(json.dumps(run.prompts, indent=2) + "\n", encoding="utf-8")
        record = {MARKER: "lora" if run.lora else "textual-inversion", "backend": config.backend,
                  "tokens": run.tokens, "prompt_template": config.prompt_template,
                  "settings": asdict(config), "metrics": metrics}  # fmt: skip
        (tmp / "config.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        (tmp / "MODEL_CARD.md").write_text(_card(run, config, metrics, command), encoding="utf-8")

    atomic_directory(out, write, marker=MARKER)


def _card(run: AdapterRun, config: TextualInversionFitConfig, metrics: dict, command: str | None) -> str:
    kind = "LoRA + class tokens" if run.lora and run.tokens else "LoRA" if run.lora else "Textual inversion"
    what = (f"peft LoRA (rank {config.rank}) on the UNet's {', '.join(run.unet_targets)}"  # type: ignore[attr-defined]
            if run.lora else "no UNet weights")  # fmt: skip
    return model_card(
        title=f"{kind} adapter of {config.backend}",
        command=command,
        default_command="latentmix fit lora / textual-inversion (Python API)",
        description=(
            f"Adapts `{config.backend}` to `{config.data}` ({metrics['train_images']} training images): "
            f"{what}; learned tokens {', '.join(run.tokens.values()) or '(none)'}. Load it with "
            f"`latentmix synthesize --lora DIR` (or `--textual-inversion DIR`) and `--prompts DIR/prompts.json`, "
            "or with diffusers' `load_lora_weights(DIR)` / `load_textual_inversion(DIR/learned_embeds/FILE)`."
        ),
        metrics=metrics,
        settings=config,
    )


def adapter_dataset(config: TextualInversionFitConfig, backend: LatentBackend):
    dataset = load_matching(
        config.data, "train", backend.image_size, backend.image_channels, resize=config.resize,
        who=f"backend {config.backend!r}", fix="adapt a backend of this image size, or convert the data",
    )  # fmt: skip
    if not dataset.class_names or bool((dataset.labels < 0).any()):
        raise ValueError(f"data {config.data!r} has unlabelled examples; adaptation learns one token per class")
    if config.labels_per_class is not None:
        dataset = Subset(dataset, labelled_subset(dataset.labels.numpy(), config.labels_per_class, config.subset_seed))
    if len(dataset) < 2:
        raise ValueError(f"data {config.data!r} holds {len(dataset)} training image(s); need at least 2")
    return dataset


@holds_outputs(lambda out, **_: [out])
def fit_adapter(
    config: TextualInversionFitConfig, out: str | os.PathLike, *, quiet: bool = False, command: str | None = None
) -> FitResult:
    """Adapt ``config.backend`` to ``config.data`` (LoRA + tokens for a :class:`LoRAFitConfig`, tokens only for a
    :class:`TextualInversionFitConfig`) and save the adapter to ``out``; see the module docstring. The result's
    ``backend`` is the base backend with the saved adapter loaded (as ``synthesize --lora`` loads it)."""
    config.validate()
    out = Path(out)
    train_dir = Path(f"{out}.train")
    backend = load_backend(config.backend)
    _diffusion_parts(backend, config.backend)
    dataset = adapter_dataset(config, backend)
    accelerator = split_batch_accelerator(config.batch_size, config.seed, config.cpu, config.mixed_precision)
    ckpt = load_checkpoint(train_dir, config)
    show = not quiet and accelerator.is_local_main_process
    run = AdapterRun(config, backend, dataset, accelerator, quiet=not show, ckpt=ckpt, train_dir=train_dir)
    started = time.perf_counter()
    run.train(show)
    accelerator.wait_for_everyone()
    last = run.losses[-50:]
    metrics = {
        "train_seconds_this_run": round(time.perf_counter() - started, 1),
        "train_images": run.count,
        "steps": config.steps,
        "resumed_from_step": int(ckpt.progress["step"]) if ckpt is not None else 0,
        "final_loss_mean_last_50": round(sum(last) / len(last), 5) if last else None,
        "learned_tokens": len(run.tokens),
        "unet_lora_parameters": run.trainable_lora,
        "unet_parameters": run.unet_base,
        "unet_lora_share_percent": round(100 * run.trainable_lora / run.unet_base, 3),
        "text_encoder_lora_parameters": run.trainable_text_lora,
        "processes": accelerator.num_processes,
        "device": f"{accelerator.device.type} ({platform.machine()})",
    }
    if last and not math.isfinite(metrics["final_loss_mean_last_50"]):
        raise ValueError("the adaptation diverged")
    if accelerator.is_main_process:
        _save(run, out, config, metrics, command)
    accelerator.wait_for_everyone()
    adapted = load_backend(config.backend)  # what a later job loads: the base backend with the saved adapter
    adapted.add_lora(out) if run.lora else adapted.add_textual_inversion(out)
    return FitResult(adapted, metrics, out)
