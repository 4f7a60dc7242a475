"""Pair alignment scoring: batched (`latentmix evaluate-pairs`) against scoring one pair at a time.

Run: python benchmarks/bench_pairs.py [--align shapes-align] [--pairs 10000] [--one-at-a-time 300]
(both text-encoder precisions, fp32 and bf16 — `evaluate-pairs --text-precision` — each in the same run)
Target (issue 12): evaluate-pairs on a 10,000-pair set runs in batched calls; report pairs/s and the ratio
against scoring one pair at a time (>= 10x). The set is the real shapes train split (10,000 captioned pairs).
Batched: images through the image tower 512 at a time, each unique caption through the text encoder once, all
groups' similarities in one batched matmul (``score_pairs``). One at a time: per pair, one image through the
image tower and its caption through the text encoder and the projection, then the same retrieval; timed on
``--one-at-a-time`` pairs and given per pair (its cost is linear in the pairs).
"""

from __future__ import annotations

import argparse
import time

import torch
from _timing import report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--align", default="shapes-align")
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--one-at-a-time", type=int, default=300)
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda[:N], mps")
    args = parser.parse_args()

    from latentmix.classifiers.align import load_align_model, score_pairs
    from latentmix.data import Subset, load_dataset
    from latentmix.data.text import TextEncoder
    from latentmix.utils.device import resolve_device

    device = resolve_device(args.device)
    model = load_align_model(args.align).to(device)
    data = load_dataset("shapes", split="train")
    data = Subset(data, range(min(args.pairs, len(data))))
    encoder = TextEncoder.from_pretrained(model.config.text_encoder, device=device)
    encoder.encode(["warm-up"])

    rows = []
    for precision in ("fp32", "bf16"):
        encoder.model.to(torch.float32 if precision == "fp32" else torch.bfloat16)
        start = time.perf_counter()
        fresh = TextEncoder(encoder.model, encoder.tokenizer)  # an empty caption cache: every caption is encoded
        batched_scores = score_pairs(model, data, encoder=fresh)
        batched = time.perf_counter() - start

        n = min(args.one_at_a_time, len(data))
        start = time.perf_counter()
        with torch.inference_mode():
            for i in range(n):
                model.embed_images(data.images([i]).to(device))
                model.embed_texts(encoder.uncached([data.texts[i]]).to(device))  # no cache: one caption per call
        per_pair = (time.perf_counter() - start) / n
        rows.append(
            {
                "case": f"{len(data):,} shapes pairs, groups of 100, text encoder in {precision}, on {device}",
                "batched_s": batched,
                "batched_pairs_per_s": len(data) / batched,
                "one_at_a_time_pairs_per_s": 1 / per_pair,
                "result": f"batched {per_pair * len(data) / batched:.1f}x faster",
                "text_to_image_r1": batched_scores["text_to_image_r1"],
            }
        )
    report("pairs", rows)


if __name__ == "__main__":
    main()
