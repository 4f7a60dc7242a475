"""Robust accuracy of an image classifier: under FGSM and PGD attacks and under Gaussian noise and blur.

Inputs live in [-1, 1] (latentmix's image scale), so ε is a distance on that scale (0.1 here is 0.05 of the
[0, 1] range, about 13/255); perturbed images are clipped back to [-1, 1]. The attacks are white-box on the
model in eval mode, with gradients taken with respect to the inputs only; PGD starts from a uniform random
point in the ε-ball drawn from an explicit generator, so a report is reproducible.

:data:`DEFAULT_SETTINGS` are the strengths every training report states: FGSM and 10-step PGD at ε = 0.1,
Gaussian noise of σ = 0.2, Gaussian blur of σ = 1 pixel.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

DEFAULT_SETTINGS = {"eps": 0.1, "pgd_steps": 10, "noise_std": 0.2, "blur_sigma": 1.0}


def _check(value: float, name: str, *, positive: bool = False) -> float:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def _loss_grad(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    x = x.detach().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x).float(), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
    """One signed-gradient step of size ``eps`` that raises the loss, clipped to [-1, 1]."""
    _check(eps, "eps")
    return (x + eps * _loss_grad(model, x, y).sign()).clamp(-1, 1).detach()


def pgd(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int = 10, *, generator: torch.Generator | None = None
) -> Tensor:
    """Projected gradient ascent in the L∞ ball of radius ``eps`` (step ``2.5·eps/steps``, random start)."""
    _check(eps, "eps")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"pgd steps must be a positive int, got {steps!r}")
    start = torch.rand(x.shape, generator=generator, device=generator.device if generator else "cpu")
    adv = (x + eps * (2 * start.to(x.device, x.dtype) - 1)).clamp(-1, 1)
    step = 2.5 * eps / steps
    for _ in range(steps):
        adv = adv + step * _loss_grad(model, adv, y).sign()
        adv = torch.minimum(torch.maximum(adv, x - eps), x + eps).clamp(-1, 1).detach()
    return adv


def gaussian_noise(x: Tensor, std: float, *, generator: torch.Generator | None = None) -> Tensor:
    _check(std, "noise_std")
    noise = torch.randn(x.shape, generator=generator, device=generator.device if generator else "cpu")
    return (x + std * noise.to(x.device, x.dtype)).clamp(-1, 1)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of (N, C, H, W) images, kernel radius ``ceil(2σ)``, edges replicated."""
    _check(sigma, "blur_sigma", positive=True)
    radius = max(1, math.ceil(2 * sigma))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(x.dtype)
    c = x.shape[1]
    out = nn.functional.pad(x, (radius, radius, 0, 0), mode="replicate")
    out = nn.functional.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = nn.functional.pad(out, (0, 0, radius, radius), mode="replicate")
    return nn.functional.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def robustness_report(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float = DEFAULT_SETTINGS["eps"],
    pgd_steps: int = int(DEFAULT_SETTINGS["pgd_steps"]),
    noise_std: float = DEFAULT_SETTINGS["noise_std"],
    blur_sigma: float = DEFAULT_SETTINGS["blur_sigma"],
    batch: int = 512,
    seed: int = 0,
) -> dict[str, float]:
    """Accuracy of ``model`` on images ``x`` (N, C, H, W) in [-1, 1] with labels ``y``: clean, under FGSM and PGD
    at ``eps``, under Gaussian noise and blur. Keys name the setting (``"pgd10_eps0.1"``, ...)."""
    if x.dim() != 4:
        raise ValueError(f"robustness needs images (N, C, H, W), got shape {tuple(x.shape)}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    keys = ("clean", f"fgsm_eps{eps:g}", f"pgd{pgd_steps}_eps{eps:g}", f"noise{noise_std:g}", f"blur{blur_sigma:g}")
    hits = dict.fromkeys(keys, 0)
    try:
        for i in range(0, len(x), batch):
            xb, yb = x[i : i + batch].to(device).float(), y[i : i + batch].to(device)
            variants = {
                keys[0]: xb,
                keys[1]: fgsm(model, xb, yb, eps),
                keys[2]: pgd(model, xb, yb, eps, pgd_steps, generator=gen),
                keys[3]: gaussian_noise(xb, noise_std, generator=gen),
                keys[4]: gaussian_blur(xb, blur_sigma),
            }
            with torch.no_grad():
                for key, images in variants.items():
                    hits[key] += int((model(images).argmax(1) == yb).sum())
    finally:
        model.train(was_training)
    return {key: hits[key] / max(len(x), 1) for key in keys}


__all__ = ["DEFAULT_SETTINGS", "fgsm", "gaussian_blur", "gaussian_noise", "pgd", "robustness_report"]
