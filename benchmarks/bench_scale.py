"""Issue 32: a synthesis run's memory does not grow with the set, and the tar format costs no throughput.

Runs ``latentmix synthesize`` (embedded digits VAE, inter-class blends, 1,000 samples per shard) as subprocesses
and reads each one's peak RSS and wall time from the OS (``os.wait4``):

* ``-n 200000 --format webdataset`` vs ``-n 20000 --format webdataset``: peak RSS ratio (target ≤ 1.15);
* ``-n N --format webdataset`` vs ``--format imagefolder`` (and parquet), interleaved over ``--rounds``: samples/s,
  median per format (target: webdataset within 10 % of imagefolder). Wall time includes start-up (loading torch
  and the models, about 5 s here), the same for every format.

    python benchmarks/bench_scale.py [--n-throughput 100000] [--rounds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import machine


def run(n: int, set_format: str, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "latentmix", "--quiet", "synthesize", "-n", str(n), "--format", set_format,
           "--shard-size", "1000", "--strategy", "inter-class", "--out", str(out)]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
    shutil.rmtree(out, ignore_errors=True)
    return {"n": n, "format": set_format, "wall_s": round(wall, 2), "samples_per_s": round(n / wall, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-small", type=int, default=20_000)
    parser.add_argument("--n-large", type=int, default=200_000)
    parser.add_argument("--n-throughput", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    small = run(args.n_small, "webdataset", tmp / "set")
    large = run(args.n_large, "webdataset", tmp / "set")
    rounds: dict[str, list[dict]] = {"imagefolder": [], "webdataset": [], "parquet": []}
    for _ in range(args.rounds):
        for set_format in rounds:
            rounds[set_format].append(run(args.n_throughput, set_format, tmp / "set"))
    rate = {f: sorted(r["samples_per_s"] for r in runs)[len(runs) // 2] for f, runs in rounds.items()}
    result = {
        "benchmark": "scale",
        "machine": machine(),
        "memory": [small, large],
        "peak_rss_large_over_small": round(large["peak_rss_mb"] / small["peak_rss_mb"], 3),
        "throughput": rounds,
        "samples_per_s_median": rate,
        "webdataset_over_imagefolder": round(rate["webdataset"] / rate["imagefolder"], 3),
        "parquet_over_imagefolder": round(rate["parquet"] / rate["imagefolder"], 3),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
