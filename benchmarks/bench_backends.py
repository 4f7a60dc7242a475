"""Quality report of every embedded backend, side by side (``latentmix evaluate`` for each).

Run: python benchmarks/bench_backends.py
Targets (issue 5): intra-class midpoint consistency >= 90% with slerp for the VAE and the GAN;
GAN refinement at least 2x lower reconstruction error than the encoder alone.
"""

from __future__ import annotations

import json
from pathlib import Path

from latentmix import embedded_models
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
    reports = {name: evaluate_backend(backend=name, quiet=True).to_dict() for name in embedded_models()}
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "backends.json").write_text(json.dumps(reports, indent=2))
    print("| metric | " + " | ".join(reports) + " |")
    print("|---|" + "---|" * len(reports))
    for label, values in rows(reports):
        print(f"| {label} | " + " | ".join(values) + " |")


if __name__ == "__main__":
    main()
