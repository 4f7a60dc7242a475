"""Quality report of every embedded backend, side by side (``latentmix evaluate`` for each).

Run: python benchmarks/bench_backends.py (every embedded digits backend, default settings);
``--backends NAME ... --data shapes`` for others, ``--test-images N --prior-samples N`` for a quick check.
Targets (issue 5): intra-class midpoint consistency >= 90% with slerp for the VAE and the GAN;
GAN refinement at least 2x lower reconstruction error than the encoder alone.
"""

from __future__ import annotations

import json
from pathlib import Path

from latentmix import embedded_models
from latentmix.configs import EvalConfig
from latentmix.jobs.evaluate import evaluate_backend


def rows(reports: dict[str, dict]) -> list[tuple[str, list[str]]]:
    def fmt(value):
        return "–" if value is None else f"{value:.4g}"

    def get(report, section, key, field=None):
        value = report[section].get(key)
        return value.get(field) if isinstance(value, dict) and field else value

    spec = [
        ("reconstruction MSE, encoder", "reconstruction", "encoder", "mse"),
        ("reconstruction time (s, 360 images), encoder", "reconstruction", "encoder", "seconds"),
        ("reconstruction MSE, refined (200 steps)", "reconstruction", "refined", "mse"),
        ("reconstruction time (s), refined", "reconstruction", "refined", "seconds"),
        ("FD real train vs real test (yardstick)", "frechet_distance", "real_train_vs_real_test", None),
        ("FD reconstructions", "frechet_distance", "reconstructions", None),
        ("FD prior samples", "frechet_distance", "prior_samples", None),
        ("FD midpoints, lerp", "frechet_distance", "midpoints_lerp", None),
        ("FD midpoints, slerp", "frechet_distance", "midpoints_slerp", None),
        ("intra-class midpoint consistency, lerp", "class_consistency", "intra_class_midpoints_lerp", None),
        ("intra-class midpoint consistency, slerp", "class_consistency", "intra_class_midpoints_slerp", None),
        ("inter-class paths monotone, lerp", "class_consistency", "inter_class_monotone_lerp", None),
        ("inter-class paths monotone, slerp", "class_consistency", "inter_class_monotone_slerp", None),
        ("path length, test pairs, lerp", "path_length", "test_pairs_lerp", None),
        ("path length, test pairs, slerp", "path_length", "test_pairs_slerp", None),
        ("path length, prior pairs, lerp", "path_length", "prior_pairs_lerp", None),
        ("path length, prior pairs, slerp", "path_length", "prior_pairs_slerp", None),
        ("midpoint norm / endpoint norm, lerp", "midpoint_norm_ratio", "lerp", None),
        ("midpoint norm / endpoint norm, slerp", "midpoint_norm_ratio", "slerp", None),
    ]
    return [(label, [fmt(get(r, s, k, f)) for r in reports.values()]) for label, s, k, f in spec]


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    digits = [name for name in embedded_models() if name.startswith("digits-")]
    parser.add_argument("--backends", nargs="+", default=digits, help="embedded backends (default: the digits ones)")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--test-images", type=int, default=None, help="a subset of the test split (default: all)")
    parser.add_argument("--prior-samples", type=int, default=1000)
    args = parser.parse_args()
    config = EvalConfig(data=args.data, test_images=args.test_images, prior_samples=args.prior_samples)
    reports = {name: evaluate_backend(config, backend=name, quiet=True).to_dict() for name in args.backends}
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "backends.json").write_text(json.dumps(reports, indent=2))
    print("| metric | " + " | ".join(reports) + " |")
    print("|---|" + "---|" * len(reports))
    for label, values in rows(reports):
        print(f"| {label} | " + " | ".join(values) + " |")


if __name__ == "__main__":
    main()
