"""Issue 32: reading a synthetic set's embeddings at scale (per-shard stacked tensors vs the merged file).

Writes fake sets in the layout ``synthesize`` writes (``shards/NNNNNN.safetensors`` with stacked ``latent`` and
``text_embedding``, the manifest's ``embeddings`` entry), of 6,000 and 600,000 ids (1,000 rows per shard, small
vectors: the cost measured is finding and reading one sample, not moving bytes), and times, interleaved in one
run: opening the embedding store from the manifest and reading the *last* sample's embeddings. Target: 600,000
ids ≤ 2× the time of 6,000. Baseline in the same run: the pre-0.2 merged ``embeddings.safetensors`` (a tensor per
field and id), whose open cost grows with its header, at 6,000 and 60,000 ids (600,000 would be a 90 MB header).
Also: writing the manifest's shard list for 6 vs 600 shards (linear in shards).

    python benchmarks/bench_storage.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from _timing import interleaved, machine
from safetensors.torch import save_file

from latentmix.data.synthetic_embeddings import PER_SHARD, open_embeddings

ROWS = 1000
LATENT, TEXT = 16, 32


def entries(shards: int) -> list[dict]:
    return [{"file": f"shards/{s:06d}.safetensors", "rows": ROWS} for s in range(shards)]


def write_sharded(root: Path, n: int) -> dict:
    (root / "shards").mkdir(parents=True)
    for s in range(n // ROWS):
        ids = torch.arange(s * ROWS, (s + 1) * ROWS, dtype=torch.float32)[:, None]
        save_file(
            {"latent": ids.repeat(1, LATENT).contiguous(), "text_embedding": ids.repeat(1, TEXT).contiguous()},
            root / "shards" / f"{s:06d}.safetensors",
        )
    manifest = {
        "embeddings": {"layout": PER_SHARD, "fields": ["latent", "text_embedding"], "shards": entries(n // ROWS)}
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def write_merged(root: Path, n: int) -> None:
    root.mkdir(parents=True)
    tensors = {}
    for i in range(n):
        tensors[f"latent/syn-{i:08d}"] = torch.full((LATENT,), float(i))
        tensors[f"text_embedding/syn-{i:08d}"] = torch.full((TEXT,), float(i))
    save_file(tensors, root / "embeddings.safetensors")


def read_last(root: Path, n: int, ids: list[str]):
    def run() -> None:
        manifest = json.loads((root / "manifest.json").read_text()) if (root / "manifest.json").is_file() else {}
        row = open_embeddings(root, manifest, ids).row(n - 1)
        assert float(row["text_embedding"][0]) == n - 1

    return run


def write_manifest(root: Path, shards: int):
    def run() -> None:
        entry = {"layout": PER_SHARD, "fields": ["latent", "text_embedding"], "shards": entries(shards)}
        (root / f"manifest-{shards}.json").write_text(json.dumps({"embeddings": entry}, indent=2))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    start = time.perf_counter()
    sizes = {"sharded_6k": 6_000, "sharded_600k": 600_000}
    for name, n in sizes.items():
        write_sharded(tmp / name, n)
    merged = {"merged_6k": 6_000, "merged_60k": 60_000}
    for name, n in merged.items():
        write_merged(tmp / name, n)
    written = time.perf_counter() - start
    fns = {}
    for name, n in {**sizes, **merged}.items():
        ids = [f"syn-{i:08d}" for i in range(n)]
        fns[name] = read_last(tmp / name, n, ids)
    fns.update({"manifest_6_shards": write_manifest(tmp, 6), "manifest_600_shards": write_manifest(tmp, 600)})
    times = interleaved(fns, rounds=7, warmup=1)
    result = {
        "benchmark": "storage",
        "machine": machine(),
        "seconds": {k: round(v, 6) for k, v in times.items()},
        "open_and_read_last_600k_over_6k": round(times["sharded_600k"] / times["sharded_6k"], 3),
        "merged_60k_over_6k": round(times["merged_60k"] / times["merged_6k"], 3),
        "merged_60k_over_sharded_600k": round(times["merged_60k"] / times["sharded_600k"], 3),
        "manifest_600_over_6_shards": round(times["manifest_600_shards"] / times["manifest_6_shards"], 3),
        "fake_sets_written_s": round(written, 1),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
