"""Making the ``shapes`` splits: rendering speed (images per second) and the cached load against a render.

Run: python benchmarks/bench_shapes.py
Target (issue 11): generating the full split is fast (images per second reported) and cached — a cached
load is much faster than rendering again (the ratio below, measured in the same run).
"""

from __future__ import annotations

import os
import tempfile
import time

from _timing import report


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        os.environ["LATENTMIX_CACHE"] = cache  # a cold cache of our own, never the user's
        from latentmix.data.shapes import ShapesDataset

        rows = []
        for split, count in (("test", 2_000), ("train", 10_000)):
            start = time.perf_counter()
            ShapesDataset(split)
            render = time.perf_counter() - start
            start = time.perf_counter()
            ShapesDataset(split)
            cached = time.perf_counter() - start
            rows.append(
                {
                    "case": f"{split} split, {count:,} images 32x32 (render + captions; then from the cache)",
                    "render_s": render,
                    "images_per_s": count / render,
                    "cached_s": cached,
                    "result": f"cached load {render / cached:.1f}x faster",
                }
            )
    report("shapes", rows)


if __name__ == "__main__":
    main()
