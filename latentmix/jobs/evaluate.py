"""``latentmix evaluate``: how good is a backend, measured the same way for every backend.

All numbers are on the **test** split of the data (``--data``: the digits by default, ``shapes``, or a
labelled folder), judged by a reference classifier fitted on its train split (``--reference``: the embedded
``digits-classifier`` for the digits and ``shapes-classifier`` for shapes; for other data one fitted with
``latentmix fit reference-classifier --data D``, which must name the data's classes):

* reconstruction: per-pixel MSE of encode → decode and its time (for inversion backends: encoder
  only, and refined by optimisation);
* Fréchet distance in the classifier's 128-d feature space between real test images and decoded
  prior samples, interpolation midpoints (lerp and slerp) and reconstructions — with the distance
  between the real train and test splits as a yardstick of sampling noise (reconstructions of the
  test images themselves can fall below it);
* class consistency: the fraction of intra-class midpoints the classifier assigns to the shared
  class, and the fraction of inter-class paths along which the source class probability never rises
  (by more than 0.01);
* path length in the spirit of StyleGAN's PPL: squared feature distance between decodes at t and
  t + ε (ε = 1e-4) divided by ε², trimmed mean over 1–99 %, computed in float64;
* the norm of midpoints relative to their endpoints, to show whether lerp leaves the typical shell;
* frame spacing: the coefficient of variation of per-step feature distances along walks between test
  pairs, with uniform t and re-timed to even spacing (``walk_spacing``).

Latent diffusion inverts images by plain DDIM inversion or, with ``--inversion fixed-point|exact``, with
each step refined by fixed-point iteration; the report gives the UNet calls per image and the round trip's
error as a multiple of the autoencoder's own (``round_trip_ratio``).

Text-conditioned backends (latent diffusion) are conditioned on each test image's caption; every
walk moves the conditioning with the same t as the latent (lerp), prior samples are generated from the
data's own captions (the test captions of class c for sample i % K == c), and the fraction the
classifier assigns to the prompted class is reported as ``text_conditional`` class consistency. A backend
built on an autoencoder (``first_stage``) also reports that autoencoder's own reconstruction error.

Data with known factors (``shapes``) adds an ``attributes`` section (:mod:`latentmix.jobs.evaluate_attributes`):
attribute accuracy of reconstructions and of prompted samples (compositional: every factor a caption names
realised), single-factor paths (lerp and slerp), and latent arithmetic.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from latentmix.backends import CallOptions, LatentBackend, RunOptions, load_backend, mix_conditions
from latentmix.backends.runtime import square_only
from latentmix.classifiers.metrics import frechet_distance, monotone_fraction, trimmed_mean
from latentmix.classifiers.reference import load_reference_classifier, reference_for
from latentmix.configs import EvalConfig, backend_for
from latentmix.data import ImageTextDataset, Subset, load_matching, spread_indices
from latentmix.jobs.attributes import check_reference
from latentmix.jobs.keyframe_walk import decode_keyframe_walk, reference_features
from latentmix.latent.interpolate import METHODS, interpolate, interpolation_path

__all__ = ["EvalConfig", "EvalReport", "evaluate_backend", "format_report"]
TRAIN_LIMIT = 2000  # train images for the Fréchet yardstick (all of the digits' 1,437)


@dataclass
class _Context:
    """What every section of the report reads: the backend, the judge, the test data and its encodings."""

    backend: LatentBackend
    clf: Any  # the reference classifier: forward() logits, features() embeddings
    config: EvalConfig
    rng: np.random.Generator
    test: ImageTextDataset
    train: ImageTextDataset
    x_test: Tensor
    c_test: Tensor | None  # the test captions' conditioning (text-conditioned backends)
    options: CallOptions  # the sampler's settings (every decode, and the encodes of the attribute sections)
    inversion: CallOptions  # those and the inversion's (the test images' encodings)
    z_test: Tensor | None = None  # latents of the test images (refined for inversion backends)
    recon: Tensor | None = None  # their reconstructions
    norm_pairs: tuple[np.ndarray, np.ndarray] | None = None  # the path-length test pairs, reused for midpoint norms

    def feats(self, images: Tensor) -> Tensor:
        return reference_features(self.clf)(images)

    def decode(self, latents: Tensor, cond: Tensor | None = None, options: CallOptions | None = None) -> Tensor:
        """Decoded images (float32, CPU) with the evaluation's sampler settings (or ``options``)."""
        with torch.inference_mode():
            return self.backend.decode(latents, cond=cond, options=options or self.options).float().cpu()

    def encode(self, images: Tensor, refine_steps: int) -> Tensor:
        """The test images' latents, inverted as the evaluation says and refined ``refine_steps`` (GANs)."""
        with torch.inference_mode():
            options = self.inversion.replace(refine_steps=refine_steps)
            return self.backend.encode(images, cond=self.c_test, options=options)

    def walk(self, ia, ib, t, method: str) -> tuple[Tensor, Tensor | None]:
        """Latents (and conditionings) at t between test images ia and ib."""
        assert self.z_test is not None
        c = self.c_test
        cond = mix_conditions(None if c is None else c[ia], None if c is None else c[ib], t)
        return interpolate(self.z_test[ia], self.z_test[ib], t, method), cond

    @property
    def num_classes(self) -> int:
        return len(self.test.class_names)

    def prompts(self, classes: list[int]) -> list[str]:
        """The data's own captions as prompts: for the k-th request of class c, the k-th test caption of c."""
        by_class: dict[int, list[str]] = {}
        for text, label in zip(self.test.texts, self.test.labels.tolist(), strict=True):
            by_class.setdefault(label, []).append(text)
        seen: dict[int, int] = {}
        out = []
        for c in classes:
            pool = by_class.get(c) or [""]
            out.append(pool[seen.get(c, 0) % len(pool)])
            seen[c] = seen.get(c, 0) + 1
        return out

    def prior_samples(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor | None, Tensor]:
        """Prior latents and, for text-conditioned backends, class prompts (class c for sample i % K == c)."""
        classes = torch.arange(n) % self.num_classes
        texts = self.prompts(classes.tolist()) if self.backend.supports_text_condition else None
        return self.backend.sample(n, generator=gen), self.backend.condition(texts), classes


@dataclass
class EvalReport:
    """What :func:`evaluate_backend` measured.

    Attributes:
        backend: the backend's registered class (``"vae"``, ``"latent-diffusion"``, …).
        backend_name: how the run named it (an embedded name or a directory; the class for a loaded backend).
        latent_shape: the shape of one latent.
        config: the settings, JSON-ready.
        sections: each section's numbers by section name (``reconstruction``, ``frechet_distance``, …), in order.
    """

    backend: str
    backend_name: str
    latent_shape: list[int]
    config: dict[str, Any]
    sections: dict[str, dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``latentmix evaluate --json``)."""
        return {
            "backend": self.backend,
            "latent_shape": self.latent_shape,
            "config": self.config,
            **self.sections,
            "backend_name": self.backend_name,
        }


def evaluate_backend(config: EvalConfig | None = None, *, quiet: bool = False, **settings: Any) -> EvalReport:
    """Measure a backend's reconstructions, samples and interpolation paths.

    ``config`` is an :class:`~latentmix.configs.EvalConfig` (``settings`` override its fields); its ``backend``
    is a name, a directory or a loaded backend (default: the data's embedded one), its ``reference`` the judge
    (default: the embedded reference of the digits / shapes).
    """
    config = replace(config or EvalConfig(), **settings)
    config.validate()
    spec = backend_for(config.backend, config.data)
    backend = load_backend(spec, run=RunOptions.from_settings(config))
    square_only(backend, "evaluate", "the reference classifier judges the data's square images")
    name = backend.label
    shape = (backend.image_size, backend.image_channels)
    who, fix = f"backend {backend.backend_name!r}", "evaluate a backend fitted on this data"
    test = load_matching(config.data, "test", *shape, who=who, fix=fix, resize=config.resize)
    train = load_matching(config.data, "train", *shape, who=who, fix=fix, resize=config.resize)
    if not test.class_names or bool((test.labels < 0).any()):
        raise ValueError(f"data {config.data!r}: evaluate needs a label for every test image")
    if config.test_images is not None and config.test_images < len(test):
        test = Subset(test, spread_indices(len(test), config.test_images))
    options = backend.call_options(
        CallOptions(num_inference_steps=config.num_inference_steps, guidance_scale=config.guidance_scale)
    )
    _check_path_strength(backend, options, config, test)
    clf = _reference(config)
    check_reference(clf, test, where=f"reference {reference_for(config.reference, config.data)}")
    ctx = _Context(
        backend=backend,
        clf=clf,
        config=config,
        rng=np.random.default_rng(config.seed),
        test=test,
        train=train,
        x_test=test.images(range(len(test))),
        c_test=backend.condition(test.texts),
        options=options,
        inversion=backend.call_options(
            options, inversion=config.inversion, inversion_iterations=config.inversion_iterations
        ),
    )
    report = EvalReport(
        backend.backend_name, name, list(backend.latent_shape), asdict(replace(config, backend=name)), {}
    )
    sections: list[tuple[str, Any]] = [
        ("reconstruction", _reconstruction),
        ("frechet_distance", _frechet),
        ("class_consistency", _consistency),
        ("path_length", _path_length),
        ("midpoint_norm_ratio", _midpoint_norms),
    ]
    if config.spacing_pairs > 0:
        sections.append(("walk_spacing", _walk_spacing))
    if test.factor_values is not None and getattr(clf, "factors", None):  # a head per factor to judge with
        from latentmix.jobs.evaluate_attributes import attribute_report

        sections.append(("attributes", attribute_report))
    bar = tqdm(sections, desc="evaluate", disable=quiet)
    with backend.progress(not quiet):
        for section_name, section in bar:
            report.sections[section_name] = section(ctx, report.sections)
    return report


def _check_path_strength(backend: LatentBackend, options: CallOptions, config: EvalConfig, test: Any) -> None:
    """The partial single-factor walks (data with factors, backends that take a strength) must keep a step."""
    if test.factor_values is not None and "strength" in backend.option_names:
        backend.call_options(options, strength=config.path_strength, names={"strength": "path_strength"})


def _reference(config: EvalConfig) -> Any:
    """The reference classifier of ``config``: ``--reference``, or the embedded one for the digits / shapes."""
    return load_reference_classifier(reference_for(config.reference, config.data))  # a directory or an embedded name


def _reconstruction(ctx: _Context, report: dict) -> dict:
    """Per-pixel MSE of encode → decode and its time; refined inversion; the first stage's own error."""
    recon: dict = {}
    start = time.perf_counter()
    z_enc = ctx.encode(ctx.x_test, 0)
    ctx.recon = ctx.decode(z_enc, ctx.c_test)
    err = float((ctx.recon - ctx.x_test).pow(2).mean())
    recon["encoder"] = {"mse": err, "seconds": round(time.perf_counter() - start, 3)}
    calls = ctx.backend.last_encode_calls
    if calls is not None:  # diffusion: how the images were inverted, and at what cost
        recon["encoder"].update(inversion=ctx.config.inversion, unet_calls_per_image=calls)
    ctx.z_test = z_enc
    steps = ctx.config.refine_steps
    if ctx.backend.encoder_kind == "inversion" and steps > 0:
        start = time.perf_counter()
        ctx.z_test = ctx.encode(ctx.x_test, steps)
        ctx.recon = ctx.decode(ctx.z_test, ctx.c_test)
        err = float((ctx.recon - ctx.x_test).pow(2).mean())
        recon["refined"] = {"mse": err, "seconds": round(time.perf_counter() - start, 3), "steps": steps}
    first_stage = ctx.backend.first_stage
    if first_stage is not None:
        ae = float(first_stage.reconstruction_error(ctx.x_test).mean())
        recon["autoencoder"] = {"mse": ae, "round_trip_ratio": recon["encoder"]["mse"] / max(ae, 1e-12)}
    return recon


def _walk_spacing(ctx: _Context, report: dict) -> dict:
    """Coefficient of variation of per-step feature distances along walks between test pairs, with uniform t
    and with even spacing (:mod:`latentmix.latent.spacing`); the backend's own interpolator."""
    assert ctx.z_test is not None
    n, frames = ctx.config.spacing_pairs, ctx.config.spacing_frames
    pa, pb = ctx.rng.integers(0, len(ctx.test), size=(2, n))
    keyframes = torch.stack([ctx.z_test[pa], ctx.z_test[pb]], dim=1)
    c = ctx.c_test
    conds = None if c is None else torch.stack([c[pa], c[pb]], dim=1)
    method = ctx.backend.default_method
    walk = decode_keyframe_walk(
        ctx.backend, keyframes, frames - 1, method, conds=conds, spacing="even", features=ctx.feats, options=ctx.options
    )
    assert walk.cv is not None and walk.cv_uniform is not None
    return {
        "method": method,
        "pairs": n,
        "frames": frames,
        "cv_uniform": float(walk.cv_uniform.mean()),
        "cv_even": float(walk.cv.mean()),
        "cv_even_max": float(walk.cv.max()),
    }


def _frechet(ctx: _Context, report: dict) -> dict:
    """Fréchet distances to the real test images (train vs test as the yardstick)."""
    assert ctx.z_test is not None
    f_test = ctx.feats(ctx.x_test)
    train = ctx.train
    step = max(1, len(train) // TRAIN_LIMIT)
    assert ctx.recon is not None
    fd = {
        "real_train_vs_real_test": frechet_distance(ctx.feats(train.images(range(0, len(train), step))), f_test),
        "reconstructions": frechet_distance(ctx.feats(ctx.recon), f_test),
    }
    if ctx.backend.latent_prior == "gaussian":
        z_prior, c_prior, prior_classes = ctx.prior_samples(
            ctx.config.prior_samples, torch.Generator().manual_seed(ctx.config.seed)
        )
        samples = ctx.decode(z_prior, c_prior)
        fd["prior_samples"] = frechet_distance(ctx.feats(samples), f_test)
        if c_prior is not None:
            with torch.inference_mode():
                agree = float((ctx.clf(samples).argmax(1) == prior_classes).float().mean())
            report.setdefault("_text_conditional", agree)
    pa, pb = ctx.rng.integers(0, len(ctx.test), size=(2, ctx.config.prior_samples))
    keep = pa != pb
    for method in METHODS:
        fd[f"midpoints_{method}"] = frechet_distance(
            ctx.feats(ctx.decode(*ctx.walk(pa[keep], pb[keep], 0.5, method))), f_test
        )
    return fd


def _consistency(ctx: _Context, report: dict) -> dict:
    """Intra-class midpoints given the shared class; inter-class paths whose source probability never rises."""
    assert ctx.z_test is not None
    rng, config, k = ctx.rng, ctx.config, ctx.num_classes
    labels = ctx.test.labels.numpy()
    ia, ib, cls = [], [], []
    present = [c for c in range(k) if int((labels == c).sum()) >= 2]
    for c in present:
        members = np.flatnonzero(labels == c)
        for _ in range(config.intra_pairs_per_class):
            a, b = rng.choice(members, size=2, replace=False)
            ia.append(a)
            ib.append(b)
            cls.append(c)
    classes = np.array(present)  # (the digits: 0..9, drawn exactly as before)
    ca = classes[rng.integers(0, len(classes), config.inter_paths)]
    cb = classes[(np.searchsorted(classes, ca) + rng.integers(1, len(classes), config.inter_paths)) % len(classes)]
    ja = np.array([rng.choice(np.flatnonzero(labels == c)) for c in ca])
    jb = np.array([rng.choice(np.flatnonzero(labels == c)) for c in cb])
    consistency: dict = {}
    if "_text_conditional" in report:
        consistency["text_conditional"] = report.pop("_text_conditional")
    captions = ctx.c_test
    for method in METHODS:
        with torch.inference_mode():
            pred = ctx.clf(ctx.decode(*ctx.walk(ia, ib, 0.5, method))).argmax(1).numpy()
        consistency[f"intra_class_midpoints_{method}"] = float((pred == np.array(cls)).mean())
        path = interpolation_path(ctx.z_test[ja], ctx.z_test[jb], config.path_steps, method)
        cond = None
        if captions is not None:
            cond = interpolation_path(captions[ja], captions[jb], config.path_steps, "lerp").flatten(0, 1)
        with torch.inference_mode():
            probs = ctx.clf(ctx.decode(path.flatten(0, 1), cond)).softmax(1)
        probs = probs.reshape(len(ja), config.path_steps, k)
        source = probs[torch.arange(len(ja)), :, torch.from_numpy(ca)]
        consistency[f"inter_class_monotone_{method}"] = monotone_fraction(source)
    return consistency


def _path_length(ctx: _Context, report: dict) -> dict:
    """Squared feature distance between decodes at t and t + ε, over ε², in float64 (StyleGAN's PPL)."""
    assert ctx.z_test is not None
    backend, config, clf = ctx.backend, ctx.config, ctx.clf
    backend.to(dtype=torch.float64)
    clf64 = clf.double()
    try:
        ppl: dict = {}
        gen = torch.Generator().manual_seed(config.seed + 1)
        pa, pb = ctx.rng.integers(0, len(ctx.test), size=(2, config.ppl_pairs))
        ctx.norm_pairs = (pa, pb)
        t = torch.rand(config.ppl_pairs, generator=gen, dtype=torch.float64) * (1 - config.epsilon)
        c = ctx.c_test
        test_pairs = (ctx.z_test[pa].double(), ctx.z_test[pb].double())
        sources = {"test_pairs": (*test_pairs, None if c is None else c[pa], None if c is None else c[pb])}
        if backend.latent_prior == "gaussian":
            za, ca, _ = ctx.prior_samples(config.ppl_pairs, gen)
            zb, cb, _ = ctx.prior_samples(config.ppl_pairs, gen)
            sources["prior_pairs"] = (za.double(), zb.double(), ca, cb)
        for name, (a, b, ca, cb) in sources.items():
            ca64 = None if ca is None else ca.double()
            cb64 = None if cb is None else cb.double()
            for method in METHODS:
                with torch.inference_mode():
                    f1, f2 = (
                        clf64.features(
                            backend.decode(
                                interpolate(a, b, tt, method), cond=mix_conditions(ca64, cb64, tt), options=ctx.options
                            )
                        )
                        for tt in (t, t + config.epsilon)
                    )
                    ppl[f"{name}_{method}"] = trimmed_mean((f1 - f2).pow(2).sum(1) / config.epsilon**2)
        return ppl
    finally:
        backend.to(dtype=torch.float32)
        clf.float()


def _midpoint_norms(ctx: _Context, report: dict) -> dict:
    """|midpoint| / mean(|a|, |b|): whether lerp leaves the typical shell."""
    assert ctx.z_test is not None and ctx.norm_pairs is not None
    pa, pb = ctx.norm_pairs
    a, b = ctx.z_test[pa].float(), ctx.z_test[pb].float()
    ends = 0.5 * (a.flatten(1).norm(dim=1) + b.flatten(1).norm(dim=1))
    return {method: float((interpolate(a, b, 0.5, method).flatten(1).norm(dim=1) / ends).mean()) for method in METHODS}


def format_report(report: EvalReport) -> str:
    """A plain-text table of a report, one line per number."""
    name, kind, shape = report.backend_name, report.backend, tuple(report.latent_shape)
    lines = [f"backend {name} ({kind}, latent {shape}) on {report.config.get('data', 'digits')}"]
    sections = (
        "reconstruction",
        "frechet_distance",
        "class_consistency",
        "path_length",
        "midpoint_norm_ratio",
        "walk_spacing",
    )
    for section in (*sections, "attributes"):
        if section not in report.sections:
            continue
        lines.append(f"{section}:")
        for key, value in report.sections[section].items():
            if isinstance(value, dict):
                value = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
            elif isinstance(value, float):
                value = f"{value:.4g}"
            lines.append(f"  {key:<32} {value}")
    return "\n".join(lines)
