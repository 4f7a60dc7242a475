"""Metrics: backend quality (Fréchet distance, path length, class consistency) and classifier
quality (accuracy, NLL, Brier, ECE, confidence gap, temperature scaling)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy import linalg
from torch import Tensor

from latentmix.configs import DEFAULT_TEMPERATURE_PRIOR


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature vectors (N, D).

    ``|μa − μb|² + Tr(Σa + Σb − 2 (Σa Σb)^½)``, as in FID, computed in float64.
    """
    a, b = features_a.double().cpu().numpy(), features_b.double().cpu().numpy()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("need at least 2 feature vectors on each side")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # a near-singular product is regularised below, as in the FID reference code
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(covmean).all():
            offset = np.eye(len(cov_a)) * 1e-6
            covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def trimmed_mean(values: Tensor, trim: float = 0.01) -> float:
    """Mean after dropping the lowest and highest ``trim`` fraction (StyleGAN's PPL filtering)."""
    v = values.double().sort().values
    k = int(len(v) * trim)
    return float(v[k : len(v) - k].mean()) if len(v) > 2 * k else float(v.mean())


def monotone_fraction(probs: Tensor, tolerance: float = 0.01) -> float:
    """Fraction of rows of (P, T) that never rise by more than ``tolerance`` from one step to the next."""
    rises = probs[:, 1:] - probs[:, :-1]
    return float((rises <= tolerance).all(dim=1).float().mean())


# --- classification and calibration ------------------------------------------------------------


def _check_probs(probs: Tensor, labels: Tensor) -> None:
    if probs.dim() != 2 or labels.dim() != 1 or probs.shape[0] != labels.shape[0] or probs.shape[0] == 0:
        raise ValueError(
            f"need probs (N, K) and labels (N,) with N >= 1, got {tuple(probs.shape)} and {tuple(labels.shape)}"
        )


def accuracy(probs: Tensor, labels: Tensor) -> float:
    _check_probs(probs, labels)
    return float((probs.argmax(1) == labels).float().mean())


def nll(logits: Tensor, labels: Tensor) -> float:
    """Mean negative log-likelihood of the true class (from logits)."""
    _check_probs(logits, labels)
    return float(torch.nn.functional.cross_entropy(logits.double(), labels))


def brier(probs: Tensor, labels: Tensor) -> float:
    """Mean over samples of the squared error summed over classes (0 is perfect, 2 the worst)."""
    _check_probs(probs, labels)
    onehot = torch.nn.functional.one_hot(labels, probs.shape[1]).double()
    return float((probs.double() - onehot).pow(2).sum(1).mean())


def calibration_bins(probs: Tensor, labels: Tensor, n_bins: int = 15) -> tuple[Tensor, Tensor, Tensor]:
    """Top-label reliability bins: (accuracy, mean confidence, share of samples) per bin.

    Equal-width bins over [0, 1], binned as torchmetrics' ``CalibrationError`` does
    (``bucketize(right=True) - 1``; a confidence of exactly 1.0 falls in an extra last bin).
    """
    _check_probs(probs, labels)
    conf, pred = probs.double().max(1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    idx = torch.bucketize(conf, edges, right=True) - 1
    count = torch.zeros(n_bins + 1, dtype=torch.float64).scatter_add_(0, idx, torch.ones_like(conf))
    acc = torch.nan_to_num(torch.zeros_like(count).scatter_add_(0, idx, correct) / count)
    mean_conf = torch.nan_to_num(torch.zeros_like(count).scatter_add_(0, idx, conf) / count)
    return acc, mean_conf, count / count.sum()


def expected_calibration_error(probs: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """Top-label ECE with ``n_bins`` equal-width bins (torchmetrics' definition, norm l1)."""
    acc, conf, share = calibration_bins(probs, labels, n_bins)
    return float(((acc - conf).abs() * share).sum())


def confidence_gap(probs: Tensor, labels: Tensor) -> float:
    """Mean confidence minus accuracy: > 0 over-confident, < 0 under-confident (mixup's usual side)."""
    _check_probs(probs, labels)
    return float(probs.double().max(1).values.mean()) - accuracy(probs, labels)


def fit_temperature(
    logits: Tensor, labels: Tensor, prior_sigma: float | None = DEFAULT_TEMPERATURE_PRIOR, max_iter: int = 100
) -> float:
    """Post-hoc temperature scaling (Guo et al., 2017): the T > 0 for ``logits / T``.

    ``prior_sigma=None`` is Guo et al.'s fit, the T minimising the validation NLL. By default T is
    the maximum a posteriori estimate under a log-normal prior, ``log T ~ N(0, prior_sigma²)``:
    the summed NLL plus ``(log T)² / (2 σ²)``. On a few dozen validation examples the plain fit
    follows their luck — a validation set with fewer errors than usual sharpens the model, which
    then is over-confident on new data — while the prior's pull fades as the validation set grows,
    and a systematic miscalibration (mixup's under-confidence) still moves T far from 1.
    """
    _check_probs(logits, labels)
    if prior_sigma is not None and not (math.isfinite(prior_sigma) and prior_sigma > 0):
        raise ValueError(f"prior_sigma must be a finite number > 0 or None, got {prior_sigma!r}")
    logits = logits.detach().double()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        clamped = log_t.clamp(-3.0, 5.0)
        loss = torch.nn.functional.cross_entropy(logits / clamped.exp(), labels, reduction="sum")
        if prior_sigma is not None:
            loss = loss + clamped.pow(2).sum() / (2 * prior_sigma**2)
        loss = loss / len(labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().clamp(-3.0, 5.0).exp())  # T in [0.05, 148]: uninformative logits do not run off


def classification_report(logits: Tensor, labels: Tensor, temperature: float = 1.0, n_bins: int = 15) -> dict:
    """Accuracy, NLL, Brier, ECE, the confidence gap, balanced and worst-class accuracy of ``logits / temperature``."""
    scaled = logits.double() / temperature
    probs = scaled.softmax(1)
    return {
        "accuracy": accuracy(probs, labels),
        "nll": nll(scaled, labels),
        "brier": brier(probs, labels),
        "ece": expected_calibration_error(probs, labels, n_bins),
        "confidence_gap": confidence_gap(probs, labels),
        **per_class_accuracy(probs, labels),
    }


def per_class_accuracy(probs: Tensor, labels: Tensor) -> dict[str, float]:
    """Balanced accuracy (the mean of per-class recalls) and the worst class's accuracy, over the classes
    present in ``labels``."""
    labels = labels.long()
    hits = (probs.argmax(1) == labels).double()
    counts = torch.bincount(labels)
    present = counts > 0
    recall = torch.bincount(labels, weights=hits)[present] / counts[present]
    return {"balanced_accuracy": float(recall.mean()), "worst_class_accuracy": float(recall.min())}
