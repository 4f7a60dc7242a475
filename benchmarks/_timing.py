"""Timing helpers shared by the benchmarks: best-of-N and interleaved wall time, machine description."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch


def best_of(fn, repeat: int = 5, warmup: int = 1) -> float:
    """Smallest wall time of ``repeat`` calls, after ``warmup`` untimed calls (seconds)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def interleaved(fns: dict, rounds: int = 20, warmup: int = 2) -> dict:
    """Median wall time of each of ``fns`` (name → callable) over ``rounds`` rounds, each round calling every one
    once in turn (seconds): drift in the machine's speed falls on all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def report(name: str, rows: list[dict]) -> None:
    """Print a markdown table and save JSON under benchmarks/results/."""
    print(f"\n{name} — {machine()}\n")
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
