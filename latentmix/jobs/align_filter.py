"""Judge filtering of synthetic samples by an image-text alignment model (``synthesize --filter-align DIR``).

A `latentmix fit align` model (or the embedded ``shapes-align``) embeds each decoded sample and one prompt per class
(``--filter-align-template``, default ``"a {class}"``). A sample is kept when the prompt of its dominant class (the
argmax of its soft label) is among the ``k`` prompts most similar to its image: the alignment model, used as a
zero-shot classifier, agrees with the label (the CLIP filtering of Real-Fake and of He et al.'s "Is synthetic data
from generative models ready for image recognition?"). Each sample is judged on its own image, so what is kept
depends on (seed, sample index) only, never on the shard size. ``manifest.json`` records the kept fraction.
"""

from __future__ import annotations

import torch
from torch import Tensor

from latentmix.classifiers.align import load_align_model


class AlignFilter:
    """Keeps a sample when its class's prompt is within the top ``k`` of every class's prompt for its image.

    Args:
        align: an alignment-model directory (``latentmix fit align``) or embedded name (``shapes-align``).
        k: how many of the most similar class prompts may hold the sample's class.
        template: the prompt of a class (``{class}`` is its name).
        class_names: the source data's classes.
        image_shape: (channels, side) of the decoded samples, which the model must take.
    """

    def __init__(self, align: str, k: int, template: str, class_names: list[str], image_shape: tuple[int, int]):
        from latentmix.data.text import TextEncoder

        self.model = load_align_model(align)
        if tuple(self.model.image_shape) != tuple(image_shape):
            raise ValueError(f"filter_align {align}: it reads {self.model.image_shape[0]}-channel "
                             f"{self.model.image_shape[1]}px images, the samples are {image_shape[0]}-channel "
                             f"{image_shape[1]}px")  # fmt: skip
        if not 1 <= k <= len(class_names):
            raise ValueError(f"filter_align_k must be in [1, {len(class_names)}] (the number of classes), got {k}")
        if "{class}" not in template:
            raise ValueError(f"filter_align_template must name {{class}}, got {template!r}")
        self.k = k
        self.prompts = [template.replace("{class}", c) for c in class_names]
        encoder = TextEncoder.from_pretrained(self.model.config.text_encoder)
        with torch.inference_mode():
            self.texts = self.model.embed_texts(encoder.encode(self.prompts)).float()  # (C, E)

    def keep(self, images: Tensor, soft_labels: Tensor) -> Tensor:
        """A boolean mask over the batch: which samples the alignment model puts in their class's top k."""
        with torch.inference_mode():
            sims = self.model.embed_images(images.float().cpu()).float() @ self.texts.T  # (N, C)
        own = sims.gather(1, soft_labels.argmax(1, keepdim=True))
        rank = (sims > own).sum(1)  # classes strictly more similar; ties keep the sample
        return rank < self.k


class AllFilters:
    """Keeps a sample that every filter keeps."""

    def __init__(self, filters: list):
        self.filters = filters

    def keep(self, images: Tensor, soft_labels: Tensor) -> Tensor:
        mask = torch.ones(len(images), dtype=torch.bool)
        for f in self.filters:
            mask &= f.keep(images, soft_labels).cpu()
        return mask
