"""Paired synthesis with the embedded VAE on CPU.

Run: python benchmarks/bench_synthesize.py
Targets (issue 3): batched encode/blend/decode >= 5x the pairs/s of one pair at a time;
peak memory for 20,000 pairs within 15% of that for 2,000 pairs.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from _timing import report

from latentmix import load_backend
from latentmix.configs import SynthesisConfig
from latentmix.data.text import TextEncoder
from latentmix.jobs.sources import SourceData, make_shard
from latentmix.latent.blend import blend
from latentmix.latent.pairing import Pairing, sample_lambdas
from latentmix.utils.viz import to_pil, to_uint8

N_BATCHED, N_PER_PAIR = 8192, 2048


def throughput() -> list[dict]:
    config = SynthesisConfig(backend="digits-vae", n=N_BATCHED, strategy="inter-class", shard_size=256)
    backend = load_backend(config.backend)
    text_encoder = TextEncoder.from_pretrained()
    start = time.perf_counter()
    src = SourceData(config, backend, text_encoder, quiet=True)  # batched: every source encoded once
    setup = time.perf_counter() - start
    pairing = Pairing(config.strategy, src.dataset.labels.numpy(), config.seed)
    start = time.perf_counter()
    for shard in range(N_BATCHED // config.shard_size):
        for image in make_shard(shard, config, src, pairing, backend, "slerp").images:
            to_pil(image).save(io.BytesIO(), format="PNG")
    shards = time.perf_counter() - start

    ds = src.dataset
    idx = np.arange(N_PER_PAIR)
    ia, ib = pairing.pairs(idx)
    lam = sample_lambdas(config.seed, idx, config.alpha)
    start = time.perf_counter()
    for i in range(N_PER_PAIR):  # one pair at a time: encode both sources, blend, decode, write
        with torch.inference_mode():
            z = backend.encode(ds.images([ia[i], ib[i]]))
        side_a, side_b = src.side(ia[i : i + 1]), src.side(ib[i : i + 1])
        side_a.latents, side_b.latents = z[:1], z[1:]
        mix = blend(side_a, side_b, torch.tensor(lam[i : i + 1]), method="slerp", caption_bank=src.bank)
        with torch.inference_mode():
            image = backend.decode(mix.latents)
        to_pil(to_uint8(image)[0]).save(io.BytesIO(), format="PNG")
    per_pair = N_PER_PAIR / (time.perf_counter() - start)
    with_setup = N_BATCHED / (setup + shards)
    steady = N_BATCHED / shards
    return [
        {
            "case": f"{N_BATCHED} pairs incl. encoding all {len(ds)} sources once",
            "batched pairs/s": with_setup,
            "one-at-a-time pairs/s": per_pair,
            "result": f"{with_setup / per_pair:.1f}x faster",
            "target": ">= 5x",
        },
        {
            "case": "steady state (per shard of 256: pair, blend, decode, PNG)",
            "batched pairs/s": steady,
            "one-at-a-time pairs/s": per_pair,
            "result": f"{steady / per_pair:.1f}x faster",
            "target": ">= 5x",
        },
    ]


CHILD = """
import resource, sys, tempfile
from latentmix.configs import SynthesisConfig
from latentmix.jobs.synthesize import synthesize
synthesize(SynthesisConfig(n=int(sys.argv[1]), strategy="inter-class", out=tempfile.mkdtemp() + "/set"), quiet=True)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_memory() -> list[dict]:
    peaks = {}
    for n in (2_000, 20_000):
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(n)], capture_output=True, text=True, check=True, cwd=tempfile.mkdtemp()
        )
        peaks[n] = (int(out.stdout.split()[-1]) / 1024, time.perf_counter() - start)
    ratio = peaks[20_000][0] / peaks[2_000][0]
    return [
        {
            "case": "synthesize to disk, peak RSS",
            "2,000 pairs MiB": peaks[2_000][0],
            "20,000 pairs MiB": peaks[20_000][0],
            "result": f"{100 * (ratio - 1):+.1f}%",
            "target": "within 15%",
            "20,000 pairs wall s": peaks[20_000][1],
        }
    ]


if __name__ == "__main__":
    report("synthesize_throughput", throughput())
    report("synthesize_memory", peak_memory())
