"""Train a classifier on real data, optionally with a synthetic paired set and any mixup variant.

``train_classifier(TrainConfig(...))`` (``latentmix train``) fits a :class:`~latentmix.classifiers.networks.SmallCNN`
on images (an MLP on feature vectors, a :class:`~latentmix.classifiers.networks.FusionClassifier` on image + caption
for ``mixup="cross-modal"``) — or the user's own classifier (``--model``: a transformers checkpoint; ``model=`` any
module; :mod:`latentmix.classifiers.pretrained`) — on the splits of :mod:`latentmix.train.classifier_data`, with the
recipes of :mod:`latentmix.train.recipes` (AdamW or SGD, warm-up then cosine, accumulation, clipping, EMA):

* a synthetic set enters every batch: each row is replaced by a synthetic sample with probability
  ``synthetic_ratio`` (DA-Fusion's scheme), with its soft label; its images stream through loader workers
  (:mod:`latentmix.train.batches`);
* ``mixup``: ``none``, ``input``, ``cutmix``, ``manifold`` (hooks on the classifier's blocks), or
  ``cross-modal``: both modalities and the labels mixed with one λ, modality dropout, and a consistency
  loss between the image-only and text-only predictions (on digits the captions name the label);
* early stopping on the validation NLL; the best weights are kept;
* accelerate places the model; evaluation runs through prepared data loaders across processes and
  ``gather_for_metrics`` returns every prediction once, in order;
* checkpoints (:mod:`latentmix.train.checkpoint`, one file) at every evaluation when ``checkpoint_dir`` is set;
  a restarted run with the same settings resumes from the last one, and a finished run reproduces its
  report instead of training on.

Reported (:class:`TrainResult`): accuracy, NLL, Brier, ECE (15 bins) and the mean confidence − accuracy
gap on the test split, before and after temperature scaling fitted on the validation set (by default the
MAP temperature under a log-normal prior, :func:`latentmix.classifiers.metrics.fit_temperature`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from latentmix.classifiers.metrics import classification_report, fit_temperature
from latentmix.classifiers.networks import MLP, FusionClassifier, SmallCNN
from latentmix.classifiers.pretrained import (
    CONFIG_KEY,
    ImageClassifier,
    InputSpec,
    check_layer,
    freeze_backbone,
    load_hf_classifier,
    save_hf_classifier,
)
from latentmix.classifiers.robustness import robustness_report
from latentmix.configs import DEFAULT_ALPHA, FUSION_MIXUPS, TrainConfig
from latentmix.data.augment import PairAugment
from latentmix.data.batch_augment import BatchAugment
from latentmix.latent.interpolate import sample_lambda
from latentmix.train.batches import MIXGEN_SHARE, Batches, BatchStream
from latentmix.train.checkpoint import (
    load_checkpoint,
    load_module,
    load_optimizer,
    load_rng,
    module_tensors,
    optimizer_tensors,
    rng_tensors,
    save_checkpoint,
)
from latentmix.train.classifier_data import LazyImages, Split, TrainData, load_data, load_synthetic, low_data_split
from latentmix.train.common import check_finite_loss
from latentmix.train.mixup import (
    ManifoldMixup,
    Mixup,
    consistency_loss,
    cross_modal_mixup,
    modality_dropout,
    soft_cross_entropy,
    soft_targets,
)
from latentmix.train.mixup_guided import AdversarialManifoldMixup, DepthCurriculum, SaliencyMix
from latentmix.train.recipes import build_ema, build_optimizer, lr_factor
from latentmix.utils.device import has_accelerator
from latentmix.utils.locks import holds_outputs

__all__ = ["MIXGEN_SHARE", "Batches", "TrainConfig", "TrainResult", "low_data_split", "train_classifier"]
EVAL_BATCH = 512


@dataclass
class TrainResult:
    """What :func:`train_classifier` reports; :meth:`to_dict` is the JSON that ``--json`` writes."""

    test: dict[str, float]  # accuracy, nll, brier, ece, confidence_gap on the test split
    test_temperature_scaled: dict[str, float]  # the same after temperature scaling
    temperature: float
    val_nll: float  # best validation NLL (early stopping)
    steps_run: int
    train_examples: int
    val_examples: int
    synthetic_examples: int
    synthetic_agreement: float | None  # share of synthetic samples whose dominant label the trained model predicts
    config: TrainConfig
    model: nn.Module  # the best weights, unwrapped
    test_logits: Tensor  # (N, K) before temperature scaling
    test_labels: Tensor
    #: test accuracy clean and under FGSM, PGD, noise and blur (classifiers.robustness; image classifiers only)
    robustness: dict[str, float] | None = None
    #: test accuracy with both modalities, the image only (text missing) and the text only (image missing)
    missing_modality: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        keep = ["test", "test_temperature_scaled", "temperature", "val_nll", "steps_run"]
        keep += ["train_examples", "val_examples", "synthetic_examples", "synthetic_agreement", "robustness"]
        keep += ["missing_modality"]
        return {**{k: getattr(self, k) for k in keep}, "config": asdict(self.config)}


def _build_model(config: TrainConfig, data: TrainData, model: nn.Module | None = None) -> nn.Module:
    """latentmix's own network for the data and modality, or the user's classifier (``model``, or ``--model``'s
    transformers checkpoint) behind its input conversion."""
    train = data.train
    if model is not None or config.model is not None:
        return _users_model(config, data, model)
    if config.reads == "fusion":
        assert train.t is not None  # embedded by _embed_captions
        return FusionClassifier(train.x.shape[1], train.t.shape[1], data.num_classes, config.width)
    if data.is_image and config.reads == "image":
        return SmallCNN(train.x.shape[1], data.num_classes, config.width)
    return MLP(train.x[0].numel(), data.num_classes, config.width * 8)


def _users_model(config: TrainConfig, data: TrainData, model: nn.Module | None) -> ImageClassifier:
    if config.reads != "image":
        raise ValueError(f"model: modality {config.reads} trains latentmix's own network; a model of your own reads "
                         "images")  # fmt: skip
    spec = None
    if config.normalize is not None:
        half = len(config.normalize) // 2
        spec = InputSpec(mean=config.normalize[:half], std=config.normalize[half:])
    if model is None:
        assert config.model is not None
        wrapped = load_hf_classifier(config.model, data.class_names, spec=spec,
                                     trust_remote_code=config.trust_remote_code,
                                     scratch=config.init == "scratch")  # fmt: skip
    elif isinstance(model, ImageClassifier):
        wrapped = model
    elif isinstance(model, nn.Module):
        wrapped = ImageClassifier(model, spec)
    else:
        raise TypeError(f"model must be a torch.nn.Module mapping images to logits, got {type(model).__name__}")
    if config.save_model is not None:
        from transformers import PreTrainedModel

        if not isinstance(wrapped.net, PreTrainedModel):
            raise ValueError("save_model: a plain nn.Module has no save format; save its state_dict yourself, or "
                             "train a transformers model (--model)")  # fmt: skip
    if config.freeze == "backbone":
        freeze_backbone(wrapped.net)
    _check_output(wrapped, data)
    return wrapped


def _check_output(model: nn.Module, data: TrainData) -> None:
    """One forward pass on two validation images before any training step: the model must take the data's
    images (after its input conversion) and return (B, classes) logits."""
    x = data.val.x[:2]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except (RuntimeError, ValueError, TypeError) as exc:
        shape = tuple(x.shape[1:])
        raise ValueError(f"model: it does not take the data's {shape} images after conversion "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None  # fmt: skip
    finally:
        model.train(was_training)
    if not isinstance(out, Tensor) or tuple(out.shape) != (len(x), data.num_classes):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"model: it returns {got} for {len(x)} images; it must return logits "
                         f"({len(x)}, {data.num_classes}) for the data's {data.num_classes} classes")  # fmt: skip


def _mixing_layers(config: TrainConfig, raw: nn.Module) -> list[str]:
    """The layers manifold mixing hooks: ``--manifold-layers`` (names of the user's network) or the model's own."""
    if config.manifold_layers is None:
        return list(cast(tuple, raw.manifold_layers))
    if isinstance(raw, ImageClassifier):
        return [raw.layer(name) for name in config.manifold_layers]
    return [n if n == "input" else check_layer(raw, n) for n in config.manifold_layers]


def _augmenter(config: TrainConfig, data: TrainData) -> PairAugment | None:
    """The pair augmenter of ``--augment``."""
    if config.augment == "none":
        return None
    if not data.is_image or data.train.texts is None:
        raise ValueError("augment needs images with captions; feature vectors cannot be flipped or recoloured")
    return PairAugment(config.augment_transforms, p=config.augment_p, mode=config.augment, data=data,
                       name=f"data {config.data!r}")  # fmt: skip


def _embed_captions(config: TrainConfig, data: TrainData, syn: Split | None) -> Any:
    """Fusion and text classifiers: sentence embeddings of the real captions (a synthetic set brings its own
    blended ones); a text-only classifier then reads them in place of the images. Returns the encoder."""
    if not data.is_image or data.train.texts is None:
        what = f"mixup {config.mixup}" if config.mixup in FUSION_MIXUPS else f"modality {config.reads}"
        raise ValueError(
            f"{what} needs images with captions (digits, shapes, an image folder or an imagefolder with texts)"
        )
    from latentmix.data.text import TextEncoder

    encoder = TextEncoder.from_pretrained(config.text_encoder)
    for split in (data.train, data.val, data.test):
        split.t = encoder.encode(split.texts or [])
    dim = encoder.embedding_dim
    if syn is not None and syn.t is not None and syn.t.shape[1] != dim:
        raise ValueError(f"synthetic text embeddings have {syn.t.shape[1]} dims, the text encoder gives {dim}")
    if config.reads == "text":
        for split in (data.train, data.val, data.test, *([syn] if syn is not None else [])):
            assert split.t is not None
            split.x, split.t = split.t, None
    return encoder


class _Evaluator:
    """Logits of a split through a prepared (process-sharded) loader, gathered once each, in order; a split of
    :class:`LazyImages` is decoded batch by batch."""

    def __init__(self, accelerator, split: Split, workers: int = 0):
        from torch.utils.data import DataLoader, TensorDataset

        extra = [split.t] if split.t is not None else []
        if isinstance(split.x, LazyImages):
            dataset: Any = _LazyRows(split.x, extra)
        else:
            dataset = TensorDataset(split.x, *extra)
        self.accelerator = accelerator
        loader = DataLoader(dataset, batch_size=EVAL_BATCH, shuffle=False, num_workers=workers)
        self.loader = accelerator.prepare(loader)

    def __call__(self, model: nn.Module) -> Tensor:
        model.eval()
        outs = []
        with torch.inference_mode():
            for batch in self.loader:
                outs.append(self.accelerator.gather_for_metrics(model(*batch).float()))
        model.train()
        return torch.cat(outs).cpu()


class _LazyRows(torch.utils.data.Dataset):
    """Rows (image, *tensors[i]) of a split whose images are decoded on demand."""

    def __init__(self, images: LazyImages, tensors: list[Tensor]):
        self.dataset, self.tensors = images.dataset, tensors

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Tensor, ...]:
        return (self.dataset.load_image(int(i)), *(t[i] for t in self.tensors))


def missing_modality_accuracy(model: nn.Module, reads: str, test: Split, num_classes: int) -> dict[str, float]:
    """Test accuracy with both modalities, with the image only (the caption missing) and with the caption only
    (the image missing). A classifier that cannot read what is left scores the best blind guess, the share of the
    most frequent test class."""
    blind = float(torch.bincount(test.y, minlength=num_classes).max()) / len(test.y)
    device = next(model.parameters()).device
    model.eval()

    def accuracy(fn, *tensors: Tensor) -> float:
        with torch.inference_mode():
            logits = torch.cat([fn(*(t[i : i + EVAL_BATCH].to(device) for t in tensors)).cpu()
                                for i in range(0, len(tensors[0]), EVAL_BATCH)])  # fmt: skip
        return float((logits.argmax(1) == test.y).float().mean())

    if reads == "fusion":
        assert test.t is not None
        fusion = cast(FusionClassifier, model)
        return {
            "both": accuracy(fusion, test.x, test.t),
            "image_only": accuracy(fusion.image_only, test.x),
            "text_only": accuracy(fusion.text_only, test.t),
        }
    alone = accuracy(model, test.x)
    if reads == "image":
        return {"both": alone, "image_only": alone, "text_only": blind}
    return {"both": alone, "image_only": blind, "text_only": alone}


def balanced_class_weights(labels: Tensor, num_classes: int) -> Tensor:
    """``N / (C * n_c)`` per class c of the labelled set, C the classes present (scikit-learn's
    ``class_weight="balanced"``): the weights average 1 over the labelled examples, and every class carries the
    same total weight; a class without examples gets 0."""
    counts = torch.bincount(labels.long(), minlength=num_classes).double()
    present = int((counts > 0).sum())
    weights = torch.where(counts > 0, counts.sum() / (present * counts.clamp(min=1)), torch.zeros_like(counts))
    return weights.float()


@holds_outputs(lambda config, **_: [config.checkpoint_dir, config.save_model])
def train_classifier(
    config: TrainConfig,
    *,
    quiet: bool = False,
    arrays: dict | None = None,
    model: nn.Module | None = None,
    command: str | None = None,
) -> TrainResult:
    """Train, early-stop on validation NLL, fit a temperature, and report test metrics.

    ``arrays`` (``X_train``, ``y_train``, ``X_test``, ``y_test``) replaces ``config.data`` with
    in-memory feature vectors (what the scikit-learn-style estimator uses). ``model``: train this network (any
    ``nn.Module`` mapping a batch of images to logits, or a :class:`~latentmix.classifiers.pretrained.ImageClassifier`)
    instead of latentmix's own; it is trained in place. ``command``: the command line, for the saved model's card.
    """
    from accelerate import Accelerator

    config.validate()
    if config.normalize is not None and model is None and config.model is None:
        raise ValueError("normalize applies to a model of your own (--model, or model= in Python)")
    data = load_data(config, arrays)
    train, val, test, num_classes = data.train, data.val, data.test, data.num_classes
    syn = load_synthetic(config, data.class_names if data.is_image else num_classes, tuple(train.x.shape[1:]))
    if config.mixup == "cutmix" and not data.is_image:
        raise ValueError("mixup cutmix needs images; use input or manifold mixup for feature vectors")
    if config.image_augment and not data.is_image:
        raise ValueError("image_augment needs images; feature vectors cannot be cropped or flipped")
    accelerator = Accelerator(cpu=not has_accelerator(), mixed_precision=config.mixed_precision)
    torch.manual_seed(config.seed)
    encoder = _embed_captions(config, data, syn) if config.reads != "image" else None
    net = _build_model(config, data, model)
    opt = build_optimizer(config, net)
    gens = {
        "batches": torch.Generator().manual_seed(config.seed * 7919 + accelerator.process_index),
        "mixing": torch.Generator().manual_seed(config.seed * 31 + 1 + accelerator.process_index),
    }
    augment = None
    if config.image_augment:
        augment = BatchAugment(config.image_augment, (int(train.x.shape[-2]), int(train.x.shape[-1])))
        gens["augment"] = torch.Generator().manual_seed(config.seed * 104729 + 2 + accelerator.process_index)
    state = _RunState(best=copy.deepcopy(net.state_dict()))
    ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    ema = build_ema(config, net)
    if ckpt_dir is not None:
        state.resume(ckpt_dir, config, net, opt, gens, ema)
    start = state.step
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s + start, config.steps, config.warmup_steps))
    prepared, opt = accelerator.prepare(net, opt)
    raw = accelerator.unwrap_model(prepared)
    if ema is not None:
        ema.to(accelerator.device)
    judged = ema if ema is not None else prepared  # what is evaluated, early-stopped, reported and saved
    judged_raw = ema.module if ema is not None else raw
    evaluate = {name: _Evaluator(accelerator, split) for name, split in (("val", val), ("test", test))}
    weights = None
    if config.class_weights == "balanced":
        weights = balanced_class_weights(train.y, num_classes).to(accelerator.device)
    step_fn = _make_step(config, prepared, raw, num_classes, gens["mixing"], clock=lambda: state.step,
                         class_weights=weights)  # fmt: skip
    batches = Batches(config, train, syn, num_classes, gens["batches"], _augmenter(config, data), encoder)
    remaining = 0 if state.finished else (config.steps - state.step) * config.grad_accum
    stream = BatchStream(batches, remaining, workers=config.workers, pin_memory=accelerator.device.type == "cuda",
                         cache_bytes=config.decode_cache_mb * 2**20)  # fmt: skip

    loop = _Loop(config, accelerator, prepared, opt, sched, evaluate["val"], val.y, ckpt_dir, gens, ema, judged,
                 augment)  # fmt: skip
    try:
        loop.run(state, stream, step_fn, quiet)
    finally:
        stream.close()
    judged_raw.load_state_dict(state.best)
    temperature = fit_temperature(evaluate["val"](judged), val.y, config.temperature_prior)
    test_logits = evaluate["test"](judged)
    agreement = None
    if syn is not None:
        predicted = _Evaluator(accelerator, syn, config.workers)(judged).argmax(1)
        agreement = float((predicted == syn.y.argmax(1)).float().mean())
    robustness = None
    if data.is_image and config.reads == "image":  # the fusion model also takes text: no image-only attack
        robustness = robustness_report(judged_raw, test.x, test.y)
    missing = missing_modality_accuracy(judged_raw, config.reads, test, num_classes) if data.is_image else None
    report = classification_report(test_logits, test.y)
    scaled = classification_report(test_logits, test.y, temperature)
    if config.save_model is not None and accelerator.is_main_process:
        card = _card(config, command, data, report, scaled, temperature, state.step, str(accelerator.device))
        save_classifier(judged_raw, config.save_model, data.class_names, temperature, tuple(train.x.shape[1:]),
                        card=card)  # fmt: skip
    return TrainResult(
        test=report,
        test_temperature_scaled=scaled,
        temperature=temperature,
        val_nll=state.best_nll,
        steps_run=state.step,
        train_examples=len(train.x),
        val_examples=len(val.x),
        synthetic_examples=0 if syn is None else len(syn.x),
        synthetic_agreement=agreement,
        config=config,
        model=judged_raw,
        test_logits=test_logits,
        test_labels=test.y,
        robustness=robustness,
        missing_modality=missing,
    )


@dataclass
class _Loop:
    """The optimisation loop: steps (each over ``grad_accum`` batches, clipped), periodic validation (early
    stopping), checkpoints."""

    config: TrainConfig
    accelerator: Any
    model: nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    evaluate_val: _Evaluator
    val_labels: Tensor
    ckpt_dir: Path | None
    gens: dict[str, torch.Generator]
    ema: Any = None  # torch.optim.swa_utils.AveragedModel
    judged: nn.Module | None = None  # what validation reads: the EMA when on, else the model
    augment: BatchAugment | None = None

    def _loss(self, next_batch, step_fn) -> Tensor:
        acc = self.accelerator
        x, y, t = next_batch()
        x = x.to(acc.device)
        if self.augment is not None:
            x = self.augment(x, self.gens["augment"])
        with acc.autocast():
            return step_fn(x, y.to(acc.device), t)

    def run(self, state: _RunState, next_batch: BatchStream, step_fn, quiet: bool) -> None:
        config, acc = self.config, self.accelerator
        judged = self.judged if self.judged is not None else self.model
        judged_raw = self.ema.module if self.ema is not None else acc.unwrap_model(self.model)
        todo = range(state.step, config.steps) if not state.finished else range(0)  # a finished run reports again
        bar = tqdm(todo, desc="train", disable=quiet or not acc.is_local_main_process)
        for step in bar:
            self.opt.zero_grad(set_to_none=True)
            total = 0.0
            for micro in range(config.grad_accum):
                last = micro == config.grad_accum - 1
                sync = contextlib.nullcontext() if last else acc.no_sync(self.model)
                with sync:
                    loss = self._loss(next_batch, step_fn)
                    check_finite_loss(loss, step, self.ckpt_dir)
                    acc.backward(loss / config.grad_accum)
                total += float(loss.detach()) / config.grad_accum
            if config.clip_grad is not None:
                acc.clip_grad_norm_(self.model.parameters(), config.clip_grad)
            self.opt.step()
            self.sched.step()
            if self.ema is not None:
                self.ema.update_parameters(acc.unwrap_model(self.model))
            state.step = step + 1
            if state.step % config.eval_every == 0 or state.step == config.steps:
                val_nll = float(nn.functional.cross_entropy(self.evaluate_val(judged).double(), self.val_labels))
                state.record(val_nll, judged_raw)
                bar.set_postfix(loss=f"{total:.3f}", val_nll=f"{val_nll:.3f}")
                state.finished = state.bad >= config.patience or state.step == config.steps
                if self.ckpt_dir is not None and acc.is_main_process:
                    gens = next_batch.generator_states(self.gens)  # as of the last batch consumed
                    state.save(self.ckpt_dir, config, acc.unwrap_model(self.model), self.opt, gens, self.ema)
                if state.finished:
                    break


def _card(config: TrainConfig, command: str | None, data: TrainData, report: dict, scaled: dict, temperature: float,
          steps: int, device: str) -> str:  # fmt: skip
    """The MODEL_CARD.md of a saved classifier: the command, the data, the test numbers, every setting."""
    from latentmix.train.cards import model_card

    labelled = "all" if config.labels_per_class is None else f"{config.labels_per_class} per class"
    start = "" if config.model is None else f" from `{config.model}` ({config.init})"
    metrics = {
        "test_accuracy": report["accuracy"],
        "test_nll": report["nll"],
        "test_ece": report["ece"],
        "test_nll_temperature_scaled": scaled["nll"],
        "test_ece_temperature_scaled": scaled["ece"],
        "temperature": temperature,
        "train_examples": len(data.train.y),
        "test_examples": len(data.test.y),
        "steps_run": steps,
    }
    return model_card(
        title="Image classifier",
        command=command,
        default_command=f"train_classifier(TrainConfig(data={config.data!r}, ...)) from Python",
        description=f"A classifier trained{start} on `{config.data}` ({labelled} labelled examples of "
        f"{data.num_classes} classes: {', '.join(data.class_names[:10])}); the test split was used only for the "
        "numbers below, the temperature was fitted on the validation split.",
        metrics=metrics,
        settings=config,
        device=device,
    )


def save_classifier(
    model: nn.Module, out: str, class_names: list[str], temperature: float, shape: tuple, *, card: str | None = None
) -> Path:
    """Save a trained classifier atomically: latentmix's own as config.json (class names, temperature, input shape)
    + safetensors; a transformers model with ``save_pretrained`` (:func:`save_hf_classifier`); ``card``: the
    MODEL_CARD.md written with it."""
    from latentmix.utils.atomic import atomic_directory

    def with_card(tmp: Path) -> None:
        if card is not None:
            (tmp / "MODEL_CARD.md").write_text(card)

    if isinstance(model, ImageClassifier):  # a transformers model (others are refused before training)

        def write_hf(tmp: Path) -> None:
            save_hf_classifier(model, tmp, class_names, temperature)
            with_card(tmp)

        return atomic_directory(Path(out), write_hf, marker=CONFIG_KEY)
    from latentmix.classifiers.networks import describe

    describe(model, class_names, temperature, shape)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)  # type: ignore[operator]
        with_card(tmp)

    return atomic_directory(Path(out), write, marker="_class_name")


@dataclass
class _RunState:
    """Progress of a run: what a checkpoint saves besides the weights."""

    best: dict[str, Tensor]
    step: int = 0
    best_nll: float = math.inf
    bad: int = 0  # evaluations since the best one
    finished: bool = False

    def record(self, val_nll: float, raw: nn.Module) -> None:
        if val_nll < self.best_nll - 1e-4:
            self.best_nll, self.bad = val_nll, 0
            self.best = copy.deepcopy({k: v.detach().cpu() for k, v in raw.state_dict().items()})
        else:
            self.bad += 1

    def save(self, directory: Path, config: TrainConfig, raw: nn.Module, opt, gens: dict, ema=None) -> None:
        tensors = {**module_tensors("model", raw), **{f"best.{k}": v for k, v in self.best.items()}}
        if ema is not None:
            tensors.update(module_tensors("ema", ema))
        tensors.update(optimizer_tensors(opt, "opt"))
        tensors.update(rng_tensors(gens))  # batch sampling, mixing, and the global RNG that dropout draws from
        progress = {"step": self.step, "best_nll": self.best_nll, "bad_evals": self.bad, "finished": self.finished}
        save_checkpoint(directory, config, tensors, progress)

    def resume(self, directory: Path, config: TrainConfig, model: nn.Module, opt, gens: dict, ema=None) -> None:
        ckpt = load_checkpoint(directory, config)
        if ckpt is None:
            return
        load_module(model, ckpt.tensors, "model")
        if ema is not None:
            load_module(ema, ckpt.tensors, "ema")
        self.best = {k[5:]: v for k, v in ckpt.tensors.items() if k.startswith("best.")}
        load_optimizer(opt, ckpt.tensors, "opt")
        load_rng(gens, ckpt.tensors)
        p = ckpt.progress
        self.step, self.best_nll, self.bad, self.finished = p["step"], p["best_nll"], p["bad_evals"], p["finished"]


def _make_step(
    config: TrainConfig,
    model: nn.Module,
    raw: nn.Module,
    num_classes: int,
    mix_gen: torch.Generator,
    clock=lambda: 0,
    class_weights: Tensor | None = None,
):
    """The loss of one batch under the configured mixing (a closure over the mixer); ``clock()`` is the current
    step (for the depth curriculum); ``class_weights`` re-weight every class's loss term."""
    ce = functools.partial(soft_cross_entropy, class_weights=class_weights)
    alpha = config.alpha or DEFAULT_ALPHA.get(config.mixup, 1.0)
    smoothing = config.label_smoothing
    if config.mixup in ("input", "cutmix"):
        mixer = Mixup(
            num_classes,
            mixup_alpha=alpha if config.mixup == "input" else 0.0,
            cutmix_alpha=alpha if config.mixup == "cutmix" else 0.0,
            label_smoothing=smoothing,
            generator=mix_gen,
        )

        def input_mix(x: Tensor, y: Tensor, t: Tensor | None) -> Tensor:
            out = mixer(x, y)
            return ce(model(out.x), out.y)

        return input_mix
    if config.mixup in ("manifold", "adversarial-manifold"):
        layers = _mixing_layers(config, raw)
        curriculum = None
        if config.depth_curriculum != "none":
            curriculum = DepthCurriculum(layers, config.steps, config.depth_curriculum)
        if config.mixup == "manifold":
            manifold: Any = ManifoldMixup(model, layers, num_classes, alpha=alpha, label_smoothing=smoothing,
                                          generator=mix_gen)  # fmt: skip
        else:
            manifold = AdversarialManifoldMixup(
                model, layers, num_classes, alpha=alpha, budget=config.adversarial_budget,
                steps=config.adversarial_steps, granularity=config.adversarial_granularity,
                label_smoothing=smoothing, generator=mix_gen,
            )  # fmt: skip

        def manifold_mix(x: Tensor, y: Tensor, t: Tensor | None) -> Tensor:
            eligible = curriculum.eligible(clock()) if curriculum is not None else None
            logits, targets, _ = manifold(x, y, eligible)
            return ce(logits, targets)

        return manifold_mix
    if config.mixup == "saliency":
        default = next((n for n in cast(tuple, raw.manifold_layers) if n != "input"), "")
        chosen = config.saliency_layer
        if chosen is not None and isinstance(raw, ImageClassifier):
            chosen = raw.layer(chosen)
        elif chosen is not None:
            chosen = check_layer(raw, chosen, "saliency_layer")
        saliency = SaliencyMix(model, chosen or default, num_classes, alpha=alpha,
                               label_smoothing=smoothing, generator=mix_gen)  # fmt: skip

        def saliency_mix(x: Tensor, y: Tensor, t: Tensor | None) -> Tensor:
            out = saliency(x, y)
            return ce(model(out.x), out.y)

        return saliency_mix
    if config.reads == "fusion":

        def fused(xi: Tensor, xt: Tensor, targets: Tensor) -> Tensor:
            """Fusion loss: modality dropout, then the fused cross-entropy plus the image/text consistency term."""
            keep_i, keep_t = modality_dropout(
                torch.ones(len(xi), 1), torch.ones(len(xi), 1), config.modality_dropout, mix_gen
            )
            logits, image_only, text_only = model(
                xi, xt, keep_i[:, 0].to(xi.device), keep_t[:, 0].to(xi.device), unimodal=True
            )
            loss = ce(logits, targets)
            if config.consistency_weight:
                loss = loss + config.consistency_weight * consistency_loss(image_only, text_only)
            return loss

        def cross_modal(x: Tensor, y: Tensor, t: Tensor | None) -> Tensor:
            assert t is not None
            perm = torch.randperm(len(x), generator=mix_gen)
            lam = sample_lambda(1, alpha, generator=mix_gen).expand(len(x))
            xi, xt, targets = cross_modal_mixup(x, t.to(x.device), y, lam.to(x.device), perm.to(x.device))
            return fused(xi, xt, targets)

        def fusion_plain(x: Tensor, y: Tensor, t: Tensor | None) -> Tensor:  # none, and mixgen (mixed in batches)
            assert t is not None
            return fused(x, t.to(x.device), soft_targets(y, num_classes, smoothing) if smoothing else y)

        return cross_modal if config.mixup == "cross-modal" else fusion_plain

    def plain(x: Tensor, y: Tensor, t: Tensor | None) -> Tensor:
        targets = soft_targets(y, num_classes, smoothing) if smoothing else y
        return ce(model(x), targets)

    return plain
