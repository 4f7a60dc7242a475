"""Reading a parquet synthetic set's images: one row group at a time vs the whole shard's image column.

Writes ``--shards`` parquet shards of ``--rows`` samples (``write_parquet``, as ``synthesize --format parquet``
writes them) whose images are ``--size``² RGB noise PNGs (incompressible: the bytes a real photo set moves), then,
in one run, for the reader of today (``ShardImages``: a row group of ``PARQUET_ROW_GROUP`` rows per read, a few
held) and for the reader before it (the same LRU of ``OPEN_SHARDS`` entries, each a whole shard's image column,
reimplemented here as the baseline):

* image bytes held after reading one image, and at most while reading every image in a shuffled order (seed 0);
* the median time to read one image with a fresh reader (a DataLoader worker's first read; interleaved rounds);
* the time to read every image, shuffled (seed 0) and in order.

    python benchmarks/bench_parquet_reads.py [--shards 8] [--rows 256] [--size 256] [--rounds 10]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
from _timing import interleaved, report
from PIL import Image

from latentmix.data.synthetic_formats import OPEN_SHARDS, PARQUET_ROW_GROUP, ShardImages, shard_data, write_parquet


class WholeShardImages:
    """The reader before row groups: a whole shard's image column per entry, ``OPEN_SHARDS`` entries held."""

    def __init__(self, root: Path):
        self.root, self._index = root, OrderedDict()

    def read(self, shard: int, position: int, name: str) -> bytes:
        import pyarrow.parquet as pq

        if shard not in self._index:
            path = shard_data(self.root, shard, "parquet")
            cells = pq.read_table(path, columns=["image"]).column("image").to_pylist()
            if len(self._index) >= OPEN_SHARDS:
                self._index.popitem(last=False)
            self._index[shard] = [cell["bytes"] for cell in cells]
        self._index.move_to_end(shard)
        return self._index[shard][position]


def held(reader) -> int:
    return sum(len(b) for entry in reader._index.values() if isinstance(entry, list) for b in entry)


def write_set(root: Path, shards: int, rows: int, size: int) -> None:
    rng = np.random.default_rng(0)
    (root / "data").mkdir(parents=True)
    for shard in range(shards):
        images = []
        for i in range(rows):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
            images.append((f"syn-{shard}-{i}.png", buffer.getvalue()))
        rows_ = [{"id": f"syn-{shard}-{i}", "text": "", "label": 0} for i in range(rows)]
        write_parquet(shard_data(root, shard, "parquet"), rows_, images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_set(root, args.shards, args.rows, args.size)
        readers = {
            "row groups (today)": lambda: ShardImages(root, "parquet"),
            "whole shard (before)": lambda: WholeShardImages(root),
        }
        everything = [(s, p) for s in range(args.shards) for p in range(args.rows)]
        shuffled = [everything[i] for i in np.random.default_rng(0).permutation(len(everything))]
        first = interleaved(
            {k: (lambda make=make: make().read(3, 100, "")) for k, make in readers.items()}, args.rounds
        )
        rows = []
        for name, make in readers.items():
            one = make()
            one.read(3, 100, "")
            after_one = held(one)
            reader, peak, start = make(), 0, time.perf_counter()
            for shard, position in shuffled:
                reader.read(shard, position, "")
                peak = max(peak, held(reader))
            shuffled_s = time.perf_counter() - start
            reader, start = make(), time.perf_counter()
            for shard, position in everything:
                reader.read(shard, position, "")
            in_order_s = time.perf_counter() - start
            rows.append({
                "reader": name, "MB held after one read": after_one / 1e6, "MB held at most (shuffled)": peak / 1e6,
                "first read ms": 1e3 * first[name], "all shuffled s": shuffled_s, "all in order s": in_order_s,
            })  # fmt: skip
        size_mb = sum(f.stat().st_size for f in (root / "data").glob("*.parquet")) / 1e6
    print(f"{args.shards} shards x {args.rows} rows of {args.size}x{args.size} noise PNGs ({size_mb:.0f} MB), "
          f"row groups of {PARQUET_ROW_GROUP}, {OPEN_SHARDS} entries held")  # fmt: skip
    report("parquet_reads", rows)


if __name__ == "__main__":
    main()
