"""Explore page latency (issue 15): slider move -> new image shown in a real headless Chromium.

    python benchmarks/bench_explore.py [--moves 40] [--backend digits-vae]

Serves the page for the embedded backend on a free port, picks two data set items as A and B, then moves the
t slider ``--moves`` times to new positions, each time timing from the slider's input event to the new frame
loaded in the page (request, queue, one-latent decode, PNG, fetch). Baseline in the same run: the library's own
``Explorer.frame`` (the one decode the page waits for) and the cold path a page without the cache would take
(encode both endpoints, then decode). Target: median page latency <= 250 ms with the embedded VAE on 2 cores.
Then the same moves while a thread decodes 64-frame strips without pause: the slider must keep answering.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import threading
import time

import torch

from latentmix.backends import load_backend
from latentmix.data import load_dataset
from latentmix.explore import Explorer, launch
from latentmix.explore.browser import headless_chromium, open_page, pick_thumbnail, slide


def _median_ms(times: list[float]) -> float:
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=40)
    parser.add_argument("--backend", default="digits-vae")
    parser.add_argument("--data", default="digits")
    args = parser.parse_args()

    backend = load_backend(args.backend)
    dataset = load_dataset(args.data, split="test")
    explorer = Explorer(backend, dataset, backend_spec=args.backend, data_spec=args.data, out_dir="/tmp/bench-explore")
    positions = [round((0.37 * k) % 1.0, 2) for k in range(1, args.moves + 1)]
    positions = [p if p != positions[i - 1] else round(1 - p, 2) for i, p in enumerate(positions)]

    a, b = explorer.from_index(0), explorer.from_index(5)
    library, cold = [], []
    for t in positions:
        start = time.perf_counter()
        explorer.frame(a, b, t)
        library.append(time.perf_counter() - start)
    for t in positions[:10]:
        fresh = Explorer(backend, dataset)
        start = time.perf_counter()
        fresh.frame(a, b, t)
        cold.append(time.perf_counter() - start)

    app = launch(explorer, block=False)
    page_times, busy_times, long_jobs = [], [], 0
    try:
        with headless_chromium() as browser:
            page = open_page(browser, app.local_url)
            pick_thumbnail(page, "A", 0)
            pick_thumbnail(page, "B", 5)
            slide(page, 0.5 if positions[0] != 0.5 else 0.45)
            page_times = [slide(page, t) for t in positions]
            # the same moves while a thread decodes 64-frame strips without pause (what a long job costs the CPU)
            stop = threading.Event()

            def strips() -> None:
                nonlocal long_jobs
                while not stop.is_set():
                    explorer.strip(explorer.from_index(1), explorer.from_index(2), 64)
                    long_jobs += 1

            worker = threading.Thread(target=strips, daemon=True)
            worker.start()
            busy_times = [slide(page, round(1 - t, 2)) for t in positions]
            stop.set()
            worker.join()
    finally:
        app.close()

    lib_ms, page_ms = _median_ms(library), _median_ms(page_times)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"backend {args.backend}, {args.moves} slider moves\n")
    print("| path | median ms | p90 ms | ratio to the library decode |")
    print("|---|---|---|---|")
    rows = [
        ("library `Explorer.frame` (cached endpoints, one decode)", library),
        ("library without the cache (encode both endpoints + decode)", cold),
        ("**page: slider input → new frame loaded in Chromium**", page_times),
        (f"page while a thread decodes 64-frame strips ({long_jobs} done)", busy_times),
    ]
    for name, times in rows:
        p90 = 1000 * sorted(times)[int(0.9 * (len(times) - 1))]
        print(f"| {name} | {_median_ms(times):.1f} | {p90:.1f} | {_median_ms(times) / lib_ms:.1f}x |")
    verdict = "met" if page_ms <= 250 else "MISSED"
    print(f"\ntarget: median page latency <= 250 ms: {page_ms:.0f} ms, {verdict}")


if __name__ == "__main__":
    main()
