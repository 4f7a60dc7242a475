"""Train a classifier on real data, optionally with a synthetic paired set and any mixup variant.

``train_classifier(TrainConfig(...))`` (``latentmix train``):

* data: ``digits`` (its fixed train/test split), an image folder with ``train/`` and ``test/``, or a
  feature file (``.npz`` with ``X_train``, ``y_train``, ``X_test``, ``y_test``) for an MLP;
* low-data runs: ``labels_per_class`` K examples per class drawn with ``seed``
  (:func:`latentmix.data.labelled_subset`); a **disjoint** validation set of the same size is drawn
  from the rest of the train split for early stopping and temperature fitting (the test split is
  used only for the final numbers);
* a synthetic set (``latentmix synthesize`` output) is mixed into every batch: each row is replaced
  by a synthetic sample with probability ``synthetic_ratio`` (DA-Fusion's scheme), with its soft
  label, optionally re-sharpened Diff-Mix style with ``gamma``;
* ``mixup``: ``none``, ``input``, ``cutmix``, ``manifold`` (hooks on the classifier's blocks), or
  ``cross-modal``: a :class:`~latentmix.classifiers.FusionClassifier` on image + caption embedding,
  both modalities and the labels mixed with one λ, modality dropout, and a consistency loss between
  the image-only and text-only predictions (on digits the captions name the label);
* accelerate places the model and splits evaluation across processes (``gather_for_metrics``);
* checkpoints (safetensors + JSON) at every evaluation when ``checkpoint_dir`` is set; a run
  restarted with the same settings resumes from the last one.

Reported: accuracy, NLL, Brier, ECE (15 bins) and the mean confidence − accuracy gap on the test
split, before and after temperature scaling fitted on the validation set (by default the MAP
temperature under a log-normal prior, :func:`latentmix.metrics.fit_temperature`).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from latentmix.atomic import atomic_save_safetensors, atomic_write_text
from latentmix.blend import soft_labels
from latentmix.classifiers import MLP, FusionClassifier, SmallCNN
from latentmix.data import SyntheticDataset, labelled_subset, load_dataset
from latentmix.interpolate import sample_lambda
from latentmix.metrics import DEFAULT_TEMPERATURE_PRIOR, classification_report, fit_temperature
from latentmix.mixup import (
    ManifoldMixup,
    Mixup,
    consistency_loss,
    cross_modal_mixup,
    modality_dropout,
    soft_cross_entropy,
    soft_targets,
)
from latentmix.train.common import has_accelerator, load_optimizer_tensors, optimizer_tensors

MIXUP_MODES = ("none", "input", "cutmix", "manifold", "cross-modal")
DEFAULT_ALPHA = {"input": 0.4, "cutmix": 1.0, "manifold": 2.0, "cross-modal": 0.4}


@dataclass
class TrainConfig:
    """Settings of ``latentmix train``."""

    data: str = "digits"  # "digits", an image folder with train/ and test/, or a .npz feature file
    labels_per_class: int | None = None  # K labelled examples per class (None: the whole train split)
    synthetic: str | None = None  # directory written by `latentmix synthesize`
    synthetic_ratio: float = 0.5  # probability that a batch row is a synthetic sample
    gamma: float | None = None  # re-sharpen synthetic labels: weight of b = (1 - λ)^gamma (None: as written)
    mixup: str = "none"  # none | input | cutmix | manifold | cross-modal (image + caption, fusion classifier)
    alpha: float | None = None  # Beta(alpha, alpha); default 0.4 input, 1.0 cutmix, 2.0 manifold
    label_smoothing: float = 0.0
    steps: int = 1500
    batch_size: int = 64
    lr: float = 2e-3  # AdamW, cosine decay
    weight_decay: float = 5e-4
    width: int = 32  # SmallCNN width / MLP hidden size / 8
    eval_every: int = 100
    patience: int = 6  # evaluations without a better validation NLL before stopping
    temperature_prior: float | None = DEFAULT_TEMPERATURE_PRIOR  # σ of the log-normal prior on T (None: plain NLL fit)
    seed: int = 0
    mixed_precision: str = "no"
    checkpoint_dir: str | None = None
    modality_dropout: float = 0.1  # cross-modal: drop the image or the text of a row with this probability each
    consistency_weight: float = 0.5  # cross-modal: weight of the image-only vs text-only agreement loss
    text_encoder: str = "all-MiniLM-L6-v2"  # cross-modal: embeds the real captions

    def validate(self) -> None:
        if self.mixup not in MIXUP_MODES:
            raise ValueError(f"mixup must be one of {', '.join(MIXUP_MODES)}, got {self.mixup!r}")
        for name in ("steps", "batch_size", "eval_every", "patience", "width"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.alpha is not None and not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if not 0 <= self.synthetic_ratio <= 1:
            raise ValueError(f"synthetic_ratio must be in [0, 1], got {self.synthetic_ratio}")
        if self.gamma is not None and not self.gamma > 0:
            raise ValueError(f"gamma must be > 0, got {self.gamma}")
        if not 0 <= self.modality_dropout <= 0.5:
            raise ValueError(f"modality_dropout must be in [0, 0.5], got {self.modality_dropout}")
        if self.temperature_prior is not None and not (
            math.isfinite(self.temperature_prior) and self.temperature_prior > 0
        ):
            raise ValueError(f"temperature_prior must be a number > 0 or None, got {self.temperature_prior!r}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")


@dataclass
class Split:
    x: Tensor
    y: Tensor
    t: Tensor | None = None  # text embeddings (cross-modal training)
    texts: list[str] | None = None


def low_data_split(labels: np.ndarray, labels_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(labelled, validation) indices of a low-data run: K per class each, disjoint, drawn with ``seed``."""
    labelled = labelled_subset(labels, labels_per_class, seed)
    return labelled, labelled_subset(labels, labels_per_class, seed + 10_000, exclude=labelled)


def _load_data(config: TrainConfig, arrays: dict | None = None) -> tuple[Split, Split, Split, int, bool]:
    """(train, val, test, num_classes, is_image)."""
    path = Path(config.data)
    if arrays is not None or path.suffix == ".npz":
        if arrays is None and not path.is_file():
            raise ValueError(f"feature file {path} does not exist")
        arrays = arrays if arrays is not None else np.load(path, allow_pickle=False)
        missing = [k for k in ("X_train", "y_train", "X_test", "y_test") if k not in arrays]
        if missing:
            raise ValueError(f"feature file {path} lacks {', '.join(missing)}")
        xtr, ytr = (
            torch.as_tensor(arrays["X_train"], dtype=torch.float32),
            torch.as_tensor(arrays["y_train"], dtype=torch.long),
        )
        test = Split(
            torch.as_tensor(arrays["X_test"], dtype=torch.float32), torch.as_tensor(arrays["y_test"], dtype=torch.long)
        )
        texts_tr = None
        is_image = False
    else:
        train_ds = load_dataset(config.data, split="train", image_size=8 if config.data == "digits" else 32)
        test_ds = load_dataset(config.data, split="test", image_size=train_ds.image_size, channels=train_ds.channels)
        if config.data != "digits" and getattr(test_ds, "root", None) == getattr(train_ds, "root", None):
            raise ValueError(f"data {config.data} needs train/ and test/ subfolders so the test split stays separate")
        xtr, ytr = train_ds.images(range(len(train_ds))), train_ds.labels
        test = Split(test_ds.images(range(len(test_ds))), test_ds.labels, texts=list(test_ds.texts))
        texts_tr = list(train_ds.texts)
        is_image = True
    if len(xtr) == 0 or len(test.x) == 0:
        raise ValueError("the train and test data must not be empty")
    num_classes = int(max(ytr.max(), test.y.max())) + 1
    if int(ytr.min()) < 0 or int(test.y.min()) < 0:
        raise ValueError("labels must be >= 0 for training")
    if config.labels_per_class is not None:
        labelled, val = low_data_split(ytr.numpy(), config.labels_per_class, config.seed)
    else:
        rng = np.random.default_rng(config.seed)
        order = rng.permutation(len(ytr))
        n_val = max(num_classes, len(ytr) // 10)
        val, labelled = np.sort(order[:n_val]), np.sort(order[n_val:])
    lt, vt = torch.from_numpy(labelled), torch.from_numpy(val)
    pick = (lambda idx: [texts_tr[i] for i in idx]) if texts_tr is not None else (lambda idx: None)  # noqa: E731
    return (
        Split(xtr[lt], ytr[lt], texts=pick(labelled)),
        Split(xtr[vt], ytr[vt], texts=pick(val)),
        test,
        num_classes,
        is_image,
    )


def _load_synthetic(config: TrainConfig, num_classes: int, sample_shape: tuple) -> Split | None:
    if config.synthetic is None:
        return None
    syn = SyntheticDataset(config.synthetic)
    if len(syn.class_names) != num_classes:
        raise ValueError(
            f"synthetic set {config.synthetic} has {len(syn.class_names)} classes, the data has {num_classes}"
        )
    x = syn.images(range(len(syn)))
    if tuple(x.shape[1:]) != tuple(sample_shape):
        raise ValueError(f"synthetic images are {tuple(x.shape[1:])}, the data's are {tuple(sample_shape)}")
    y = syn.soft_labels
    if config.gamma is not None:
        if bool((syn.label_a < 0).any()):
            raise ValueError("gamma needs the source labels (label_a / label_b) in the synthetic set's metadata.jsonl")
        onehot = lambda labels: nn.functional.one_hot(labels, num_classes).float()  # noqa: E731
        y = soft_labels(onehot(syn.label_a), onehot(syn.label_b), syn.lam, config.gamma)
    t = (
        torch.stack([syn.embeddings(i)["text_embedding"] for i in range(len(syn))])
        if config.mixup == "cross-modal"
        else None
    )
    return Split(x, y, t)


def _evaluate(accelerator, model, data: Split, num_classes: int, batch_size: int = 512) -> Tensor:
    """Logits for all rows, computed across processes and gathered in the original order.

    Each process takes a contiguous block (sizes differ by at most one); blocks are padded to the
    same length for the collective gather and the padding is dropped again.
    """
    model.eval()
    n, procs = len(data.x), accelerator.num_processes
    base, extra = divmod(n, procs)
    counts = [base + (1 if p < extra else 0) for p in range(procs)]
    start = sum(counts[: accelerator.process_index])
    mine = torch.arange(start, start + counts[accelerator.process_index])
    width = max(counts)
    outs = []
    with torch.inference_mode():
        for i in range(0, len(mine), batch_size):
            idx = mine[i : i + batch_size]
            inputs = [data.x[idx].to(accelerator.device)] + (
                [data.t[idx].to(accelerator.device)] if data.t is not None else []
            )
            outs.append(model(*inputs).float())
    local = torch.cat(outs) if outs else torch.empty(0, num_classes, device=accelerator.device)
    if len(local) < width:  # pad to the common length
        local = torch.cat([local, local.new_zeros(width - len(local), local.shape[1])])
    gathered = accelerator.gather(local).cpu().reshape(procs, width, -1)
    model.train()
    return torch.cat([gathered[p, : counts[p]] for p in range(procs)])


def _save_checkpoint(
    directory: Path, step: int, model, opt, best_state, best_nll: float, bad: int, gens: dict, config: TrainConfig
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v.detach().cpu() for k, v in best_state.items()})
    tensors.update(optimizer_tensors(opt, "opt"))
    for name, gen in gens.items():  # batch sampling, mixing, and the global RNG that dropout draws from
        tensors[f"rng.{name}"] = gen.get_state()
    tensors["rng.global"] = torch.get_rng_state()
    atomic_save_safetensors(directory / "state.safetensors", tensors)
    atomic_write_text(
        directory / "state.json",
        json.dumps({"config": asdict(config), "step": step, "best_nll": best_nll, "bad_evals": bad}),
    )


def _load_checkpoint(directory: Path, model, opt, gens: dict, config: TrainConfig):
    meta = json.loads((directory / "state.json").read_text())
    if meta["config"] != asdict(config):
        raise ValueError(f"checkpoint {directory} was made with other settings; use another checkpoint_dir")
    tensors = load_file(str(directory / "state.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    load_optimizer_tensors(opt, tensors, "opt")
    for name, gen in gens.items():
        gen.set_state(tensors[f"rng.{name}"])
    torch.set_rng_state(tensors["rng.global"])
    return meta["step"], best, meta["best_nll"], meta["bad_evals"]


def train_classifier(config: TrainConfig, *, quiet: bool = False, arrays: dict | None = None) -> dict:
    """Train, early-stop on validation NLL, fit a temperature, and report test metrics (a dict).

    ``arrays`` (``X_train``, ``y_train``, ``X_test``, ``y_test``) replaces ``config.data`` with
    in-memory feature vectors (what the scikit-learn-style estimator uses).
    """
    from accelerate import Accelerator

    config.validate()
    train, val, test, num_classes, is_image = _load_data(config, arrays)
    syn = _load_synthetic(config, num_classes, tuple(train.x.shape[1:]))
    if config.mixup == "cutmix" and not is_image:
        raise ValueError("mixup cutmix needs images; use input or manifold mixup for feature vectors")
    accelerator = Accelerator(cpu=not has_accelerator(), mixed_precision=config.mixed_precision)
    torch.manual_seed(config.seed)
    if config.mixup == "cross-modal":
        if not is_image or train.texts is None:
            raise ValueError(
                "mixup cross-modal needs images with captions (digits, an image folder or an imagefolder with texts)"
            )
        from latentmix.text import TextEncoder

        encoder = TextEncoder.from_pretrained(config.text_encoder)
        for split in (train, val, test):
            split.t = encoder.encode(split.texts)
        if syn is not None and syn.t.shape[1] != train.t.shape[1]:
            raise ValueError(
                f"synthetic text embeddings have {syn.t.shape[1]} dims, the text encoder gives {train.t.shape[1]}"
            )
        model = FusionClassifier(train.x.shape[1], train.t.shape[1], num_classes, config.width)
    elif is_image:
        model = SmallCNN(train.x.shape[1], num_classes, config.width)
    else:
        model = MLP(train.x[0].numel(), num_classes, config.width * 8)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed * 7919 + accelerator.process_index)
    mix_gen = torch.Generator().manual_seed(config.seed * 31 + 1 + accelerator.process_index)
    gens = {"batches": gen, "mixing": mix_gen}
    start, best_state, best_nll, bad = 0, copy.deepcopy(model.state_dict()), math.inf, 0
    ckpt = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    if ckpt is not None and (ckpt / "state.json").is_file():
        start, best_state, best_nll, bad = _load_checkpoint(ckpt, model, opt, gens, config)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s + start, config.steps) / config.steps))
    )
    model, opt = accelerator.prepare(model, opt)
    raw = accelerator.unwrap_model(model)
    alpha = config.alpha or DEFAULT_ALPHA.get(config.mixup, 1.0)
    mixer = None
    if config.mixup in ("input", "cutmix"):
        mixer = Mixup(
            num_classes,
            mixup_alpha=alpha if config.mixup == "input" else 0.0,
            cutmix_alpha=alpha if config.mixup == "cutmix" else 0.0,
            label_smoothing=config.label_smoothing,
            generator=mix_gen,
        )
    elif config.mixup == "manifold":
        mixer = ManifoldMixup(
            model,
            list(raw.manifold_layers),
            num_classes,
            alpha=alpha,
            label_smoothing=config.label_smoothing,
            generator=mix_gen,
        )

    bar = tqdm(range(start, config.steps), desc="train", disable=quiet or not accelerator.is_local_main_process)
    step = start
    for step in bar:
        idx = torch.randint(len(train.x), (config.batch_size,), generator=gen)
        x, y = train.x[idx], soft_targets(train.y[idx], num_classes)
        t = train.t[idx] if train.t is not None else None
        if syn is not None:
            use = torch.rand(config.batch_size, generator=gen) < config.synthetic_ratio
            sidx = torch.randint(len(syn.x), (int(use.sum()),), generator=gen)
            x, y = x.clone(), y.clone()
            x[use], y[use] = syn.x[sidx], syn.y[sidx]
            if t is not None:
                t = t.clone()
                t[use] = syn.t[sidx]
        x, y = x.to(accelerator.device), y.to(accelerator.device)
        with accelerator.autocast():
            if config.mixup == "cross-modal":
                perm = torch.randperm(len(x), generator=mix_gen)
                lam = sample_lambda(1, alpha, generator=mix_gen).expand(len(x))
                xi, xt, targets = cross_modal_mixup(x, t.to(x.device), y, lam.to(x.device), perm.to(x.device))
                keep_i, keep_t = modality_dropout(
                    torch.ones(len(x), 1), torch.ones(len(x), 1), config.modality_dropout, mix_gen
                )
                logits, image_only, text_only = model(
                    xi, xt, keep_i[:, 0].to(x.device), keep_t[:, 0].to(x.device), unimodal=True
                )
                loss = soft_cross_entropy(logits, targets) + config.consistency_weight * consistency_loss(
                    image_only, text_only
                )
            elif config.mixup == "manifold":
                logits, targets, _ = mixer(x, y)
            elif mixer is not None:
                out = mixer(x, y)
                logits, targets = model(out.x), out.y
            else:
                logits, targets = (
                    model(x),
                    soft_targets(y, num_classes, config.label_smoothing) if config.label_smoothing else y,
                )
            if config.mixup != "cross-modal":
                loss = soft_cross_entropy(logits, targets)
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        opt.step()
        sched.step()
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            val_logits = _evaluate(accelerator, model, val, num_classes)
            val_nll = float(nn.functional.cross_entropy(val_logits.double(), val.y))
            if val_nll < best_nll - 1e-4:
                best_nll, bad, best_state = (
                    val_nll,
                    0,
                    copy.deepcopy({k: v.detach().cpu() for k, v in raw.state_dict().items()}),
                )
            else:
                bad += 1
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", val_nll=f"{val_nll:.3f}")
            if ckpt is not None and accelerator.is_main_process:
                _save_checkpoint(ckpt, step + 1, raw, opt, best_state, best_nll, bad, gens, config)
            if bad >= config.patience:
                break
    raw.load_state_dict(best_state)
    val_logits = _evaluate(accelerator, model, val, num_classes)
    temperature = fit_temperature(val_logits, val.y, config.temperature_prior)
    test_logits = _evaluate(accelerator, model, test, num_classes)
    return {
        "test": classification_report(test_logits, test.y),
        "test_temperature_scaled": classification_report(test_logits, test.y, temperature),
        "temperature": temperature,
        "val_nll": best_nll,
        "steps_run": step + 1,
        "train_examples": len(train.x),
        "val_examples": len(val.x),
        "synthetic_examples": 0 if syn is None else len(syn.x),
        "config": asdict(config),
        "_model": raw,
        "_test_logits": test_logits,
        "_test_labels": test.y,
    }
