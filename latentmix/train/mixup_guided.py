"""Guided members of the mixup family: adversarial feature mixing, a depth curriculum for manifold mixup,
and saliency-guided CutMix. Same conventions as :mod:`latentmix.train.mixup`: explicit generators, the caller's
tensors untouched, ``ValueError`` on bad settings, label weights equal to the mixing weights actually used.

* :class:`AdversarialManifoldMixup` — manifold mixup whose mixing weights (one λ per sample, or one per sample
  and channel) are moved by ``steps`` of projected gradient *ascent* on the mixed loss, inside
  ``[λ₀ − budget, λ₀ + budget] ∩ [0, 1]`` around the sampled λ₀; the model then trains on that mix with soft
  labels weighted by the final λ (its mean over channels). Cost: ``steps`` extra forward passes and backward
  passes from the mixing layer to the weights only (no weight gradients), so about 1.5–2x a plain step for
  one ascent step. BatchNorm running statistics are restored after the ascent passes.
* :class:`DepthCurriculum` — which layers manifold mixup may mix at, as training goes on: a window of
  ``width`` layers that moves from the input towards the deepest named layer, linearly or in stages.
* :class:`SaliencyMix` — CutMix whose box is centred on the most salient point of the pasted image, the
  saliency being the mean absolute activation of one of the model's own layers (Attentive-CutMix style,
  without a second network), upsampled to the input: one partial forward pass without gradients. Label
  weights follow the pasted area after clipping. Batched: no per-sample Python loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from latentmix.train.mixup import (
    MixedBatch,
    apply_boxes,
    check_alpha,
    draw_lambdas,
    hidden_state,
    hook_on_hidden,
    mix_permuted,
    mix_tensors,
    soft_targets,
)
from latentmix.utils.validation import int_at_least

GRANULARITIES = ("sample", "channel")
SCHEDULES = ("linear", "step")


def _modules(model: nn.Module, layers: list[str], who: str) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    if not layers:
        raise ValueError(f"layers is empty: name at least one layer for {who}")
    unknown = [name for name in layers if name != "input" and name not in modules]
    if unknown:
        raise ValueError(f"unknown layer {unknown[0]!r} for {who}; the model's layers are e.g. "
                         f"{', '.join(n for n in list(modules)[1:9])}")  # fmt: skip
    return modules


def _pick(layers: list[str], generator: torch.Generator) -> str:
    return layers[int(torch.randint(len(layers), (1,), generator=generator, device=generator.device))]


@dataclass
class DepthCurriculum:
    """Eligible mixing layers by training step: a window of ``width`` consecutive ``layers`` (input first) whose
    start moves from the first layer at step 0 to the last window at ``total_steps``; ``"linear"`` moves it
    with the step, ``"step"`` in ``stages`` equal stages (default: one per window position)."""

    layers: list[str]
    total_steps: int
    schedule: str = "linear"
    width: int = 1
    stages: int | None = None

    def __post_init__(self) -> None:
        self.layers = list(self.layers)
        if not self.layers:
            raise ValueError("layers is empty: a depth curriculum needs the layers it moves through")
        int_at_least(self.total_steps, "total_steps", 1)
        int_at_least(self.width, "width", 1)
        if self.width > len(self.layers):
            raise ValueError(f"width {self.width} is more than the {len(self.layers)} layers")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.stages is not None:
            int_at_least(self.stages, "stages", 1)

    def eligible(self, step: int) -> list[str]:
        positions = len(self.layers) - self.width  # last window start
        progress = min(max(step, 0) / self.total_steps, 1.0)
        if self.schedule == "step":
            stages = self.stages or positions + 1
            stage = min(math.floor(progress * stages), stages - 1)
            progress = stage / max(stages - 1, 1)
        start = round(progress * positions)
        return self.layers[start : start + self.width]


class AdversarialManifoldMixup:
    """Manifold mixup with mixing weights chosen adversarially within a budget (see the module docstring).

    Args:
        model: the network (its forward runs ``steps + 1`` times per call).
        layers: eligible layer names (``"input"`` mixes the input); one is drawn per call.
        num_classes: K.
        alpha: λ₀ ~ Beta(α, α), one per sample.
        budget: how far (in λ) the ascent may move each weight from λ₀; 0 is plain manifold mixup.
        steps: ascent steps (signed gradient steps of ``budget`` for one step, ``2.5·budget/steps`` for more).
        granularity: ``"sample"`` (one λ per sample) or ``"channel"`` (one per sample and channel).
        label_smoothing: applied before mixing.
        generator: source of λ₀, the permutation and the layer.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: list[str],
        num_classes: int,
        *,
        alpha: float = 2.0,
        budget: float = 0.2,
        steps: int = 1,
        granularity: str = "sample",
        label_smoothing: float = 0.0,
        generator: torch.Generator | None = None,
    ):
        self.modules = _modules(model, layers, "adversarial mixing")
        self.alpha = check_alpha("alpha", alpha)
        if self.alpha == 0:
            raise ValueError("alpha must be > 0 for adversarial mixing")
        if not (isinstance(budget, (int, float)) and math.isfinite(budget) and 0 <= budget <= 1):
            raise ValueError(f"budget must be a number in [0, 1] (a distance in λ), got {budget!r}")
        self.steps = int_at_least(steps, "steps", 1)
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
        self.model, self.layers, self.num_classes = model, list(layers), num_classes
        self.budget, self.granularity, self.label_smoothing = float(budget), granularity, label_smoothing
        self.step_size = self.budget if self.steps == 1 else 2.5 * self.budget / self.steps
        self.generator = generator or torch.Generator().manual_seed(0)

    def _weights(self, h: Tensor, lam0: Tensor) -> Tensor:
        if self.granularity == "channel" and h.dim() >= 2:
            shape = (h.shape[0], h.shape[1]) + (1,) * (h.dim() - 2)
        else:
            shape = (h.shape[0],) + (1,) * (h.dim() - 1)
        return lam0.to(device=h.device, dtype=h.dtype).view((-1,) + (1,) * (len(shape) - 1)).expand(shape).clone()

    def _forward(self, x: Tensor, layer: str, mix) -> Tensor:
        if layer == "input":
            return self.model(mix(x))
        handle = self.modules[layer].register_forward_hook(hook_on_hidden(mix))
        try:
            return self.model(x)
        finally:
            handle.remove()

    def __call__(self, x: Tensor, targets: Tensor, layers: list[str] | None = None) -> tuple[Tensor, Tensor, str]:
        """Forward on the adversarial mix; returns ``(logits, soft_targets, layer)``."""
        y = soft_targets(targets.to(x.device), self.num_classes, self.label_smoothing)
        g = self.generator
        layer = _pick(list(layers) if layers else self.layers, g)
        perm = torch.randperm(x.shape[0], generator=g, device=g.device).to(x.device)
        lam0 = draw_lambdas(x.shape[0], self.alpha, "elem", g, x.device).float()
        box: dict[str, Tensor] = {}
        if self.budget > 0:
            buffers = {k: v.clone() for k, v in self.model.state_dict().items() if "running" in k or "batches" in k}
            held: dict[str, Tensor] = {}

            def ascent(h: Tensor) -> Tensor:
                if "lo" not in box:  # the budget around λ₀, shaped like the weights
                    w0 = self._weights(h, lam0)
                    box["lo"], box["hi"] = (w0 - self.budget).clamp(0, 1), (w0 + self.budget).clamp(0, 1)
                    box["w"] = w0
                held["w"] = box["w"].detach().requires_grad_(True)
                h = h.detach()  # the ascent moves the weights only: no gradients into the layers below
                return torch.lerp(h[perm], h, held["w"])

            for _ in range(self.steps):
                logits = self._forward(x, layer, ascent)
                label_w = held["w"].flatten(1).mean(1)
                loss = -(mix_tensors(y, perm, label_w) * torch.log_softmax(logits.float(), -1)).sum(-1).mean()
                (grad,) = torch.autograd.grad(loss, held["w"])
                box["w"] = torch.minimum(torch.maximum(held["w"].detach() + self.step_size * grad.sign(), box["lo"]),
                                         box["hi"])  # fmt: skip
            self.model.load_state_dict(buffers, strict=False)  # the ascent passes leave no trace in BatchNorm
        used: dict[str, Tensor] = {}

        def final(h: Tensor) -> Tensor:
            w = box.get("w", self._weights(h, lam0)).to(dtype=h.dtype)
            used["w"] = w
            if w.flatten(1).shape[1] == 1:
                return mix_permuted(h, perm, w.flatten())
            return torch.lerp(h[perm], h, w)

        logits = self._forward(x, layer, final)
        return logits, mix_tensors(y, perm, used["w"].flatten(1).mean(1).float()), layer


class _Stop(Exception):
    """Ends a forward pass once the saliency layer has run."""


class SaliencyMix:
    """CutMix with boxes centred on the pasted image's salient point (see the module docstring).

    Args:
        model: the network; its layer ``layer`` gives the saliency (mean absolute activation).
        layer: a 3-D or 4-D activation (e.g. the first conv block).
        num_classes: K.
        alpha: λ ~ Beta(α, α) per sample: the box covers about ``1 − λ`` of the image.
        label_smoothing: applied before mixing.
        generator: source of λ and the permutation.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        num_classes: int,
        *,
        alpha: float = 1.0,
        label_smoothing: float = 0.0,
        generator: torch.Generator | None = None,
    ):
        if layer == "input":
            raise ValueError("layer: saliency comes from one of the model's layers, not the input")
        self.module = _modules(model, [layer], "saliency")[layer]
        self.alpha = check_alpha("alpha", alpha)
        if self.alpha == 0:
            raise ValueError("alpha must be > 0 for saliency mixing")
        self.model, self.layer, self.num_classes, self.label_smoothing = model, layer, num_classes, label_smoothing
        self.generator = generator or torch.Generator().manual_seed(0)

    @torch.no_grad()
    def saliency(self, x: Tensor) -> Tensor:
        """(B, H, W) saliency of ``x``: the layer's mean absolute activation, upsampled to the input, in eval mode
        (no BatchNorm update), stopping the forward pass at the layer."""
        held: dict[str, Tensor] = {}

        def grab(module, inputs, output):
            held["h"] = hidden_state(output)
            raise _Stop

        handle = self.module.register_forward_hook(grab)
        was_training = self.model.training
        self.model.eval()
        try:
            self.model(x)
        except _Stop:
            pass
        finally:
            handle.remove()
            self.model.train(was_training)
        if "h" not in held:
            raise ValueError(f"layer {self.layer!r} did not run in the model's forward pass")
        h = held["h"].float().abs()
        if h.dim() == 3:  # tokens (B, N, D) of a vision transformer: the patch grid, leading class tokens dropped
            side = math.isqrt(h.shape[1])
            if side == 0:
                raise ValueError(f"layer {self.layer!r} gives no tokens; saliency needs a feature map")
            sal = h[:, h.shape[1] - side * side :].mean(2).view(len(h), 1, side, side)
        elif h.dim() == 4:
            sal = h.mean(1, keepdim=True)
        else:
            raise ValueError(f"layer {self.layer!r} gives shape {tuple(h.shape)}; saliency needs a (B, C, H, W) map "
                             "or (B, tokens, D) patch tokens")  # fmt: skip
        return nn.functional.interpolate(sal, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]

    def __call__(self, x: Tensor, targets: Tensor) -> MixedBatch:
        if x.dim() != 4:
            raise ValueError(f"saliency mixing needs images (B, C, H, W), got shape {tuple(x.shape)}")
        y = soft_targets(targets.to(x.device), self.num_classes, self.label_smoothing)
        g = self.generator
        n, (height, width) = x.shape[0], x.shape[-2:]
        perm = torch.randperm(n, generator=g, device=g.device).to(x.device)
        lam = draw_lambdas(n, self.alpha, "elem", g, "cpu").double()
        peak = self.saliency(x)[perm].flatten(1).argmax(1).cpu()  # the salient point of the image pasted in
        cy, cx = peak // width, peak % width
        cut = torch.sqrt(1.0 - lam)
        ch, cw = (cut * height).long(), (cut * width).long()
        y0, y1 = (cy - ch // 2).clamp(0, height), (cy + ch - ch // 2).clamp(0, height)
        x0, x1 = (cx - cw // 2).clamp(0, width), (cx + cw - cw // 2).clamp(0, width)
        boxes = torch.stack([y0, y1, x0, x1], dim=1)
        kept = (1.0 - ((y1 - y0) * (x1 - x0)).double() / (height * width)).float().to(x.device)
        return MixedBatch(apply_boxes(x, perm, boxes), mix_tensors(y, perm, kept), kept, perm, "saliency")


__all__ = ["GRANULARITIES", "SCHEDULES", "AdversarialManifoldMixup", "DepthCurriculum", "SaliencyMix"]
