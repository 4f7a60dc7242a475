"""Joint blending of (image latent, text embedding, label) pairs with one shared λ.

Convention (the mixup one): λ is the weight of example **a**. A blend with λ = 0.7 is 70 % a:

* image latent: ``interpolate(z_a, z_b, t=1 - λ)`` with the backend's method (lerp or slerp);
* text embedding: slerp on the unit sphere for normalised sentence embeddings (lerp otherwise);
* soft label: ``λ·y_a + (1 − λ)·y_b``; with a sharpening exponent γ, Diff-Mix's
  ``(1 − s^γ)·y_a + s^γ·y_b`` where ``s = 1 − λ`` is the strength of the move towards b;
* captions: the caption in a bank nearest to the blended text embedding (cosine), and a
  composed caption naming both sources and their weights.

The same λ reaches every modality of a pair (``tests/latent/test_blend.py`` and, on disk,
``tests/jobs/test_synthesize.py`` check it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from latentmix.latent.interpolate import check_method, interpolate, sample_lambda


@dataclass
class Pairs:
    """One side (a or b) of a batch of pairs.

    Attributes:
        latents: (B, *latent_shape) image latents.
        text_embeddings: (B, D) sentence embeddings.
        labels: (B, K) one-hot or soft labels.
        texts: B captions.
    """

    latents: Tensor
    text_embeddings: Tensor
    labels: Tensor
    texts: list[str]

    def __len__(self) -> int:
        return self.latents.shape[0]


@dataclass
class Blend:
    """Blended pairs: every field comes from the same λ per pair."""

    latents: Tensor
    text_embeddings: Tensor
    soft_labels: Tensor
    lam: Tensor
    captions: list[str]
    composed_captions: list[str]


class CaptionBank:
    """Captions with their (normalised) embeddings; answers 'which caption is nearest?'."""

    def __init__(self, texts: list[str], embeddings: Tensor):
        if len(texts) != embeddings.shape[0] or not texts:
            raise ValueError(
                f"caption bank needs one embedding per caption, got {len(texts)} captions and {embeddings.shape[0]} "
                "embeddings"
            )
        self.texts = list(texts)
        self.embeddings = torch.nn.functional.normalize(embeddings.float(), dim=-1)

    def nearest(self, embeddings: Tensor) -> list[str]:
        sims = torch.nn.functional.normalize(embeddings.float(), dim=-1) @ self.embeddings.T
        return [self.texts[i] for i in sims.argmax(dim=1).tolist()]


def compose_caption(text_a: str, text_b: str, lam: float) -> str:
    """E.g. ``"a blend of a handwritten digit 3 (70%) and a handwritten digit 8 (30%)"``."""
    wa = round(100 * lam)
    return f"a blend of {text_a} ({wa}%) and {text_b} ({100 - wa}%)"


def soft_labels(labels_a: Tensor, labels_b: Tensor, lam: Tensor, gamma: float = 1.0) -> Tensor:
    """``(1 − s^γ)·y_a + s^γ·y_b`` with ``s = 1 − λ``; γ = 1 gives ``λ·y_a + (1 − λ)·y_b``."""
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    weight_b = (1.0 - lam.double()).clamp_min(0.0) ** gamma if gamma != 1.0 else 1.0 - lam.double()
    weight_b = weight_b.to(labels_a.dtype if labels_a.is_floating_point() else torch.float32)[:, None]
    return (1.0 - weight_b) * labels_a.float() + weight_b * labels_b.float()


def resolve_lambda(
    lam,
    n: int,
    *,
    alpha: float | None = None,
    generator: torch.Generator | None = None,
    allow_extrapolation: bool = False,
) -> Tensor:
    """λ as an (n,) float64 tensor from a scalar, a per-pair tensor, or Beta(alpha, alpha)."""
    if lam is None:
        if alpha is None:
            raise ValueError("give lam (a number or one per pair) or alpha (to draw λ ~ Beta(alpha, alpha))")
        return sample_lambda(n, alpha, generator=generator, dtype=torch.float64)
    lam = torch.as_tensor(lam, dtype=torch.float64).cpu()
    if lam.dim() == 0:
        lam = lam.expand(n)
    if lam.shape != (n,):
        raise ValueError(f"lam must be a number or have shape ({n},), got {tuple(lam.shape)}")
    if not bool(torch.isfinite(lam).all()):
        raise ValueError("lam must be finite")
    if not allow_extrapolation and bool(((lam < 0) | (lam > 1)).any()):
        bad = float(lam[(lam < 0) | (lam > 1)][0])
        raise ValueError(
            f"lam must be in [0, 1], got {bad:g} (pass allow_extrapolation=True to extrapolate on purpose)"
        )
    return lam


def blend(
    a: Pairs,
    b: Pairs,
    lam=None,
    *,
    alpha: float | None = None,
    generator: torch.Generator | None = None,
    method: str = "slerp",
    text_method: str = "slerp",
    gamma: float = 1.0,
    caption_bank: CaptionBank | None = None,
    allow_extrapolation: bool = False,
) -> Blend:
    """Blend each pair ``(a[i], b[i])`` with one shared λ[i] across latent, text and label.

    Args:
        a, b: the two sides, of equal length and matching shapes.
        lam: λ (weight of a): a number, or one per pair; or None to draw Beta(alpha, alpha).
        alpha, generator: for drawing λ.
        method: image-latent interpolator (``backend.default_method`` is the usual choice).
        text_method: text-embedding interpolator; slerp for normalised sentence embeddings.
        gamma: label sharpening exponent (Diff-Mix); 1 = linear labels.
        caption_bank: where nearest captions come from (default: the texts of a and b).
        allow_extrapolation: accept λ outside [0, 1].
    """
    check_method(method)
    check_method(text_method)
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"a and b must hold the same, non-zero number of pairs, got {len(a)} and {len(b)}")
    for field in ("latents", "text_embeddings", "labels"):
        sa, sb = getattr(a, field).shape, getattr(b, field).shape
        if sa != sb:
            raise ValueError(f"{field} of a and b differ in shape: {tuple(sa)} vs {tuple(sb)}")
    if len(a.texts) != len(a) or len(b.texts) != len(b):
        raise ValueError("texts: every pair needs a text on both sides")
    lam = resolve_lambda(lam, len(a), alpha=alpha, generator=generator, allow_extrapolation=allow_extrapolation)
    t = 1.0 - lam  # interpolate() converts t to each input's device and compute dtype
    latents = interpolate(a.latents, b.latents, t, method)
    text = interpolate(a.text_embeddings.float(), b.text_embeddings.float(), t, text_method)
    labels = soft_labels(a.labels, b.labels, lam.to(a.labels.device), gamma)
    bank = caption_bank or CaptionBank(a.texts + b.texts, torch.cat([a.text_embeddings, b.text_embeddings]))
    composed = [compose_caption(ta, tb, float(w)) for ta, tb, w in zip(a.texts, b.texts, lam.tolist(), strict=True)]
    return Blend(latents, text, labels, lam.float(), bank.nearest(text), composed)
