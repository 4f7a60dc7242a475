"""GAN inversion refinement: one batched optimisation of 256 images vs one image at a time.

Run: python benchmarks/bench_refine.py [BACKEND]   (default: digits-gan)
Target (issue 5): batched >= 10x faster than refining images one at a time, same steps.
"""

from __future__ import annotations

import sys
import time

import torch
from _timing import report

from latentmix import load_backend
from latentmix.data import DigitsDataset

STEPS = 50


def main(name: str = "digits-gan") -> None:
    backend = load_backend(name)
    x = DigitsDataset("test").images(range(256))
    with torch.inference_mode():
        z0 = backend.encode(x)
    start = time.perf_counter()
    batched = backend.refine(x, z0, STEPS)
    t_batched = time.perf_counter() - start
    start = time.perf_counter()
    single = torch.cat([backend.refine(x[i : i + 1], z0[i : i + 1], STEPS) for i in range(len(x))])
    t_single = time.perf_counter() - start
    diff = float((batched - single).abs().max())
    report(
        "refine",
        [
            {
                "case": f"refine 256 test digits, {STEPS} Adam steps",
                "batched_s": t_batched,
                "one_at_a_time_s": t_single,
                "result": f"{t_single / t_batched:.1f}x faster",
                "target": ">= 10x",
                "max |z_batched - z_single|": diff,
            }
        ],
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
