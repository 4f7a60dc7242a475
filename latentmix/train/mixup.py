"""The mixup family: input mixup, CutMix, manifold mixup, cross-modal mixup, MixGen.

In the spirit of timm's ``data/mixup.py`` — pure helpers first, then classes with full ``Args:`` —
without its weak spots: λ and permutations come from an explicit ``torch.Generator``; the caller's
tensors are never modified; bad settings raise ``ValueError``; odd batch sizes work (a random
permutation pairs the rows, not a flip); labels may be class indices, one-hot or soft.

Convention: ``x_mix = λ·x + (1 − λ)·x[perm]`` and ``y_mix = λ·y + (1 − λ)·y[perm]`` — one
permutation for inputs and labels. With CutMix, λ is corrected to the share of the image that was
**not** replaced after the box is clipped to the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from latentmix.latent.interpolate import sample_lambda
from latentmix.utils.validation import int_at_least

MODES = ("batch", "elem")


def soft_targets(targets: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """Class indices (B,), one-hot or soft labels (B, K) → float (B, K), optionally smoothed."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
    if targets.dim() == 1:
        if targets.is_floating_point():
            raise TypeError("class-index targets must be integers")
        if len(targets) and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
            bad = int(targets[(targets < 0) | (targets >= num_classes)][0])
            raise ValueError(f"label {bad} is outside the class range 0..{num_classes - 1}")
        y = torch.nn.functional.one_hot(targets.long(), num_classes).float()
    elif targets.dim() == 2:
        if targets.shape[1] != num_classes:
            raise ValueError(f"soft targets must have {num_classes} columns, got {targets.shape[1]}")
        y = targets.float()
    else:
        raise ValueError(f"targets must be (B,) indices or (B, K) soft labels, got shape {tuple(targets.shape)}")
    if smoothing:
        y = y * (1.0 - smoothing) + smoothing / num_classes
    return y


def soft_cross_entropy(logits: Tensor, targets: Tensor, class_weights: Tensor | None = None) -> Tensor:
    """Mean cross-entropy against soft targets (B, K); ``class_weights`` (K,) weight each class's term
    (for a one-hot target: the weighted cross-entropy of class re-weighting)."""
    terms = targets * torch.log_softmax(logits.float(), dim=-1)
    if class_weights is not None:
        terms = terms * class_weights
    return -terms.sum(-1).mean()


def draw_lambdas(n: int, alpha: float, mode: str, generator, device) -> Tensor:
    """``n`` mixing weights from Beta(α, α): one per row (``mode`` "elem"), or one for the batch ("batch")."""
    lam = sample_lambda(1 if mode == "batch" else n, alpha, generator=generator, device=device)
    return lam.expand(n) if mode == "batch" else lam


def mix_tensors(x: Tensor, perm: Tensor, lam: Tensor) -> Tensor:
    """``λ·x + (1 − λ)·x[perm]`` with one λ per row (broadcast over the other dims); a new tensor."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    if not x.is_floating_point():
        x = x.float()
    return torch.lerp(x[perm], x, lam.to(device=x.device, dtype=x.dtype).view(shape))  # one fused pass


class _PermuteRows(torch.autograd.Function):
    """``x[perm]`` for a *permutation* ``perm``. Its gradient is a gather by the inverse permutation;
    plain indexing back-propagates through a scatter-add, about 3x slower on CPU (measured on a
    128×32×32×32 activation), which is most of manifold mixup's extra cost."""

    @staticmethod
    def forward(ctx, x: Tensor, perm: Tensor) -> Tensor:
        ctx.save_for_backward(perm)
        return x[perm]

    @staticmethod
    def backward(ctx, grad: Tensor):
        (perm,) = ctx.saved_tensors
        return grad[torch.argsort(perm)], None


def mix_permuted(x: Tensor, perm: Tensor, lam: Tensor) -> Tensor:
    """:func:`mix_tensors` for a ``perm`` known to be a permutation (from ``torch.randperm``)."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    partner = _PermuteRows.apply(x, perm) if x.requires_grad else x[perm]
    return torch.lerp(partner, x, lam.to(device=x.device, dtype=x.dtype).view(shape))


def cutmix_boxes(height: int, width: int, lam: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Boxes (B, 4) = (y0, y1, x0, x1) covering about ``1 − λ`` of the image, clipped at the borders,
    and λ corrected to the share of the image outside the clipped box."""
    n = len(lam)
    cut = torch.sqrt(1.0 - lam.double().cpu())
    ch, cw = (cut * height).long(), (cut * width).long()
    cy = (torch.rand(n, generator=generator, device=generator.device if generator else "cpu").cpu() * height).long()
    cx = (torch.rand(n, generator=generator, device=generator.device if generator else "cpu").cpu() * width).long()
    y0, y1 = (cy - ch // 2).clamp(0, height), (cy + ch - ch // 2).clamp(0, height)
    x0, x1 = (cx - cw // 2).clamp(0, width), (cx + cw - cw // 2).clamp(0, width)
    corrected = 1.0 - ((y1 - y0) * (x1 - x0)).double() / (height * width)
    return torch.stack([y0, y1, x0, x1], dim=1), corrected.to(lam.dtype)


def apply_boxes(x: Tensor, perm: Tensor, boxes: Tensor) -> Tensor:
    """Paste ``x[perm]`` into ``x`` inside each row's box (vectorised masks); a new tensor."""
    h, w = x.shape[-2:]
    boxes = boxes.to(x.device)
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    inside = (
        (rows >= boxes[:, 0, None, None])
        & (rows < boxes[:, 1, None, None])
        & (cols >= boxes[:, 2, None, None])
        & (cols < boxes[:, 3, None, None])
    )
    return torch.where(inside[:, None], x[perm], x)


def hook_on_hidden(fn):
    """A forward hook that applies ``fn`` to a module's hidden state: the output itself, or the first element of a
    tuple output (transformers blocks that also return attention weights)."""

    def hook(module, inputs, output):
        if isinstance(output, tuple):
            return (fn(output[0]), *output[1:])
        return fn(output)

    return hook


def hidden_state(output):
    """The hidden state in a module's output (see :func:`hook_on_hidden`)."""
    return output[0] if isinstance(output, tuple) else output


@dataclass
class MixedBatch:
    """A mixed batch: inputs, soft targets, the λ per row, the permutation, and what was applied."""

    x: Tensor
    y: Tensor
    lam: Tensor
    perm: Tensor
    kind: str  # "mixup", "cutmix" or "none"


def check_alpha(name: str, alpha: float) -> float:
    """A Beta concentration ``alpha`` >= 0 (0 disables the mode), or a ValueError naming ``name``."""
    alpha = float(alpha)
    if not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (0 disables it), got {alpha}")
    return alpha


class Mixup:
    """Input mixup and CutMix on a batch, with soft targets.

    Args:
        num_classes: K, for index targets.
        mixup_alpha: λ ~ Beta(α, α) for mixup; 0 disables mixup.
        cutmix_alpha: λ ~ Beta(α, α) for CutMix; 0 disables CutMix.
        prob: probability of mixing a batch at all.
        switch_prob: with both enabled, probability of CutMix instead of mixup.
        mode: ``"batch"`` (one λ per batch) or ``"elem"`` (one λ per sample).
        label_smoothing: applied to the targets before mixing.
        generator: source of all randomness (λ, permutation, boxes, choices).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        mixup_alpha: float = 0.2,
        cutmix_alpha: float = 0.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        mode: str = "batch",
        label_smoothing: float = 0.0,
        generator: torch.Generator | None = None,
    ):
        int_at_least(num_classes, "num_classes", 2)
        self.mixup_alpha = check_alpha("mixup_alpha", mixup_alpha)
        self.cutmix_alpha = check_alpha("cutmix_alpha", cutmix_alpha)
        if self.mixup_alpha == 0 and self.cutmix_alpha == 0:
            raise ValueError("enable mixup_alpha or cutmix_alpha (both are 0)")
        for name, p in (("prob", prob), ("switch_prob", switch_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.num_classes, self.prob, self.switch_prob, self.mode = num_classes, prob, switch_prob, mode
        self.label_smoothing = label_smoothing
        self.generator = generator or torch.Generator().manual_seed(0)

    def _coin(self, p: float) -> bool:
        return bool(torch.rand(1, generator=self.generator, device=self.generator.device) < p)

    def __call__(self, x: Tensor, targets: Tensor) -> MixedBatch:
        if x.shape[0] != targets.shape[0]:
            raise ValueError(f"x and targets differ in batch size: {x.shape[0]} vs {targets.shape[0]}")
        y = soft_targets(targets.to(x.device), self.num_classes, self.label_smoothing)
        n = x.shape[0]
        perm = torch.randperm(n, generator=self.generator, device=self.generator.device).to(x.device)
        if n < 2 or not self._coin(self.prob):
            return MixedBatch(x, y, torch.ones(n, device=x.device), torch.arange(n, device=x.device), "none")
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or self._coin(self.switch_prob))
        if use_cutmix:
            if x.dim() != 4:
                raise ValueError(f"CutMix needs images (B, C, H, W), got shape {tuple(x.shape)}")
            lam = draw_lambdas(n, self.cutmix_alpha, self.mode, self.generator, "cpu")
            boxes, lam = cutmix_boxes(x.shape[-2], x.shape[-1], lam, self.generator)
            lam = lam.to(x.device).float()
            return MixedBatch(apply_boxes(x, perm, boxes), mix_tensors(y, perm, lam), lam, perm, "cutmix")
        lam = draw_lambdas(n, self.mixup_alpha, self.mode, self.generator, x.device).float()
        return MixedBatch(mix_tensors(x, perm, lam), mix_tensors(y, perm, lam), lam, perm, "mixup")


class ManifoldMixup:
    """Manifold mixup for any ``nn.Module``: mix hidden states at a layer drawn per batch.

    The named layers are hooked (no rewrite of the model). For each batch one eligible layer is
    drawn, its output is mixed with λ and a permutation that the targets share; with
    ``feature_cutmix_prob`` a box of a 4-D feature map is swapped instead (feature CutMix).

    Args:
        model: the network.
        layers: names of eligible submodules (``dict(model.named_modules())`` keys); ``"input"``
            mixes the input itself.
        num_classes: K, for index targets.
        alpha: λ ~ Beta(α, α).
        mode: ``"batch"`` or ``"elem"``.
        feature_cutmix_prob: probability of feature CutMix instead of mixing at a 4-D layer.
        label_smoothing: applied before mixing.
        generator: source of all randomness.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: list[str],
        num_classes: int,
        *,
        alpha: float = 2.0,
        mode: str = "batch",
        feature_cutmix_prob: float = 0.0,
        label_smoothing: float = 0.0,
        generator: torch.Generator | None = None,
    ):
        modules = dict(model.named_modules())
        if not layers:
            raise ValueError("layers is empty: name at least one layer to mix at")
        unknown = [name for name in layers if name != "input" and name not in modules]
        if unknown:
            raise ValueError(
                f"unknown layer {unknown[0]!r} for manifold mixup; layers are e.g. {', '.join(list(modules)[1:8])}"
            )
        self.alpha = check_alpha("alpha", alpha)
        if self.alpha == 0:
            raise ValueError("alpha must be > 0 for manifold mixup")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.model, self.layers, self.modules = model, list(layers), modules
        self.num_classes, self.mode, self.label_smoothing = num_classes, mode, label_smoothing
        self.feature_cutmix_prob = feature_cutmix_prob
        self.generator = generator or torch.Generator().manual_seed(0)

    def __call__(self, x: Tensor, targets: Tensor, layers: list[str] | None = None) -> tuple[Tensor, Tensor, str]:
        """Forward with mixing; returns ``(logits, soft_targets, layer)``. ``layers`` narrows the eligible layers
        for this call (a :class:`~latentmix.train.mixup_guided.DepthCurriculum`'s window)."""
        y = soft_targets(targets.to(x.device), self.num_classes, self.label_smoothing)
        n = x.shape[0]
        g = self.generator
        eligible = list(layers) if layers else self.layers
        unknown = [name for name in eligible if name != "input" and name not in self.modules]
        if unknown:
            raise ValueError(f"unknown layer {unknown[0]!r} for manifold mixup")
        layer = eligible[int(torch.randint(len(eligible), (1,), generator=g, device=g.device))]
        perm = torch.randperm(n, generator=g, device=g.device).to(x.device)
        lam = draw_lambdas(n, self.alpha, self.mode, g, x.device).float()
        cut = bool(torch.rand(1, generator=g, device=g.device) < self.feature_cutmix_prob)
        state = {}

        def mix(h: Tensor) -> Tensor:
            if cut and h.dim() == 4:
                boxes, state["lam"] = cutmix_boxes(h.shape[-2], h.shape[-1], lam.cpu(), g)
                return apply_boxes(h, perm, boxes)
            return mix_permuted(h, perm, lam)

        if layer == "input":
            logits = self.model(mix(x))
        else:
            handle = self.modules[layer].register_forward_hook(hook_on_hidden(mix))
            try:
                logits = self.model(x)
            finally:
                handle.remove()
        used = state.get("lam", lam).to(x.device).float()
        return logits, mix_tensors(y, perm, used), layer


def cross_modal_mixup(
    image: Tensor, text: Tensor, targets: Tensor, lam: Tensor, perm: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Mix image and text inputs (or features) of each pair and their soft targets with the same λ."""
    if not image.shape[0] == text.shape[0] == targets.shape[0] == len(lam):
        raise ValueError("image, text, targets and lam must have the same batch size")
    return mix_tensors(image, perm, lam), mix_tensors(text, perm, lam), mix_tensors(targets.float(), perm, lam)


def mixgen(images: Tensor, texts: list[str], perm: Tensor, lam: float = 0.5) -> tuple[Tensor, list[str]]:
    """MixGen (Hao et al., 2023): fixed-λ image blend and caption concatenation; labels untouched."""
    if len(texts) != images.shape[0]:
        raise ValueError(f"texts must have one caption per image, got {len(texts)} for {images.shape[0]}")
    lam_t = torch.full((images.shape[0],), float(lam), device=images.device)
    return mix_tensors(images, perm, lam_t), [f"{a} {texts[int(j)]}" for a, j in zip(texts, perm.tolist(), strict=True)]


def modality_dropout(
    image_features: Tensor, text_features: Tensor, p: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Zero the image or the text features of a row with probability ``p`` each (never both)."""
    if not 0.0 <= p <= 0.5:
        raise ValueError(f"p must be in [0, 0.5], got {p}")
    n = image_features.shape[0]
    u = torch.rand(n, generator=generator, device=generator.device if generator else "cpu").to(image_features.device)
    keep_image = (u >= p).to(image_features.dtype).view(-1, *([1] * (image_features.dim() - 1)))
    keep_text = ((u < p) | (u >= 2 * p)).to(text_features.dtype).view(-1, *([1] * (text_features.dim() - 1)))
    return image_features * keep_image, text_features * keep_text


def consistency_loss(logits_image_only: Tensor, logits_text_only: Tensor) -> Tensor:
    """Symmetric KL between image-only and text-only predictions of the same (mixed) pairs."""
    lp, lq = torch.log_softmax(logits_image_only.float(), -1), torch.log_softmax(logits_text_only.float(), -1)
    return 0.5 * ((lp.exp() * (lp - lq)).sum(-1) + (lq.exp() * (lq - lp)).sum(-1)).mean()
