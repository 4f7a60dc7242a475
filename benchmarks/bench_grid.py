"""A 10 x 10 grid from the embedded VAE: batched decoding vs one decoder call per image.

Run: python benchmarks/bench_grid.py
Target (issue 2): batched decoding >= 5x faster than one decoder call per image.
"""

from __future__ import annotations

import torch
from _timing import best_of, report

from latentmix import interpolation_grid, interpolation_path, load_backend
from latentmix.data import DigitsDataset


def main() -> None:
    backend = load_backend("digits-vae")
    test = DigitsDataset("test")
    with torch.inference_mode():
        z = backend.encode(test.images(range(20)))
        path = interpolation_path(z[:10], z[10:], 10, "slerp").flatten(0, 1)  # 100 latents

        def batched():
            return backend.decode(path)

        def per_image():
            return torch.cat([backend.decode(path[i : i + 1]) for i in range(len(path))])

        torch.testing.assert_close(batched(), per_image())
        fast = best_of(batched, repeat=20)
        slow = best_of(per_image, repeat=5)
    whole = best_of(
        lambda: interpolation_grid(backend=backend, pairs=[(i, i + 10) for i in range(10)], steps=10), repeat=5
    )
    report(
        "grid",
        [
            {
                "case": "decode 10 x 10 grid",
                "batched_s": fast,
                "per_image_s": slow,
                "result": f"{slow / fast:.1f}x faster",
                "target": ">= 5x faster",
            },
            {
                "case": "interpolation_grid end to end (encode 20, walk, decode 100)",
                "batched_s": whole,
                "per_image_s": float("nan"),
                "result": "-",
                "target": "-",
            },
        ],
    )


if __name__ == "__main__":
    main()
