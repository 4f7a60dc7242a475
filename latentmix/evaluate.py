"""``latentmix evaluate``: how good is a backend, measured the same way for every backend.

All numbers are on the digits **test** split (unseen by embedded backends), judged by the reference
classifier (``models/digits-classifier``, fitted on the train split):

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
* the norm of midpoints relative to their endpoints, to show whether lerp leaves the typical shell.

Text-conditioned backends (latent diffusion) are conditioned on each test image's caption; every
walk moves the conditioning with the same t as the latent (lerp), prior samples are generated from
"a handwritten digit {c}" (classes in turn), and the fraction the classifier assigns to
the prompted class is reported as ``text_conditional`` class consistency.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from latentmix.backends import LatentBackend, load_backend
from latentmix.data import DigitsDataset
from latentmix.interpolate import METHODS, interpolate, interpolation_path
from latentmix.metrics import frechet_distance, monotone_fraction, trimmed_mean
from latentmix.reference import load_reference_classifier


@dataclass
class EvalConfig:
    """Sizes of the evaluation (defaults: the numbers in BENCHMARKS.md)."""

    prior_samples: int = 1000  # decoded prior samples for the Fréchet distance
    intra_pairs_per_class: int = 30  # same-class pairs per class for midpoint consistency
    inter_paths: int = 200  # different-class paths for monotonicity
    path_steps: int = 9  # points per inter-class path
    ppl_pairs: int = 256  # pairs for the path length
    epsilon: float = 1e-4  # path-length step
    refine_steps: int = 200  # refinement steps for inversion backends
    num_inference_steps: int | None = None  # diffusion backends: DDIM steps (default: the backend's)
    guidance_scale: float | None = None  # diffusion backends: classifier-free guidance (default: the backend's)
    seed: int = 0

    def validate(self) -> None:
        for name, value in asdict(self).items():
            if name in ("epsilon", "seed", "guidance_scale") or (name == "num_inference_steps" and value is None):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "refine_steps" else 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not 0 < self.epsilon < 0.1:
            raise ValueError(f"epsilon must be in (0, 0.1), got {self.epsilon}")


PROMPT = "a handwritten digit {c}"


def evaluate_backend(
    backend: str | LatentBackend, config: EvalConfig | None = None, *, classifier=None, quiet: bool = False
) -> dict:
    """Measure a backend's reconstructions, samples and interpolation paths; return a JSON-able dict."""
    config = config or EvalConfig()
    config.validate()
    if isinstance(backend, str):
        backend = load_backend(backend)
    if (backend.image_channels, backend.image_size) != (1, 8):
        raise ValueError(
            f"evaluate judges 8x8 grayscale digits; backend {backend.backend_name!r} makes "
            f"{backend.image_channels}x{backend.image_size}x{backend.image_size} images"
        )
    clf = classifier or load_reference_classifier()
    rng = np.random.default_rng(config.seed)
    test, train = DigitsDataset("test"), DigitsDataset("train")
    x_test = test.images(range(len(test)))
    steps = tqdm(total=6, desc="evaluate", disable=quiet)
    sampling = backend.sampling_kwargs(config.num_inference_steps, config.guidance_scale)
    text = backend.supports_text_condition
    c_test = backend.encode_text(test.texts) if text else None

    def feats(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([clf.features(images[i : i + 512].float().cpu()) for i in range(0, len(images), 512)])

    def decode(latents: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        with torch.inference_mode():
            return backend.decode(latents, **({"cond": cond} if text else {}), **sampling).float().cpu()

    def encode(images: torch.Tensor, refine_steps: int) -> torch.Tensor:
        with torch.inference_mode():
            return backend.encode(
                images, **({"cond": c_test} if text else {}), **backend.encode_kwargs(refine_steps), **sampling
            )

    def walk(ia, ib, t, method: str):
        """Latents (and, for text-conditioned backends, conditionings) at t between test images."""
        z = interpolate(z_test[ia], z_test[ib], t, method)
        return z, (interpolate(c_test[ia], c_test[ib], t, "lerp") if text else None)

    def prior_samples(n: int, gen: torch.Generator):
        """Prior latents and, for text-conditioned backends, class prompts (class c for sample i % 10 == c)."""
        classes = torch.arange(n) % 10
        cond = backend.encode_text([PROMPT.format(c=c) for c in classes.tolist()]) if text else None
        return backend.sample(n, generator=gen), cond, classes

    report: dict = {
        "backend": backend.backend_name,
        "latent_shape": list(backend.latent_shape),
        "config": asdict(config),
    }

    # reconstruction
    recon: dict = {}
    start = time.perf_counter()
    z_enc = encode(x_test, 0)
    recon["encoder"] = {
        "mse": float((decode(z_enc, c_test) - x_test).pow(2).mean()),
        "seconds": round(time.perf_counter() - start, 3),
    }
    z_test = z_enc
    if backend.encoder_kind == "inversion" and config.refine_steps > 0:
        start = time.perf_counter()
        z_test = encode(x_test, config.refine_steps)
        recon["refined"] = {
            "mse": float((decode(z_test) - x_test).pow(2).mean()),
            "seconds": round(time.perf_counter() - start, 3),
            "steps": config.refine_steps,
        }
    if backend.encoder_kind == "ddim-inversion":
        recon["autoencoder"] = {"mse": float(backend.autoencoder.reconstruction_error(x_test).mean())}
    report["reconstruction"] = recon
    steps.update()

    # Fréchet distances
    f_test = feats(x_test)
    fd = {
        "real_train_vs_real_test": frechet_distance(feats(train.images(range(len(train)))), f_test),
        "reconstructions": frechet_distance(feats(decode(z_test, c_test)), f_test),
    }
    text_consistency = None
    if backend.latent_prior == "gaussian":
        gen = torch.Generator().manual_seed(config.seed)
        z_prior, c_prior, prior_classes = prior_samples(config.prior_samples, gen)
        samples = decode(z_prior, c_prior)
        fd["prior_samples"] = frechet_distance(feats(samples), f_test)
        if text:
            with torch.inference_mode():
                text_consistency = float((clf(samples).argmax(1) == prior_classes).float().mean())
    pa, pb = rng.integers(0, len(test), size=(2, 1000))
    keep = pa != pb
    for method in METHODS:
        fd[f"midpoints_{method}"] = frechet_distance(feats(decode(*walk(pa[keep], pb[keep], 0.5, method))), f_test)
    report["frechet_distance"] = fd
    steps.update()

    # class consistency
    labels = test.labels.numpy()
    ia, ib, cls = [], [], []
    for c in range(10):
        members = np.flatnonzero(labels == c)
        for _ in range(config.intra_pairs_per_class):
            a, b = rng.choice(members, size=2, replace=False)
            ia.append(a), ib.append(b), cls.append(c)
    ca = rng.integers(0, 10, config.inter_paths)
    cb = (ca + rng.integers(1, 10, config.inter_paths)) % 10
    ja = np.array([rng.choice(np.flatnonzero(labels == c)) for c in ca])
    jb = np.array([rng.choice(np.flatnonzero(labels == c)) for c in cb])
    consistency: dict = {} if text_consistency is None else {"text_conditional": text_consistency}
    for method in METHODS:
        with torch.inference_mode():
            pred = clf(decode(*walk(ia, ib, 0.5, method))).argmax(1).numpy()
        consistency[f"intra_class_midpoints_{method}"] = float((pred == np.array(cls)).mean())
        path = interpolation_path(z_test[ja], z_test[jb], config.path_steps, method)
        cond = interpolation_path(c_test[ja], c_test[jb], config.path_steps, "lerp").flatten(0, 1) if text else None
        with torch.inference_mode():
            probs = clf(decode(path.flatten(0, 1), cond)).softmax(1).reshape(len(ja), config.path_steps, 10)
        source = probs[torch.arange(len(ja)), :, torch.from_numpy(ca)]
        consistency[f"inter_class_monotone_{method}"] = monotone_fraction(source)
    report["class_consistency"] = consistency
    steps.update()

    # path length (float64) and midpoint norms
    backend.to(dtype=torch.float64)
    clf64 = clf.double()
    try:
        ppl: dict = {}
        gen = torch.Generator().manual_seed(config.seed + 1)
        pa, pb = rng.integers(0, len(test), size=(2, config.ppl_pairs))
        t = torch.rand(config.ppl_pairs, generator=gen, dtype=torch.float64) * (1 - config.epsilon)
        sources = {
            "test_pairs": (
                z_test[pa].double(),
                z_test[pb].double(),
                *((c_test[pa], c_test[pb]) if text else (None, None)),
            )
        }
        if backend.latent_prior == "gaussian":
            za, ca, _ = prior_samples(config.ppl_pairs, gen)
            zb, cb, _ = prior_samples(config.ppl_pairs, gen)
            sources["prior_pairs"] = (za.double(), zb.double(), ca, cb)
        for name, (a, b, ca, cb) in sources.items():
            for method in METHODS:
                with torch.inference_mode():
                    f1, f2 = (
                        clf64.features(
                            backend.decode(
                                interpolate(a, b, tt, method),
                                **sampling,
                                **({"cond": interpolate(ca.double(), cb.double(), tt, "lerp")} if text else {}),
                            )
                        )
                        for tt in (t, t + config.epsilon)
                    )
                    ppl[f"{name}_{method}"] = trimmed_mean((f1 - f2).pow(2).sum(1) / config.epsilon**2)
        report["path_length"] = ppl
    finally:
        backend.to(dtype=torch.float32)
        clf.float()
    steps.update()
    norms = {}
    a, b = z_test[pa].float(), z_test[pb].float()
    ends = 0.5 * (a.flatten(1).norm(dim=1) + b.flatten(1).norm(dim=1))
    for method in METHODS:
        norms[method] = float((interpolate(a, b, 0.5, method).flatten(1).norm(dim=1) / ends).mean())
    report["midpoint_norm_ratio"] = norms
    steps.update(2)
    steps.close()
    return report


def format_report(report: dict) -> str:
    """A plain-text table of a report, one line per number."""
    lines = [
        f"backend {report.get('backend_name', report['backend'])} ({report['backend']}, latent {tuple(report['latent_shape'])})"
    ]
    for section in ("reconstruction", "frechet_distance", "class_consistency", "path_length", "midpoint_norm_ratio"):
        lines.append(f"{section}:")
        for key, value in report[section].items():
            if isinstance(value, dict):
                value = ", ".join(f"{k}={v:.4g}" for k, v in value.items())
            elif isinstance(value, float):
                value = f"{value:.4g}"
            lines.append(f"  {key:<32} {value}")
    return "\n".join(lines)
