"""Metrics: backend quality (Fréchet distance, perceptual path length, class consistency)."""

from __future__ import annotations

import numpy as np
from scipy import linalg
from torch import Tensor


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
    covmean, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    if not np.isfinite(covmean).all():  # near-singular product: regularise as in the FID reference code
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
