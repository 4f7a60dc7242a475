"""Import cost: ``import latentmix`` and ``latentmix --help`` of this checkout against an earlier revision.

The earlier revision is checked out into a temporary git worktree; both trees are put first on ``PYTHONPATH`` in
turn, alternating, in fresh interpreters. ``import latentmix`` is the cumulative time of its line in
``python -X importtime``; ``--help`` is the wall time of the whole process. Best of ``--repeat``.

    python benchmarks/bench_import.py --before 9439db6
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HELP = "import sys; from latentmix.cli import main; sys.argv = ['latentmix', '--help']; main()"


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree)}


def import_seconds(tree: Path) -> float:
    """Cumulative seconds of ``import latentmix`` (its own line of ``-X importtime``)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import latentmix"], capture_output=True,
                          text=True, env=_env(tree), check=True)  # fmt: skip
    line = next(ln for ln in done.stderr.splitlines() if re.search(r"\|\s+latentmix$", ln))
    return int(line.split("|")[1]) / 1e6


def help_seconds(tree: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", HELP], capture_output=True, env=_env(tree), check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the earlier revision (a commit, tag or branch)")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.before],
                       check=True, capture_output=True)  # fmt: skip
        try:
            times: dict[str, dict[str, list[float]]] = {
                "before": {"import": [], "help": []},
                "now": {"import": [], "help": []},
            }
            for _ in range(args.repeat):
                for name, tree in (("before", old), ("now", ROOT)):
                    times[name]["import"].append(import_seconds(tree))
                    times[name]["help"].append(help_seconds(tree))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)
    print(f"| case | before ({args.before}) | now | now / before |")
    print("|---|---|---|---|")
    for case, label, unit in (
        ("import", "`import latentmix`, cumulative", 1e3),
        ("help", "`latentmix --help`, wall", 1e3),
    ):
        before, now = min(times["before"][case]), min(times["now"][case])
        print(f"| {label}, best of {args.repeat} | {before * unit:.1f} ms | {now * unit:.1f} ms | {now / before:.2f} |")


if __name__ == "__main__":
    main()
