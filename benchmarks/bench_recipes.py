"""Synthesis at an img2img strength: samples/s at strength 0.5 vs 1.0, on the embedded shapes-ldm (CPU).

Run: python benchmarks/bench_recipes.py [--steps 20] [--n 64] [--rounds 5]
Target (issue 31): at strength S with N sampling steps each sample runs int(N·S) UNet steps, so synthesis
samples/s at S = 0.5 is >= 1.7x that at S = 1.0. Timed two ways in one run: the steady state (make_shard over the
run's shards, each strength's sources encoded once beforehand; interleaved medians), and whole synthesize() calls
(loading, encoding the sources, every shard).
"""

from __future__ import annotations

import argparse
import time

from _timing import interleaved, report

from latentmix import load_backend
from latentmix.configs import SynthesisConfig
from latentmix.data.text import TextEncoder
from latentmix.jobs.sources import SourceData, make_shard
from latentmix.jobs.synthesize import synthesize
from latentmix.latent.pairing import Pairing


def settings(strategy: str, noise: str, strength: float, steps: int, n: int) -> SynthesisConfig:
    return SynthesisConfig(backend="shapes-ldm", data="shapes", labels_per_class=5, strategy=strategy, noise=noise,
                           strength=(strength,), num_inference_steps=steps, n=n, shard_size=32)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    backend = load_backend("shapes-ldm")
    text_encoder = TextEncoder.from_pretrained()
    rows = []
    for strategy, noise in (("augment", "random"), ("intra-class", "inversion")):
        runs = {}
        for s in (1.0, 0.5):
            config = settings(strategy, noise, s, args.steps, args.n)
            src = SourceData(config, backend, text_encoder, quiet=True)
            pairing = Pairing(strategy, src.dataset.labels.numpy(), config.seed)
            shards = range(-(-args.n // config.shard_size))

            def shards_of(config=config, src=src, pairing=pairing, shards=shards):
                for shard in shards:
                    make_shard(shard, config, src, pairing, backend, "slerp", n=args.n)

            runs[s] = shards_of
        medians = interleaved(runs, rounds=args.rounds, warmup=1)
        whole = {}
        for s in (1.0, 0.5):
            start = time.perf_counter()
            synthesize(settings(strategy, noise, s, args.steps, args.n), quiet=True)
            whole[s] = time.perf_counter() - start
        for label, t in (("steady state (shards)", medians), ("whole synthesize() call", whole)):
            rows.append({
                "case": f"{strategy}, noise {noise}, {args.n} samples, {args.steps} steps: {label}",
                "S=1.0 samples/s": args.n / t[1.0],
                "S=0.5 samples/s": args.n / t[0.5],
                "ratio": f"{t[1.0] / t[0.5]:.2f}x",
                "target": ">= 1.7x",
            })  # fmt: skip
    report("recipes_strength", rows)


if __name__ == "__main__":
    main()
