"""The transfer study (issue 29): does a pretrained backbone help at 5 labels per class, and do blends and CutMix
still help on top of it?

One architecture (``benchmarks/transfer/resnet-tiny/config.json``: a transformers ResNet, 3 stages of 16/32/64
channels, 32 px RGB input) in two arms on the digits (8 x 8 grey, upscaled to 32 px RGB by the model's input
conversion), 5 labels per class:

* ``scratch``: ``--model benchmarks/transfer/resnet-tiny --init scratch`` (fresh weights per seed);
* ``pretrained``: ``--model shapes-resnet``, the embedded backbone fitted on ``shapes`` by

      latentmix train --model benchmarks/transfer/resnet-tiny --init scratch --data shapes --steps 3000 \\
          --eval-every 250 --save-model models/shapes-resnet

Each arm runs ``latentmix compare`` with the recipes erm, cutmix and blends-intra (intra-class blends of the
embedded digits-ldm) over 5 seeds; the second table pairs the arms seed by seed (a t interval over the seeds).

    python benchmarks/transfer_study.py --out transfer.json     # about 45 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARMS = {
    "scratch": ["--model", "benchmarks/transfer/resnet-tiny", "--init", "scratch"],
    "pretrained": ["--model", "shapes-resnet"],
}
RECIPES = ("erm", "cutmix", "blends-intra")


def run_arm(arm: str, seeds: list[int], work: Path) -> dict:
    out = work / f"{arm}.json"
    command = [sys.executable, "-m", "latentmix", "--quiet", "compare", "--data", "digits", *ARMS[arm]]
    command += ["--recipes", *RECIPES, "--seeds", *map(str, seeds), "--workdir", str(work / arm), "--json", str(out)]
    print("+", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def t_interval(values: list[float]) -> tuple[float, float, float]:
    from scipy import stats

    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    half = float(stats.t.ppf(0.975, len(values) - 1)) * sd / len(values) ** 0.5
    return mean, mean - half, mean + half


def table(results: dict[str, dict]) -> str:
    lines = ["| arm | recipe | accuracy % | NLL (T-scaled) | ECE % before → after T |", "|---|---|---|---|---|"]
    for arm, res in results.items():
        for recipe in RECIPES:
            runs = res["recipes"][recipe]["per_seed"]
            acc = t_interval([100 * r["after"]["accuracy"] for r in runs])
            nll = t_interval([r["after"]["nll"] for r in runs])
            ece_b = sum(100 * r["before"]["ece"] for r in runs) / len(runs)
            ece_a = sum(100 * r["after"]["ece"] for r in runs) / len(runs)
            lines.append(f"| {arm} | {recipe} | {acc[0]:.1f} [{acc[1]:.1f}, {acc[2]:.1f}] | {nll[0]:.3f} | "
                         f"{ece_b:.1f} → {ece_a:.1f} |")  # fmt: skip
    lines += ["", "| paired (same seed) | Δ accuracy points, 95 % t interval over seeds |", "|---|---|"]

    def accs(arm: str, recipe: str) -> list[float]:
        return [100 * r["after"]["accuracy"] for r in results[arm]["recipes"][recipe]["per_seed"]]

    pairs = [(f"pretrained − scratch, {r}", accs("pretrained", r), accs("scratch", r)) for r in RECIPES]
    pairs += [(f"{arm}: {r} − erm", accs(arm, r), accs(arm, "erm")) for arm in results for r in RECIPES[1:]]
    for name, a, b in pairs:
        mean, lo, hi = t_interval([x - y for x, y in zip(a, b, strict=True)])
        lines.append(f"| {name} | {mean:+.1f} [{lo:+.1f}, {hi:+.1f}] |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", help="write both arms' compare results here (JSON)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {arm: run_arm(arm, args.seeds, Path(tmp)) for arm in ARMS}
    print(table(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
