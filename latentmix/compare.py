"""``latentmix compare``: several recipes × several seeds, mean ± std, per-seed numbers.

A recipe is a name and :class:`~latentmix.train.classifier.TrainConfig` overrides. Recipes with
``synthetic_strategy`` get a synthetic set made for each seed from exactly that seed's labelled
examples (``labels_per_class`` / ``subset_seed`` = the training seed), so no other labels leak in.

Each recipe is also compared with the first one (the baseline, ERM by default) *paired*: the
per-seed differences of accuracy, NLL and ECE after temperature scaling, averaged over seeds, with a
95 % interval from resampling the test examples (the same resample for both recipes) — so a
difference smaller than what 360 test digits can resolve shows as an interval around 0.
The default synthesis backend is the embedded latent-diffusion model: its intra-class blends were the
best recipe of the digits study (``BENCHMARKS.md``).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentmix.configs import DEFAULT_RECIPES, RECIPES, CompareConfig, SynthesisConfig, TrainConfig
from latentmix.synthesize import synthesize
from latentmix.train.classifier import train_classifier

__all__ = ["DEFAULT_RECIPES", "RECIPES", "CompareConfig", "format_table", "paired_differences", "run_compare"]

METRICS = ("accuracy", "nll", "ece")
BOOTSTRAP = 500  # test-set resamples for the paired intervals


def _mean_std(values: list[float]) -> dict[str, float]:
    arr = np.array(values)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def run_compare(base: TrainConfig, config: CompareConfig | None = None, *, quiet: bool = False, **settings) -> dict:
    """Train every recipe with every seed; return per-seed metrics, mean ± std and the paired differences.

    Args:
        base: the :class:`~latentmix.configs.TrainConfig` every recipe starts from.
        config: a :class:`~latentmix.configs.CompareConfig`; ``settings`` override its fields
            (``recipes``, ``seeds``, ``backend``, ``synthetic_n``, ``workdir``).
    """
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    config = replace(config or CompareConfig(), **settings)
    config.validate()
    base.validate()
    recipes, seeds = list(config.recipes), list(config.seeds)
    if any("synthetic_strategy" in RECIPES[r] for r in recipes) and base.data != "digits":
        raise ValueError(
            "synthetic recipes in compare blend the digits data with a digits backend; pass --synthetic to train "
            "instead"
        )
    work = Path(config.workdir or tempfile.mkdtemp(prefix="latentmix-compare-"))
    results: dict = {"recipes": {}, "seeds": seeds, "labels_per_class": base.labels_per_class}
    scaled: dict[str, list] = {r: [] for r in recipes}  # temperature-scaled test logits and labels, per seed
    for recipe in recipes:
        per_seed: list[dict[str, Any]] = []
        for seed in seeds:
            run_config = recipe_config(base, recipe, seed, work, backend=config.backend, synthetic_n=config.synthetic_n)
            report = train_classifier(run_config, quiet=quiet)
            per_seed.append(
                {
                    "seed": seed,
                    "before": {m: report.test[m] for m in METRICS},
                    "after": {m: report.test_temperature_scaled[m] for m in METRICS},
                    "confidence_gap": report.test["confidence_gap"],
                }
            )
            scaled[recipe].append((report.test_logits.double() / report.temperature, report.test_labels))
        summary = {
            f"{m}_{when}": _mean_std([r[when][m] for r in per_seed]) for when in ("before", "after") for m in METRICS
        }
        summary["confidence_gap"] = _mean_std([r["confidence_gap"] for r in per_seed])
        results["recipes"][recipe] = {"per_seed": per_seed, "summary": summary}
    results["baseline"] = recipes[0]
    results["paired"] = {r: paired_differences(scaled[recipes[0]], scaled[r]) for r in recipes[1:]}
    return results


def recipe_config(
    base: TrainConfig, recipe: str, seed: int, work: Path, *, backend: str = "digits-ldm", synthetic_n: int = 2000
) -> TrainConfig:
    """``base`` with ``recipe``'s overrides and ``seed``; a synthetic recipe first writes (or resumes)
    that seed's set under ``work``, blended from exactly the seed's labelled examples."""
    spec = dict(RECIPES[recipe])
    strategy = spec.pop("synthetic_strategy", None)
    config = replace(base, seed=seed, **spec)
    if strategy is None:
        return config
    out = work / f"{strategy}-k{base.labels_per_class}-seed{seed}"
    synthesize(
        SynthesisConfig(
            backend=backend,
            n=synthetic_n,
            strategy=strategy,
            seed=seed,
            labels_per_class=base.labels_per_class,
            subset_seed=seed,
        ),
        out,
        quiet=True,
    )
    return replace(config, synthetic=str(out))


def paired_differences(baseline: list, other: list, *, resamples: int = BOOTSTRAP, seed: int = 0) -> dict:
    """Mean over seeds of (other − baseline) for accuracy, NLL and ECE of temperature-scaled logits,
    with a 95 % percentile interval from resampling the test examples (one resample for all seeds and
    both recipes, so the comparison stays paired)."""
    from latentmix.metrics import accuracy, expected_calibration_error, nll

    labels = baseline[0][1]
    fns = {
        "accuracy": lambda z, y: accuracy(z.softmax(1), y),
        "nll": nll,
        "ece": lambda z, y: expected_calibration_error(z.softmax(1), y, 15),
    }

    def diff(idx) -> dict[str, float]:
        return {
            m: float(
                np.mean(
                    [
                        f(o[idx], labels[idx]) - f(b[idx], labels[idx])
                        for (b, _), (o, _) in zip(baseline, other, strict=True)
                    ]
                )
            )
            for m, f in fns.items()
        }

    point = diff(torch.arange(len(labels)))
    rng = np.random.default_rng(seed)
    draws = [diff(torch.from_numpy(rng.integers(0, len(labels), len(labels)))) for _ in range(resamples)]
    return {
        m: {"mean": point[m], "ci95": [float(np.percentile([d[m] for d in draws], q)) for q in (2.5, 97.5)]}
        for m in fns
    }


def format_table(results: dict) -> str:
    """Markdown: mean ± std per recipe; accuracy in %, NLL, ECE before → after temperature scaling."""

    def ms(s, scale=1.0, digits=3):
        return f"{s['mean'] * scale:.{digits}f} ± {s['std'] * scale:.{digits}f}"

    lines = [
        "| recipe | accuracy % | NLL | ECE | NLL (T-scaled) | ECE (T-scaled) | conf − acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results["recipes"].items():
        s = r["summary"]
        lines.append(
            f"| {name} | {ms(s['accuracy_before'], 100, 1)} | {ms(s['nll_before'])} | {ms(s['ece_before'])} | "
            f"{ms(s['nll_after'])} | {ms(s['ece_after'])} | {ms(s['confidence_gap'])} |"
        )
    lines.append("")
    lines.append(
        "per seed (accuracy %): "
        + "; ".join(
            f"{name}: " + ", ".join(f"{100 * p['before']['accuracy']:.1f}" for p in r["per_seed"])
            for name, r in results["recipes"].items()
        )
    )
    if results.get("paired"):
        lines += [
            "",
            f"paired with {results['baseline']} (after temperature scaling; mean over seeds, 95 % interval over test "
            "resamples):",
            "",
            "| recipe | Δ accuracy (points) | Δ NLL | Δ ECE |",
            "|---|---|---|---|",
        ]
        for name, d in results["paired"].items():
            acc, nll_, ece = d["accuracy"], d["nll"], d["ece"]
            lines.append(
                f"| {name} | {100 * acc['mean']:+.1f} [{100 * acc['ci95'][0]:+.1f}, {100 * acc['ci95'][1]:+.1f}] | "
                f"{nll_['mean']:+.3f} [{nll_['ci95'][0]:+.3f}, {nll_['ci95'][1]:+.3f}] | "
                f"{ece['mean']:+.4f} [{ece['ci95'][0]:+.4f}, {ece['ci95'][1]:+.4f}] |"
            )
    return "\n".join(lines)


def save_results(results: dict, path: str) -> None:
    from latentmix.atomic import atomic_write_text

    atomic_write_text(Path(path), json.dumps(results, indent=2) + "\n")
