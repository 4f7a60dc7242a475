"""The computing half of paired synthesis: encode the source data once, then make any shard of samples.

:class:`SourceData` holds what every shard needs (image latents, sentence embeddings, one-hot labels and
the caption bank of the source split, computed once); :func:`make_shard` turns a range of sample indices
into blended rows, tensors and decoded images — a pure function of (config, shard), which is what makes a
synthetic set independent of batch size, process count and resume point. :mod:`latentmix.jobs.synthesize`
writes the shards; the benchmarks call these directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from latentmix.backends import CallOptions, LatentBackend, mix_conditions
from latentmix.configs import SynthesisConfig
from latentmix.configs.synthesis import DEFAULT_SAMPLES
from latentmix.data import ImageTextDataset, Subset, labelled_subset, load_dataset, load_matching
from latentmix.data.factor_captions import FactorCaptioner
from latentmix.data.prompts import PromptBook, read_prompt_file
from latentmix.data.synthetic import EMBEDDING_FIELDS, image_path, sample_id
from latentmix.data.text import TextEncoder
from latentmix.jobs.claims import SourceCache
from latentmix.latent.blend import Blend, CaptionBank, Pairs, blend, soft_labels
from latentmix.latent.pairing import Pairing, choose, sample_lambdas, sample_noise
from latentmix.utils.viz import to_uint8

ENCODE_CHUNK = 256


def _low_data_draw(config: SynthesisConfig, labels: np.ndarray) -> np.ndarray:
    assert config.labels_per_class is not None
    return labelled_subset(labels, config.labels_per_class, config.subset_seed, imbalance_ratio=config.imbalance_ratio)


def source_labels(config: SynthesisConfig) -> np.ndarray:
    """Labels of the examples a synthesis run blends: its split, and its low-data draw (no pixels are decoded;
    the image size passed only spares a mixed-size folder the question of which size to load at)."""
    labels = load_dataset(config.data, split=config.split, image_size=8).labels.numpy()
    return labels[_low_data_draw(config, labels)] if config.labels_per_class is not None else labels


class SourceData:
    """Encoded source data: latents, text embeddings, one-hot labels, captions, prompts — computed once.

    Latents: with ``noise="inversion"`` each source inverted to every strength of the run (``latents_at``); with
    ``noise="random"`` the first stage's clean latents (``clean``), noised per sample in :func:`make_shard`.

    Args:
        config: the run's settings (data, split, low-data subset, encoder settings).
        backend: encodes the source images (conditioned on their prompts when text-conditioned).
        text_encoder: embeds the captions (sentence embeddings, blended with the same λ) and translation prompts.
        quiet: hide the progress bar.
        backend_name: how the run names the backend (for messages; default: ``config.backend``).
        cache: where the processes of a run share the encoded sources (:class:`~latentmix.jobs.claims.SourceCache`;
            None: encode them all here).
        check: called with the source data before anything is encoded (a run's own checks, e.g. its pairing).
    """

    def __init__(
        self,
        config: SynthesisConfig,
        backend: LatentBackend,
        text_encoder: TextEncoder,
        quiet: bool,
        backend_name: str | None = None,
        cache: SourceCache | None = None,
        check: Callable[[ImageTextDataset], object] | None = None,
    ):
        self.dataset: ImageTextDataset = load_matching(
            config.data, config.split, backend.image_size, backend.image_channels, resize=config.resize,
            who=f"backend {backend_name or config.backend!r}",
            fix="fit a backend on this data (latentmix fit vae --data ...)",
        )  # fmt: skip
        if config.labels_per_class is not None:
            self.dataset = Subset(self.dataset, _low_data_draw(config, self.dataset.labels.numpy()))
        ds = self.dataset
        if len(ds) < 2:
            raise ValueError(
                f"data {config.data!r} ({config.split}) holds {len(ds)} example(s); need at least 2 to blend"
            )
        if not ds.class_names or bool((ds.labels < 0).any()):
            raise ValueError(
                f"data {config.data!r} has unlabelled examples; paired synthesis needs a label for every image"
            )
        _check_backend_takes(config, backend)
        self.text_encoder = text_encoder
        per_class = read_prompt_file(config.prompts) if config.prompts is not None else None
        self.book = PromptBook(ds, config.prompt_template, per_class, config.seed)
        #: each source's own prompt: what it is inverted under, and a blend's conditioning (its caption by default)
        self.prompts = self.book.prompts(np.arange(len(ds)))
        #: the backend's call options of the run, checked once: every encode here and every shard's decode;
        #: ``at_strength`` gives them at each strength of the run
        self.options = backend.call_options(CallOptions.from_settings(config))
        self.strengths = config.strengths
        self._at = {s: self.options if config.strength is None else backend.call_options(self.options, strength=s)
                    for s in self.strengths}  # fmt: skip
        self.noise = config.noise
        if check is not None:
            check(ds)

        def encode(start: int, options: CallOptions) -> Tensor:
            rows = range(start, min(start + ENCODE_CHUNK, len(ds)))
            if self.noise == "random":
                return backend.clean_latents(ds.images(rows)).float().cpu()
            cond = backend.condition([self.prompts[j] for j in rows])
            return backend.encode(ds.images(rows), cond=cond, options=options).float().cpu()

        chunks = range(0, len(ds), ENCODE_CHUNK)
        todo = [None] if self.noise == "random" else list(self.strengths)
        self.latents_at: dict[float | None, Tensor] = {}
        with torch.inference_mode():
            for s in todo:
                options = self.options if s is None else self._at[s]
                desc = "encode sources" if s in (None, 1.0) else f"encode sources at strength {s:g}"
                if cache is None:
                    self.latents_at[s] = torch.cat([encode(i, options) for i in tqdm(chunks, desc=desc, disable=quiet)])
                else:
                    with tqdm(total=len(chunks), desc=desc, disable=quiet, unit="chunk") as bar:

                        def encoded(c: int, options: CallOptions = options, bar: tqdm = bar) -> Tensor:
                            bar.update()
                            return encode(chunks[c], options)

                        name = "clean" if s is None else f"strength-{s:g}"
                        self.latents_at[s] = cache.chunks(name, len(chunks), encoded)
        #: the latents a knn pairing measures distance in (at the run's first strength, or clean)
        self.latents = self.latents_at[todo[0]]
        self.text_embeddings = text_encoder.encode(ds.texts)
        self.onehot = torch.nn.functional.one_hot(ds.labels, len(ds.class_names)).float()
        unique = sorted(set(ds.texts))
        self.bank = CaptionBank(unique, text_encoder.encode(unique))
        self.captioner: FactorCaptioner | None = None
        if config.caption == "factors" or (config.caption == "auto" and ds.factor_values is not None):
            self.captioner = FactorCaptioner(ds, config.caption_margin)

    def at_strength(self, strength: float) -> CallOptions:
        """The run's call options at ``strength`` (one of the run's strengths)."""
        return self._at[strength]

    def rows_latents(self, examples: np.ndarray, strengths: np.ndarray) -> Tensor:
        """Each example's latent: inverted to its sample's strength, or clean (noise random)."""
        if self.noise == "random":
            return self.latents_at[None][torch.from_numpy(examples)]
        out = torch.empty((len(examples), *self.latents.shape[1:]), dtype=self.latents.dtype)
        for s in np.unique(strengths):
            mask = strengths == s
            out[torch.from_numpy(mask)] = self.latents_at[float(s)][torch.from_numpy(examples[mask])]
        return out

    def side(self, idx: np.ndarray, strengths: np.ndarray | None = None) -> Pairs:
        t = torch.from_numpy(idx)
        latents = self.latents[t] if strengths is None else self.rows_latents(idx, strengths)
        return Pairs(latents, self.text_embeddings[t], self.onehot[t], [self.dataset.texts[i] for i in idx])


def _check_backend_takes(config: SynthesisConfig, backend: LatentBackend) -> None:
    """Settings that need a diffusion (or a text-conditioned) backend, refused by one that is not, before any work."""
    kind = f"{backend.backend_name!r} encodes with {backend.encoder_kind} encoding"
    if config.noise == "random" and "strength" not in backend.option_names:
        raise ValueError(f"noise: 'random' noises each source latent and samples it back (SDEdit), which needs a "
                         f"diffusion backend; {kind}")  # fmt: skip
    if config.strategy == "translate" and not backend.supports_text_condition:
        raise ValueError(f"strategy: translate draws a source under another class's prompt, which needs a "
                         f"text-conditioned backend; {backend.backend_name!r} is not")  # fmt: skip
    if not backend.supports_text_condition:
        for name in ("prompt_template", "prompts"):
            if getattr(config, name) is not None:
                raise ValueError(f"{name}: backend {backend.backend_name!r} is not text-conditioned; it takes no "
                                 "prompts")  # fmt: skip


@dataclass
class Shard:
    """One shard of synthetic samples: metadata rows, embeddings, images (N, H, W, C) uint8, ids — the kept
    ones — and how many the shard generated before a filter dropped some."""

    rows: list[dict]
    tensors: dict[str, Tensor]
    images: np.ndarray
    ids: list[str]
    generated: int


def _declared(model: Any, name: str) -> Any:
    """``model.name`` where the model's class declares it (a property of the reference classifiers), else None:
    asking a diffusers model for a config entry by attribute is deprecated (and warns)."""
    return getattr(model, name) if hasattr(type(model), name) else None


class SampleFilter(Protocol):
    """What keeps or drops decoded samples: :class:`BlendFilter`, :class:`~latentmix.jobs.align_filter.AlignFilter`."""

    def keep(self, images: Tensor, soft_labels: Tensor) -> Tensor: ...


class BlendFilter:
    """Keeps a blend when a classifier gives its dominant class (the argmax of its soft label) at least
    ``threshold`` probability (after the classifier's own temperature), e.g. a classifier fitted on the real
    labelled examples: blends that left their class are dropped.

    Args:
        classifier: a directory (``latentmix train --save-model``, ``fit reference-classifier``) or
            ``"reference"`` for the embedded digits classifier.
        threshold: the smallest probability of the dominant class that keeps a blend.
        class_names: the source data's classes, which the classifier must name in the same order.
        image_shape: (channels, side) of the decoded blends, which the classifier must take.
    """

    def __init__(
        self, classifier: str, threshold: float, class_names: list[str], image_shape: tuple[int, int], data: str
    ):
        from latentmix.classifiers.networks import load_classifier
        from latentmix.classifiers.reference import load_reference_classifier

        if classifier == "reference":
            if str(data) != "digits":
                raise ValueError(
                    "filter_classifier: 'reference' is the digits classifier; for other data pass a classifier "
                    "directory (latentmix train --save-model DIR, or latentmix fit reference-classifier)"
                )
            self.model = load_reference_classifier()
        else:
            self.model = load_classifier(classifier)
        config = self.model.config
        names = list(_declared(self.model, "class_names") or config.get("class_names") or [])
        if names != list(class_names):
            raise ValueError(
                f"filter_classifier {classifier}: it names the classes {names[:5]}…, the data {class_names[:5]}…"
            )
        shape = tuple(_declared(self.model, "image_shape") or config.get("image_shape") or ())[-2:]
        want = (image_shape[0], image_shape[1]) if len(shape) == 2 and shape[0] in (1, 3) else None
        if len(shape) == 2 and shape[0] in (1, 3) and tuple(shape) != tuple(image_shape):
            raise ValueError(f"filter_classifier {classifier}: it takes {shape} images, the blends are {want}")
        temperature = config.get("temperature", 1.0)
        temperature = 1.0 if temperature is None else temperature
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < math.inf:
            raise ValueError(
                f"filter_classifier {classifier}: its temperature is {temperature!r}; it must be a finite number > 0 "
                "(refit or re-save the classifier)"
            )
        broken = next((n for n, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())), None)
        if broken is not None:
            raise ValueError(
                f"filter_classifier {classifier}: its weight {broken!r} holds NaN or inf; it would keep no blend"
            )
        self.temperature = float(temperature)
        self.threshold = threshold

    def keep(self, images: Tensor, soft_labels: Tensor) -> Tensor:
        """A boolean mask over the batch: which blends the classifier agrees with."""
        with torch.inference_mode():
            probs = (self.model(images.float().cpu()).double() / self.temperature).softmax(1)
        dominant = soft_labels.argmax(1)
        return probs[torch.arange(len(dominant)), dominant] >= self.threshold


def shard_indices(shard: int, shard_size: int, n: int) -> np.ndarray:
    """The sample indices of ``shard`` in a run of ``n`` samples."""
    start = shard * shard_size
    return np.arange(start, min(start + shard_size, n))


def make_shard(
    shard: int,
    config: SynthesisConfig,
    src: SourceData,
    pairing: Pairing,
    backend: LatentBackend,
    method: str,
    blend_filter: SampleFilter | None = None,
    *,
    n: int | None = None,
) -> Shard:
    """Samples ``shard * shard_size …`` of the run (of ``n`` samples, default ``config.n``): pair (or pick), strength,
    λ, blend (one λ for latent, text and label), noise, decode — each a function of (seed, sample index)."""
    idx = shard_indices(shard, config.shard_size, n if n is not None else config.n or DEFAULT_SAMPLES)
    ia, ib = pairing.pairs(idx)
    table = np.asarray(src.strengths, dtype=np.float64)
    strength = table[choose(config.seed, idx, "strength", len(table))]
    if config.strategy == "augment":
        lam = np.ones(len(idx))
    elif config.strategy == "translate":
        lam = 1.0 - strength  # the weight of the source: Diff-Mix's label (1 - s^γ)·y_a + s^γ·y_b
    elif config.lam is not None:
        lam = np.full(len(idx), config.lam, dtype=np.float64)
    else:
        lam = sample_lambdas(config.seed, idx, config.alpha)
    prompts: list
    if config.strategy in ("augment", "translate"):
        prompts = src.book.prompts(ia if config.strategy == "augment" else ib, idx)
        mix = _one_source(config, src, ia, ib, lam, strength, prompts)
        cond = backend.condition(prompts)
    else:
        mix = blend(
            src.side(ia, strength),
            src.side(ib, strength),
            torch.from_numpy(lam),
            method=method,
            gamma=config.gamma,
            caption_bank=src.bank,
            allow_extrapolation=config.allow_extrapolation,
        )
        pa, pb = src.book.prompts(ia, idx), src.book.prompts(ib, idx)
        # a text-conditioned backend decodes under the blend of the two prompts' conditionings, with the same λ
        cond = mix_conditions(backend.condition(pa), backend.condition(pb), torch.from_numpy(1.0 - lam))
        prompts = [list(p) for p in zip(pa, pb, strict=True)]
    latents, decoded = _noise_and_decode(config, backend, src, idx, mix.latents, cond, strength)
    keep = np.ones(len(idx), dtype=bool)
    if blend_filter is not None:
        keep = blend_filter.keep(decoded, mix.soft_labels).numpy()
    images = to_uint8(decoded)[keep]
    ids = [sample_id(int(i)) for i in idx[keep]]
    kept = np.flatnonzero(keep)
    ds = src.dataset
    record_strength = "strength" in backend.option_names
    factor_captions = src.captioner is not None and config.strategy != "translate"
    rows = []
    for j, sid in zip(kept, ids, strict=True):
        soft = [round(float(v), 6) for v in mix.soft_labels[j]]
        text, extra = mix.captions[j], dict[str, Any]()
        a, b, w = int(ia[j]), int(ib[j]), float(lam[j])
        if factor_captions:
            assert src.captioner is not None
            if config.strategy != "augment":  # a variant keeps its source's caption
                text = src.captioner.caption(a, b, w, int(idx[j]))
            extra = {"nearest_text": mix.captions[j], "factors": src.captioner.factors(a, b, w)}
        if record_strength:
            extra.update({"strength": float(strength[j]), "noise": config.noise})
        if backend.supports_text_condition:
            extra["prompt"] = prompts[j]
        rows.append(
            {
                "file_name": image_path(shard, sid, config.image_format, config.set_format),
                "text": text,
                "composed_text": mix.composed_captions[j],
                "label": int(np.argmax(soft)),
                "soft_label": soft,
                "lambda": round(w, 6),
                "source_a": ds.ids[a],
                "source_b": None if config.strategy == "augment" else ds.ids[b],
                "label_a": int(ds.labels[a]),
                "label_b": int(ds.labels[b]),
                "id": sid,
                **extra,
            }
        )
    latent, text_embedding = EMBEDDING_FIELDS
    pick = torch.from_numpy(kept)
    tensors = {latent: latents.float().cpu()[pick], text_embedding: mix.text_embeddings.float().cpu()[pick]}
    return Shard(rows, tensors, images, ids, generated=len(idx))


def _one_source(
    config: SynthesisConfig,
    src: SourceData,
    ia: np.ndarray,
    ib: np.ndarray,
    lam: np.ndarray,
    strength: np.ndarray,
    prompts: list[str],
) -> Blend:
    """The samples of ``augment`` (a variant of source a: its caption, label and text embedding) and ``translate``
    (source a drawn under ``prompts``, b's class's: the prompt is the caption, the label moves toward b's class by
    the strength)."""
    t = torch.from_numpy
    latents = src.rows_latents(ia, strength)
    texts = src.dataset.texts
    if config.strategy == "augment":
        captions = [texts[a] for a in ia]
        composed = [f"a variant of {texts[a]} (strength {s:g})" for a, s in zip(ia, strength, strict=True)]
        return Blend(latents, src.text_embeddings[t(ia)], src.onehot[t(ia)], t(lam), captions, composed)
    composed = [f"{texts[a]} translated toward {p} (strength {s:g})" for a, p, s in zip(ia, prompts, strength,
                                                                                        strict=True)]  # fmt: skip
    labels = soft_labels(src.onehot[t(ia)], src.onehot[t(ib)], t(lam).float(), config.gamma)
    return Blend(latents, src.text_encoder.encode(prompts), labels, t(lam), list(prompts), composed)


def _noise_and_decode(
    config: SynthesisConfig,
    backend: LatentBackend,
    src: SourceData,
    idx: np.ndarray,
    latents: Tensor,
    cond: Tensor | None,
    strength: np.ndarray,
) -> tuple[Tensor, Tensor]:
    """The latents the decoder starts from — with ``noise`` random, the (blended) clean ones noised by each sample's
    own noise (SDEdit) — and their images, each group of samples at its strength (every sample of a group runs the
    same sampler steps)."""
    noise = sample_noise(config.seed, idx, tuple(latents.shape[1:])) if config.noise == "random" else None
    start = torch.empty_like(latents, dtype=torch.float32)
    decoded: Tensor | None = None
    for s in np.unique(strength):
        group = torch.from_numpy(np.flatnonzero(strength == s))
        part = latents[group].float()
        if noise is not None:
            part = backend.partly_noised(part, noise[group], float(s), src.options.num_inference_steps).cpu()
        start[group] = part
        part_cond = None if cond is None else cond[group.to(cond.device)]
        with torch.inference_mode():
            images = backend.decode(part.to(backend.device), cond=part_cond, options=src.at_strength(float(s)))
        if decoded is None:
            decoded = torch.empty((len(latents), *images.shape[1:]), dtype=images.dtype, device=images.device)
        decoded[group.to(images.device)] = images
    assert decoded is not None
    return start, decoded
