"""Each training step's batch: :class:`Batches` draws it (real rows, synthetic rows, MixGen pairs) from the
trainer's seeded generator, and :class:`BatchStream` streams it through a ``torch.utils.data.DataLoader`` whose
workers decode the synthetic images of each batch — the set itself is never held in memory
(:class:`~latentmix.train.classifier_data.LazyImages`).

The draws stay in the main process, in step order, so a batch is the same whatever the number of workers; the
loader only fetches what the plan names. Plans run ahead of training by the loader's prefetch, so each plan
carries the generator's state after it, and a checkpoint saves the state of the last batch *consumed*: a resumed
run continues with exactly the batches the uninterrupted run would have drawn.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from latentmix.configs import TrainConfig
from latentmix.data.augment import PairAugment
from latentmix.train.classifier_data import LazyImages, Split
from latentmix.train.mixup import mixgen, soft_targets


@dataclass
class Plan:
    """One batch before its synthetic images are fetched: the real rows (x, soft y, text embeddings t), which rows
    are synthetic (``use``) and which synthetic samples fill them (``sidx``)."""

    x: Tensor
    y: Tensor
    t: Tensor | None
    use: Tensor | None = None
    sidx: Tensor | None = None
    gen_state: Tensor | None = None  # the batch generator's state after this plan (set by BatchStream)


MIXGEN_SHARE = 0.25  # MixGen (Hao et al., 2023): the share of a batch's rows replaced by MixGen pairs


class Batches:
    """Draws each step's batch: real rows by index (transformed by ``augment``), some replaced by synthetic rows
    (``synthetic_ratio``, or the synthetic share of all rows with ``synthetic_pooled``: uniform draws from real and
    synthetic together); with ``mixup="mixgen"`` a quarter of the rows become MixGen pairs — two real images
    averaged (λ = 0.5), their captions concatenated, their labels shared half and half."""

    def __init__(
        self,
        config: TrainConfig,
        train: Split,
        syn: Split | None,
        num_classes: int,
        gen: torch.Generator,
        augment: PairAugment | None = None,
        encoder: Any = None,
    ):
        self.config, self.train, self.syn, self.num_classes, self.gen = config, train, syn, num_classes, gen
        self.augment = augment
        self.encoder = encoder  # embeds rewritten and concatenated captions (fusion models), each text once
        self.ratio = config.synthetic_ratio
        if syn is not None and config.synthetic_pooled:
            self.ratio = len(syn.x) / (len(syn.x) + len(train.x))

    def plan(self) -> Plan:
        """Every random draw of the next batch, its real rows assembled; the synthetic rows are named by index
        (:attr:`Plan.sidx`), their images fetched by :meth:`fill` (or by a loader's workers)."""
        config, train, syn, gen = self.config, self.train, self.syn, self.gen
        idx = torch.randint(len(train.x), (config.batch_size,), generator=gen)
        x, y = train.x[idx], soft_targets(train.y[idx], self.num_classes)
        t = train.t[idx] if train.t is not None else None
        wanted = self.augment is not None or config.mixup == "mixgen"  # the only readers of the batch's captions
        texts = [train.texts[i] for i in idx.tolist()] if wanted and train.texts is not None else None
        if self.augment is not None and texts is not None:
            factors = None if train.factors is None else [train.factors[i] for i in idx.tolist()]
            out = self.augment(x, texts, factors, generator=gen)
            x = out.images
            if self.augment.mode == "synchronized":
                texts = out.texts
                if t is not None and self.encoder is not None:
                    t = self.encoder.encode(texts)  # each caption, rewritten or not, is encoded once and cached
        if config.mixup == "mixgen" and texts is not None and t is not None and self.encoder is not None:
            x, y, t = self._mixgen(x, y, texts)
        if syn is None:
            return Plan(x, y, t)
        use = torch.rand(config.batch_size, generator=gen) < self.ratio
        sidx = torch.randint(len(syn.x), (int(use.sum()),), generator=gen)
        return Plan(x, y, t, use, sidx)

    def fill(self, plan: Plan, images: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """The batch of ``plan`` with its synthetic rows' ``images`` (``syn.x[plan.sidx]``) in place."""
        x, y, t = plan.x, plan.y, plan.t
        if plan.use is None or plan.sidx is None or self.syn is None:
            return x, y, t
        syn, use, sidx = self.syn, plan.use, plan.sidx
        x, y = x.clone(), y.clone()
        if len(sidx):
            assert images is not None
            x[use] = images.to(x.dtype)
        y[use] = syn.y[sidx]
        if t is not None and syn.t is not None:
            t = t.clone()
            t[use] = syn.t[sidx]
        return x, y, t

    def __call__(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """The next batch, its synthetic images decoded here (:class:`BatchStream` decodes them in workers)."""
        plan = self.plan()
        images = None if plan.sidx is None or self.syn is None or not len(plan.sidx) else self.syn.x[plan.sidx]
        return self.fill(plan, images)

    def _mixgen(self, x: Tensor, y: Tensor, texts: list[str]) -> tuple[Tensor, Tensor, Tensor]:
        assert self.encoder is not None
        chosen = torch.rand(len(x), generator=self.gen) < MIXGEN_SHARE
        partners = torch.randint(len(x), (len(x),), generator=self.gen)
        mixed, mixed_texts = mixgen(x, texts, partners)  # every row with its partner; the chosen ones are kept
        x = torch.where(chosen.view(-1, *[1] * (x.dim() - 1)).to(x.device), mixed, x)
        y = torch.where(chosen[:, None].to(y.device), 0.5 * (y + y[partners]), y)
        texts = [m if c else t for t, m, c in zip(texts, mixed_texts, chosen.tolist(), strict=True)]
        return x, y, self.encoder.encode(texts)


class _Images(torch.utils.data.Dataset):
    """Map-style view of a synthetic set's images for the loader's workers: item i is image i, decoded.

    Each process (a worker, or the main one without workers) keeps up to ``cache_bytes`` of the images it decoded,
    as the 8-bit values they were decoded from, so that an image drawn again — a run draws each one many times —
    is rebuilt with one division instead of a file read and PNG decode. A kept image gives back exactly the tensor
    its decode gave (checked when it is kept; a set whose images are not 8-bit is not kept)."""

    def __init__(self, images: LazyImages, cache_bytes: int = 0):
        self.dataset = images.dataset
        self.cache_bytes = int(cache_bytes)
        self._kept: dict[int, Tensor] = {}
        self._used = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tensor:
        index = int(index)
        kept = self._kept.get(index)
        if kept is not None:
            return kept.float() / 127.5 - 1.0  # the decoder's own conversion (latentmix.data.images.pil_to_tensor)
        image = self.dataset.load_image(index)
        if self._used + image.numel() <= self.cache_bytes:
            values = ((image + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
            if torch.equal(values.float() / 127.5 - 1.0, image):
                self._kept[index] = values
                self._used += values.numel()
            else:  # not 8-bit values: keep nothing
                self.cache_bytes = 0
        return image


def _stack(items: list[Tensor]) -> Tensor | None:
    return torch.stack(items) if items else None


class BatchStream:
    """The training batches of ``batches`` as an iterator: plans drawn in the main process, synthetic images
    decoded by ``workers`` loader processes (``pin_memory`` for a CUDA device), each keeping up to ``cache_bytes`` of
    decoded images (:class:`_Images`). :meth:`generator_states` gives
    the generators as a checkpoint must save them (the batch generator as of the last batch consumed)."""

    def __init__(
        self, batches: Batches, total: int, *, workers: int = 0, pin_memory: bool = False, cache_bytes: int = 0
    ):
        self.batches, self.total = batches, total
        self.workers, self.pin_memory, self.cache_bytes = workers, pin_memory, cache_bytes
        self.consumed: Tensor | None = None
        self._iter: Iterator | None = None

    def _plans(self, queue: collections.deque) -> Iterator[list[int]]:
        for _ in range(self.total):
            plan = self.batches.plan()
            plan.gen_state = self.batches.gen.get_state()
            queue.append(plan)
            yield [] if plan.sidx is None else plan.sidx.tolist()

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        syn = self.batches.syn
        queue: collections.deque = collections.deque()
        if syn is None or not isinstance(syn.x, LazyImages):  # nothing to decode: the plans are the batches
            for _ in self._plans(queue):
                plan = queue.popleft()
                self.consumed = plan.gen_state
                yield self.batches.fill(plan, None if plan.sidx is None else syn.x[plan.sidx] if syn else None)
            return
        loader = torch.utils.data.DataLoader(
            _Images(syn.x, self.cache_bytes),
            batch_sampler=self._plans(queue),
            num_workers=self.workers,
            pin_memory=self.pin_memory,
            collate_fn=_stack,
            persistent_workers=False,
            # the loader draws its workers' base seed when it starts: from its own generator, so that torch's
            # global one (which dropout draws from, and a checkpoint saves) is the same however a run started
            generator=torch.Generator().manual_seed(0),
        )
        for images in loader:
            plan = queue.popleft()
            self.consumed = plan.gen_state
            yield self.batches.fill(plan, images)

    def __call__(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """The next batch (what the training loop calls)."""
        if self._iter is None:
            self._iter = iter(self)
        return next(self._iter)

    def generator_states(self, gens: dict[str, torch.Generator]) -> dict[str, torch.Generator]:
        """``gens`` with the batch generator as of the last batch consumed (for a checkpoint)."""
        if self.consumed is None:
            return gens
        consumed = torch.Generator()
        consumed.set_state(self.consumed)
        return {**gens, "batches": consumed}

    def close(self) -> None:
        """Stop the loader's workers."""
        self._iter = None
