"""Latent diffusion on the embedded digits-ldm: few-step inversion round trips, and DPM-Solver++ vs DDIM.

Run: python benchmarks/bench_inversion.py
Targets (issue 13):
* round trip (encode by inversion, decode by DDIM) of the test digits: 10 steps <= 1.2x the autoencoder's own
  error, 20 steps <= 1.1x, with the extra UNet calls stated (plain DDIM inversion: 2.04x and 1.43x);
* the faster sampler's quality vs steps for prior samples: Fréchet distance to the test digits in the reference
  classifier's features, the share the reference gives the prompted digit, and the distance to the same
  sampler's 200-step output.
"""

from __future__ import annotations

import argparse
import time

import torch
from _timing import report

from latentmix import load_backend
from latentmix.classifiers.metrics import frechet_distance
from latentmix.classifiers.reference import load_reference_classifier
from latentmix.data import load_dataset

INVERSIONS = [("ddim", None), ("fixed-point", 1), ("fixed-point", 2), ("fixed-point", 3), ("exact", None)]


def round_trips(ldm, x, cond) -> list[dict]:
    with torch.inference_mode():
        ae = float((ldm.autoencoder.reconstruct(x) - x).pow(2).mean())
    rows = []
    for steps in (10, 20):
        for inversion, iterations in INVERSIONS:
            start = time.perf_counter()
            with torch.inference_mode():
                z = ldm.encode(x, cond=cond, num_inference_steps=steps, inversion=inversion,
                               inversion_iterations=iterations)  # fmt: skip
                calls = ldm.last_encode_calls
                err = float((ldm.decode(z, cond=cond, num_inference_steps=steps) - x).pow(2).mean())
            rows.append(
                {
                    "steps": steps,
                    "inversion": inversion if iterations is None else f"{inversion} ({iterations} it.)",
                    "unet_calls_per_image": calls,
                    "extra_calls": calls - steps,
                    "mse": err,
                    "x_autoencoder": err / ae,
                    "seconds": time.perf_counter() - start,
                }
            )
            print(rows[-1], flush=True)
    return rows


def samplers(ldm, clf, test_images, n: int = 1000) -> list[dict]:
    """Prior samples from the same noise and prompts ("a handwritten digit c", c = i % 10) per sampler and steps:
    Fréchet distance to the test digits in the reference classifier's features, the share classified as the
    prompted digit, and the distance to the same sampler's 200-step output (how far from converged)."""
    gen = torch.Generator().manual_seed(0)
    z = ldm.sample(n, generator=gen)
    labels = torch.arange(n) % 10
    cond = ldm.condition([f"a handwritten digit {int(c)}" for c in labels])
    with torch.inference_mode():
        real = clf.features(test_images)
    rows = []
    for sampler in ("ddim", "dpm-solver"):
        with torch.inference_mode():
            converged = ldm.decode(z, cond=cond, num_inference_steps=200, sampler=sampler)
        for steps in (5, 10, 20, 50, 200):
            start = time.perf_counter()
            with torch.inference_mode():
                images = (
                    converged if steps == 200 else ldm.decode(z, cond=cond, num_inference_steps=steps, sampler=sampler)
                )
                seconds = time.perf_counter() - start
                accuracy = float((clf(images.float()).argmax(1) == labels).float().mean())
                fd = frechet_distance(clf.features(images.float()), real)
            rows.append(
                {
                    "sampler": sampler,
                    "steps": steps,
                    "frechet_to_test": fd,
                    "prompted_digit_accuracy": accuracy,
                    "rmse_to_own_200_steps": float((images - converged).pow(2).mean().sqrt()),
                    "seconds": seconds if steps < 200 else float("nan"),
                }
            )
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samplers-only", action="store_true")
    args = parser.parse_args()
    ldm = load_backend("digits-ldm")
    test = load_dataset("digits", split="test")
    x = test.images(range(len(test)))
    cond = ldm.condition(test.texts)
    if not args.samplers_only:
        report("inversion_round_trip", round_trips(ldm, x, cond))
    report("ldm_samplers", samplers(ldm, load_reference_classifier("digits-classifier"), x))


if __name__ == "__main__":
    main()
