"""``latentmix compare``: several recipes × several seeds, mean ± std, per-seed numbers.

A recipe is a name and :class:`~latentmix.train.classifier.TrainConfig` overrides. Recipes with
``synthetic_strategy`` get a synthetic set made for each seed from exactly that seed's labelled
examples (``labels_per_class`` / ``subset_seed`` = the training seed), so no other labels leak in.

Each recipe is also compared with the first one (the baseline, ERM by default) *paired*: the
per-seed differences of accuracy, NLL and ECE after temperature scaling, averaged over seeds, with a
95 % interval from resampling the test examples (the same resample for both recipes) — so a
difference smaller than what 360 test digits can resolve shows as an interval around 0.
The default synthesis backend is the embedded latent-diffusion model of the data (``digits-ldm``: its
intra-class blends were the best recipe of the digits study, ``BENCHMARKS.md``; ``shapes-ldm``); other data
needs ``--backend``, a model fitted on it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentmix.configs import (
    DEFAULT_RECIPES,
    DEFAULT_SYNTHESIS_BACKENDS,
    RECIPES,
    CompareConfig,
    SynthesisConfig,
    TrainConfig,
    backend_for,
)
from latentmix.jobs.synthesize import synthesize
from latentmix.train.classifier import train_classifier

__all__ = [
    "DEFAULT_RECIPES", "RECIPES", "CompareConfig", "CompareResult", "format_table", "paired_differences", "run_compare",
]  # fmt: skip

METRICS = ("accuracy", "nll", "ece")
BOOTSTRAP = 500  # test-set resamples for the paired intervals


def _mean_std(values: list[float]) -> dict[str, float]:
    arr = np.array(values)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


@dataclass
class CompareResult:
    """What :func:`run_compare` measured; :meth:`to_dict` is the JSON of ``latentmix compare --json``.

    Attributes:
        recipes: per recipe, ``per_seed`` rows (before / after temperature scaling, robustness, …) and their
            ``summary`` (mean ± std).
        seeds, data, labels_per_class, imbalance_ratio: what was trained on.
        baseline: the first recipe, which the others are paired with.
        paired: per other recipe, the paired differences after temperature scaling (95 % intervals over test
            resamples).
        paired_by_seed: ``paired_robustness``, ``paired_class_balance``, ``paired_missing_modality`` where every
            recipe has those numbers: per recipe, differences with t intervals over seeds.
        verdicts: one sentence per other recipe: helped, hurt, or no measurable difference.
    """

    recipes: dict[str, dict[str, Any]]
    seeds: list[int]
    labels_per_class: int | None
    data: str
    imbalance_ratio: float | None
    baseline: str
    paired: dict[str, dict[str, Any]]
    paired_by_seed: dict[str, dict[str, Any]]
    verdicts: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "recipes": self.recipes, "seeds": self.seeds, "labels_per_class": self.labels_per_class,
            "data": self.data, "imbalance_ratio": self.imbalance_ratio, "baseline": self.baseline,
            "paired": self.paired,
        }  # fmt: skip
        return {**out, **self.paired_by_seed, "verdicts": self.verdicts}


def run_compare(config: CompareConfig | None = None, *, quiet: bool = False, **settings: Any) -> CompareResult:
    """Train every recipe with every seed; return per-seed metrics, mean ± std and the paired differences.

    Synthetic recipes blend the seed's labelled examples of the training data with ``config.backend`` (fitted on
    that data). Each synthetic set is judged by the seed's ERM classifier (fitted on the same labels, no
    others): ``erm_agreement`` is the share of blends whose dominant label it predicts; ``+filter`` recipes keep
    only those (:class:`latentmix.jobs.sources.BlendFilter`, threshold 0.5).

    Args:
        config: a :class:`~latentmix.configs.CompareConfig`: ``train``, the
            :class:`~latentmix.configs.TrainConfig` every recipe starts from (default: 5 labels per class),
            ``recipes``, ``seeds``, ``backend``, ``synthetic_n``, ``workdir``; ``settings`` override its fields.
    """
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    config = replace(config or CompareConfig(), **settings)
    config.validate()
    if config.workdir is not None:
        return _compare(config, Path(config.workdir), quiet)
    with tempfile.TemporaryDirectory(prefix="latentmix-compare-") as work:  # no workdir asked for: none left behind
        return _compare(config, Path(work), quiet)


def _compare(config: CompareConfig, work: Path, quiet: bool) -> CompareResult:
    base = config.base
    recipes, seeds = list(config.recipes), list(config.seeds)
    synthetic = any("synthetic_strategy" in RECIPES[r] for r in recipes)
    if synthetic:  # no default backend for the data: say so before any training
        backend_for(config.backend, base.data, DEFAULT_SYNTHESIS_BACKENDS)
    erm_reports: dict[int, Any] = {}  # the seed's ERM run, when this call trained it: the erm recipe reuses it
    erm_models = {seed: _erm_model(base, seed, work, quiet, erm_reports) for seed in seeds} if synthetic else {}
    results: dict = {"recipes": {}, "seeds": seeds, "labels_per_class": base.labels_per_class, "data": base.data,
                     "imbalance_ratio": base.imbalance_ratio}  # fmt: skip
    scaled: dict[str, list] = {r: [] for r in recipes}  # temperature-scaled test logits and labels, per seed
    for recipe in recipes:
        per_seed: list[dict[str, Any]] = []
        for seed in seeds:
            run_config = recipe_config(
                base, recipe, seed, work, backend=config.backend, synthetic_n=config.synthetic_n,
                filter_classifier=erm_models.get(seed), adapt_steps=config.adapt_steps,
            )  # fmt: skip
            plain_erm = not RECIPES[recipe] and seed in erm_reports  # the same settings as the ERM model's run
            report = erm_reports[seed] if plain_erm else train_classifier(run_config, quiet=quiet)
            row: dict[str, Any] = {
                "seed": seed,
                "before": {m: report.test[m] for m in METRICS},
                "after": {m: report.test_temperature_scaled[m] for m in METRICS},
                "confidence_gap": report.test["confidence_gap"],
            }
            if report.robustness is not None:
                row["robustness"] = report.robustness
            if report.missing_modality is not None:
                row["missing_modality"] = report.missing_modality
            row["class_balance"] = {k: report.test[k] for k in ("balanced_accuracy", "worst_class_accuracy")}
            if run_config.synthetic is not None:
                row["erm_agreement"] = _agreement(erm_models[seed], run_config.synthetic)
                row["synthetic_examples"] = report.synthetic_examples
            per_seed.append(row)
            scaled[recipe].append((report.test_logits.double() / report.temperature, report.test_labels))
        summary: dict[str, Any] = {
            f"{m}_{when}": _mean_std([r[when][m] for r in per_seed]) for when in ("before", "after") for m in METRICS
        }
        summary["confidence_gap"] = _mean_std([r["confidence_gap"] for r in per_seed])
        if "erm_agreement" in per_seed[0]:
            summary["erm_agreement"] = _mean_std([r["erm_agreement"] for r in per_seed])
        for field in ("robustness", "class_balance", "missing_modality"):
            if field in per_seed[0]:
                summary[field] = {k: _mean_std([r[field][k] for r in per_seed]) for k in per_seed[0][field]}
        results["recipes"][recipe] = {"per_seed": per_seed, "summary": summary}
    results["baseline"] = recipes[0]
    results["paired"] = {r: paired_differences(scaled[recipes[0]], scaled[r]) for r in recipes[1:]}
    base_rows = results["recipes"][recipes[0]]["per_seed"]
    for field in ("robustness", "class_balance", "missing_modality"):
        if all(field in results["recipes"][r]["summary"] for r in recipes):
            results[f"paired_{field}"] = {
                r: seed_differences(base_rows, results["recipes"][r]["per_seed"], field) for r in recipes[1:]
            }
    results["verdicts"] = verdicts(results)
    paired_by_seed = {k: v for k, v in results.items() if k.startswith("paired_")}
    return CompareResult(
        results["recipes"], seeds, base.labels_per_class, base.data, base.imbalance_ratio, results["baseline"],
        results["paired"], paired_by_seed, results["verdicts"],
    )  # fmt: skip


def _erm_model(base: TrainConfig, seed: int, work: Path, quiet: bool, reports: dict) -> str:
    """The seed's ERM classifier (the same labelled examples, no synthetic data), saved under ``work``; the
    report of a run made here goes to ``reports[seed]``."""
    out = work / f"erm-k{base.labels_per_class}{_lt_tag(base)}-seed{seed}"
    if not (out / "config.json").is_file():
        reports[seed] = train_classifier(replace(base, seed=seed, save_model=str(out)), quiet=quiet)
    return str(out)


def _lt_tag(base: TrainConfig) -> str:
    return "" if base.imbalance_ratio is None else f"-lt{base.imbalance_ratio:g}"


def _agreement(classifier: str, synthetic: str) -> float:
    """Share of a synthetic set's samples whose dominant label ``classifier`` predicts."""
    from latentmix.classifiers.networks import load_classifier
    from latentmix.data import SyntheticDataset

    model, syn = load_classifier(classifier), SyntheticDataset(synthetic)
    if len(syn) == 0:
        return float("nan")
    with torch.inference_mode():
        predicted = model(syn.images(range(len(syn)))).argmax(1)
    return float((predicted == syn.soft_labels.argmax(1)).float().mean())


#: below this share of a synthetic set's samples agreed with by the ERM classifier, a verdict calls them off-class
OFF_CLASS_AGREEMENT = 0.9


def verdicts(results: dict) -> dict[str, str]:
    """One plain sentence per recipe compared with the baseline: helped, hurt, or no measurable difference."""
    out = {}
    base = results["baseline"]
    for recipe, d in results.get("paired", {}).items():
        acc = d["accuracy"]
        mean, (lo, hi) = 100 * acc["mean"], (100 * acc["ci95"][0], 100 * acc["ci95"][1])
        agreement = results["recipes"][recipe]["summary"].get("erm_agreement")
        said = f"{mean:+.1f} accuracy points vs {base} [{lo:+.1f}, {hi:+.1f}]"
        if hi < 0:
            text = f"{recipe} HURT: {said}"
            if agreement is not None and agreement["mean"] < OFF_CLASS_AGREEMENT:
                text += (f"; {base}'s classifier agrees with only {100 * agreement['mean']:.0f} % of its samples "
                         "(off-class samples): try the filtered recipe (+filter) or another backend")  # fmt: skip
            elif agreement is not None:  # on-class samples: filtering them would change little
                text += f"; {base}'s classifier agrees with {100 * agreement['mean']:.0f} % of its samples"
        elif lo > 0:
            text = f"{recipe} helped: {said}"
        else:
            text = f"{recipe}: no measurable difference, {said}"
        out[recipe] = text
    return out


def recipe_config(
    base: TrainConfig,
    recipe: str,
    seed: int,
    work: Path,
    *,
    backend: str | None = None,
    synthetic_n: int = 2000,
    filter_classifier: str | None = None,
    adapt_steps: int = 300,
) -> TrainConfig:
    """``base`` with ``recipe``'s overrides and ``seed``; a synthetic recipe first writes (or resumes)
    that seed's set under ``work``, blended from exactly the seed's labelled examples (and, for ``+filter``
    recipes, filtered by ``filter_classifier``), with ``backend`` (default: the data's embedded latent-diffusion
    model, :data:`~latentmix.configs.DEFAULT_SYNTHESIS_BACKENDS`)."""
    spec = dict(RECIPES[recipe])
    strategy = spec.pop("synthetic_strategy", None)
    recipe_name = strategy if spec.pop("synthetic_recipe", False) else None  # a synthesize --recipe
    use_filter = spec.pop("synthetic_filter", False)
    adapt = spec.pop("synthetic_adapt", None)
    balance = 0 if spec.pop("synthetic_balance", False) else None  # 0: up to the largest class's count
    config = replace(base, seed=seed, **spec)
    if strategy is None:
        return config
    if use_filter and filter_classifier is None:
        raise ValueError(f"recipe {recipe} filters its blends with the seed's ERM classifier; none was given")
    tag = (
        ("-filtered" if use_filter else "")
        + ("-balance" if balance is not None else "")
        + (f"-{adapt}" if adapt else "")
    )
    out = work / f"{strategy}{tag}-k{base.labels_per_class}{_lt_tag(base)}-seed{seed}"
    chosen: dict[str, Any] = {"recipe": recipe_name} if recipe_name else {"strategy": strategy}
    backend = backend_for(backend, base.data, DEFAULT_SYNTHESIS_BACKENDS)
    if adapt is not None:
        adapter = _adapter(base, backend, seed, work, adapt_steps)
        chosen.update(lora=(str(adapter),), prompts=str(adapter / "prompts.json"))
    synthesis = SynthesisConfig(
        **chosen,
        backend=backend,
        data=base.data,
        seed=seed,
        labels_per_class=base.labels_per_class,
        subset_seed=seed,
        imbalance_ratio=base.imbalance_ratio,
        balance=balance,
        filter_classifier=filter_classifier if use_filter else None,
        out=str(out),
    )
    if balance is None and synthesis.per_image is None:
        synthesis = replace(synthesis, n=synthetic_n)
    synthesize(synthesis, quiet=True)
    return replace(config, synthetic=str(out))


def _adapter(base: TrainConfig, backend: str, seed: int, work: Path, steps: int) -> Path:
    """The seed's `fit lora` adapter of ``backend`` (fitted on exactly the seed's labelled examples, seed ``seed``),
    made under ``work`` unless already there."""
    from latentmix.configs import LoRAFitConfig
    from latentmix.train.fit_adapter import fit_adapter

    if base.imbalance_ratio is not None:
        raise ValueError("+lora recipes adapt to a balanced draw of labelled examples; drop --imbalance-ratio")
    out = work / f"lora-{Path(backend).name}-k{base.labels_per_class}-seed{seed}-steps{steps}"
    if not (out / "config.json").is_file():
        config = LoRAFitConfig(backend=backend, data=base.data, labels_per_class=base.labels_per_class,
                               subset_seed=seed, seed=seed, steps=steps)  # fmt: skip
        fit_adapter(config, out, quiet=True)
    return out


def paired_differences(baseline: list, other: list, *, resamples: int = BOOTSTRAP, seed: int = 0) -> dict:
    """Mean over seeds of (other − baseline) for accuracy, NLL and ECE of temperature-scaled logits,
    with a 95 % percentile interval from resampling the test examples (one resample for all seeds and
    both recipes, so the comparison stays paired)."""
    from latentmix.classifiers.metrics import accuracy, expected_calibration_error, nll

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


def seed_differences(baseline: list[dict], other: list[dict], field: str = "robustness") -> dict[str, dict]:
    """Per number of the per-seed ``field`` (robust accuracies, class-balance accuracies): mean over seeds of
    (other − baseline), with a 95 % t interval over the seeds (the seeds are the replicates)."""
    from scipy import stats

    out = {}
    for key in baseline[0][field]:
        d = [o[field][key] - b[field][key] for b, o in zip(baseline, other, strict=True)]
        mean = sum(d) / len(d)
        if len(d) > 1:
            sd = (sum((v - mean) ** 2 for v in d) / (len(d) - 1)) ** 0.5
            half = float(stats.t.ppf(0.975, len(d) - 1)) * sd / len(d) ** 0.5
        else:
            half = float("nan")
        out[key] = {"mean": mean, "ci95": [mean - half, mean + half]}
    return out


def _per_seed_lines(results: dict, field: str, title: str) -> list[str]:
    """A mean ± std table of the per-seed ``field`` numbers (in %), and its paired differences with the baseline."""
    recipes = results["recipes"]
    first = next(iter(recipes.values()))["summary"].get(field)
    if not first or not all(field in r["summary"] for r in recipes.values()):
        return []
    keys = list(first)
    lines = ["", f"{title} (mean ± std over seeds):", "",
             "| recipe | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]  # fmt: skip
    for name, r in recipes.items():
        numbers = r["summary"][field]
        cells = [f"{100 * numbers[k]['mean']:.1f} ± {100 * numbers[k]['std']:.1f}" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if results.get(f"paired_{field}"):
        lines += ["", f"paired with {results['baseline']} (points; mean over seeds, 95 % t interval over seeds):", "",
                  "| recipe | " + " | ".join(f"Δ {k}" for k in keys) + " |", "|---|" + "---|" * len(keys)]  # fmt: skip
        for name, d in results[f"paired_{field}"].items():
            cells = [
                f"{100 * d[k]['mean']:+.1f} [{100 * d[k]['ci95'][0]:+.1f}, {100 * d[k]['ci95'][1]:+.1f}]" for k in keys
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _reads_text(summary: dict) -> bool:
    """Whether a recipe's classifier read the captions (its image-only accuracy differs from its accuracy)."""
    numbers = summary.get("missing_modality")
    return numbers is not None and numbers["both"]["mean"] != numbers["image_only"]["mean"]


def format_table(result: CompareResult) -> str:
    """Markdown: mean ± std per recipe; accuracy in %, NLL, ECE before → after temperature scaling."""
    results = result.to_dict()

    def ms(s, scale=1.0, digits=3):
        return f"{s['mean'] * scale:.{digits}f} ± {s['std'] * scale:.{digits}f}"

    lines = [
        "| recipe | accuracy % | NLL | ECE | NLL (T-scaled) | ECE (T-scaled) | conf − acc | ERM agrees % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["recipes"].items():
        s = r["summary"]
        agree = ms(s["erm_agreement"], 100, 1) if "erm_agreement" in s else "–"
        lines.append(
            f"| {name} | {ms(s['accuracy_before'], 100, 1)} | {ms(s['nll_before'])} | {ms(s['ece_before'])} | "
            f"{ms(s['nll_after'])} | {ms(s['ece_after'])} | {ms(s['confidence_gap'])} | {agree} |"
        )
    lines.append("")
    lines.append(
        "per seed (accuracy %): "
        + "; ".join(
            f"{name}: " + ", ".join(f"{100 * p['before']['accuracy']:.1f}" for p in r["per_seed"])
            for name, r in results["recipes"].items()
        )
    )
    if results.get("verdicts"):
        lines += ["", *results["verdicts"].values()]
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
    lines += _per_seed_lines(results, "robustness", "robust test accuracy % (inputs in [-1, 1])")
    if any(_reads_text(r["summary"]) for r in results["recipes"].values()):
        lines += _per_seed_lines(
            results,
            "missing_modality",
            "test accuracy % given both modalities, the image only, the caption only "
            "(a classifier that cannot read what is left: the most frequent class)",
        )
    if results.get("imbalance_ratio") is not None:
        lines += _per_seed_lines(
            results, "class_balance", "class balance: test accuracy % per class, averaged and worst"
        )
    return "\n".join(lines)
