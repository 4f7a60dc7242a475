"""The ``latentmix`` command: parse arguments, call one library function, print where things are.

Errors from bad input print one line (``latentmix: error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from dataclasses import fields

from latentmix.version import __version__


def _pair(text: str) -> tuple[str, str]:
    parts = text.split(":")
    if len(parts) != 2 or not all(parts):
        raise argparse.ArgumentTypeError(f"expected A:B, got {text!r}")
    return parts[0], parts[1]


def _index_pair(text: str) -> tuple[int, int]:
    a, b = _pair(text)
    try:
        return int(a), int(b)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two integer indices I:J, got {text!r}") from None


def _temperature_prior(text: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0 or 'none', got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0 or 'none', got {text!r}")
    return value


def _temperature_kwargs(args) -> dict:
    """``temperature_prior`` for TrainConfig only when the flag was given (its default lives there)."""
    return {"temperature_prior": args.temperature_prior} if hasattr(args, "temperature_prior") else {}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--num-inference-steps", type=_positive_int, help="diffusion backends: DDIM steps (default: the backend's)"
    )
    parser.add_argument(
        "--guidance-scale",
        type=float,
        help="diffusion backends: classifier-free guidance, >= 1 (default: the backend's)",
    )


def _prompt_pairs(prompts: list[str] | None) -> list[tuple[str, str]] | None:
    if prompts is None:
        return None
    if len(prompts) % 2:
        raise ValueError(f"--prompts takes pairs (A B [C D ...]), one walk per pair; got {len(prompts)} texts")
    return list(zip(prompts[::2], prompts[1::2]))


def _command(argv: list[str]) -> str:
    """The command line as typed, for model cards."""
    return "latentmix " + " ".join(shlex.quote(a) for a in argv)


def _saved(out: str, metrics: dict) -> str:
    return f"saved {out}: " + ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
    )


def _add_config_flags(parser: argparse.ArgumentParser, config_class) -> None:
    """One flag per field of a config dataclass (``--latent-dim`` for ``latent_dim``)."""
    for f in fields(config_class):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool) and f.default:
            parser.add_argument(
                "--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false", help=f"turn off {f.name}"
            )
        elif f.type in ("bool", bool):
            parser.add_argument(flag, action="store_true")
        elif "tuple" in str(f.type):
            parser.add_argument(flag, type=_positive_int, nargs="+", default=list(f.default))
        else:
            kind = {"int": int, "float": float, "str": str}.get(str(f.type).split(" ")[0], str)
            if f.name in ("image_size", "channels"):
                kind = _positive_int
            parser.add_argument(flag, type=kind, default=f.default, help=f"default: {f.default}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latentmix", description="Generative latent interpolation.")
    parser.add_argument("--version", action="version", version=f"latentmix {__version__}")
    parser.add_argument("--quiet", action="store_true", help="hide progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the main job on the embedded default model")
    demo.add_argument("--out", default="latentmix-demo", help="output directory (default: latentmix-demo)")
    demo.add_argument("--seed", type=int, default=0)

    grid = sub.add_parser("grid", help="interpolation grid (PNG, optional GIF) between real or prior endpoints")
    grid.add_argument(
        "--backend", default="digits-vae", help="embedded name, directory or hub id (default: digits-vae)"
    )
    grid.add_argument("--method", choices=["slerp", "lerp"], help="default: the backend's own")
    grid.add_argument("--steps", type=int, default=8, help="points per walk, endpoints included (default: 8)")
    ends = grid.add_mutually_exclusive_group()
    ends.add_argument("--pairs", nargs="+", type=_index_pair, metavar="I:J", help="endpoints by dataset index")
    ends.add_argument("--classes", nargs="+", type=_pair, metavar="A:B", help="one random image of each class")
    ends.add_argument("--prior", type=_positive_int, metavar="N", help="N pairs drawn from the prior")
    grid.add_argument("--data", default="digits", help="'digits' or an image folder (default: digits)")
    grid.add_argument("--split", default="test", choices=["train", "test", "all"], help="default: test")
    grid.add_argument("--seed", type=int, default=0)
    grid.add_argument("--out", required=True, help="PNG path")
    grid.add_argument("--gif", help="also write an animated GIF here")
    grid.add_argument("--refine-steps", type=int, help="GAN backends: inversion refinement steps (default: 100)")
    grid.add_argument(
        "--prompts",
        nargs="+",
        metavar="TEXT",
        help="text-conditioned backends: A B [C D ...], one walk A -> B per pair "
        "between prior endpoints (real endpoints use their captions)",
    )
    grid.add_argument(
        "--text-method",
        choices=["lerp", "slerp"],
        default="lerp",
        help="how the text conditioning walks (default: lerp)",
    )
    _add_sampling_flags(grid)

    syn = sub.add_parser("synthesize", help="write a paired augmentation set: blended images, captions, soft labels")
    syn.add_argument("--backend", default="digits-vae", help="embedded name, directory or hub id (default: digits-vae)")
    syn.add_argument("--data", default="digits", help="'digits' or an image folder (default: digits)")
    syn.add_argument("--split", default="train", choices=["train", "test", "all"], help="source split (default: train)")
    syn.add_argument(
        "--num-samples",
        "-n",
        dest="n",
        type=_positive_int,
        default=1000,
        help="number of synthetic samples (default: 1000)",
    )
    syn.add_argument("--strategy", default="intra-class", choices=["random", "intra-class", "inter-class", "knn"])
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--alpha", type=float, default=1.0, help="λ ~ Beta(alpha, alpha) (default: 1, uniform)")
    syn.add_argument("--lam", type=float, help="a fixed λ (weight of the first source) instead of drawing it")
    syn.add_argument("--allow-extrapolation", action="store_true", help="accept --lam outside [0, 1]")
    syn.add_argument("--gamma", type=float, default=1.0, help="label sharpening exponent (Diff-Mix; default: 1)")
    syn.add_argument(
        "--class-pairs", nargs="+", type=_index_pair, metavar="A:B", help="inter-class: allowed class pairs"
    )
    syn.add_argument("--k", type=_positive_int, default=5, help="knn: neighbours to choose from (default: 5)")
    syn.add_argument("--method", choices=["slerp", "lerp"], help="image-latent interpolator (default: the backend's)")
    syn.add_argument(
        "--text-encoder", default="all-MiniLM-L6-v2", help="hub id or directory (default: all-MiniLM-L6-v2, offline)"
    )
    syn.add_argument("--shard-size", type=_positive_int, default=256, help="samples per shard and batch (default: 256)")
    syn.add_argument("--refine-steps", type=int, help="GAN backends: inversion refinement steps (default: 100)")
    syn.add_argument(
        "--labels-per-class", type=_positive_int, help="blend only K labelled examples per class (low-data runs)"
    )
    syn.add_argument("--subset-seed", type=int, default=0, help="which K per class (same draw as `latentmix train`)")
    _add_sampling_flags(syn)
    syn.add_argument("--out", required=True, help="output directory (an existing run with the same settings resumes)")

    ev = sub.add_parser("evaluate", help="quality report of a backend on the digits test split")
    ev.add_argument("--backend", default="digits-vae", help="embedded name, directory or hub id (default: digits-vae)")
    ev.add_argument("--json", help="also write the full report here")
    ev.add_argument(
        "--refine-steps", type=int, default=200, help="refinement steps for inversion backends (default: 200)"
    )
    ev.add_argument("--seed", type=int, default=0)
    _add_sampling_flags(ev)

    tr = sub.add_parser(
        "train", help="train a classifier (real data, optional synthetic set, mixup); report accuracy and calibration"
    )
    tr.add_argument(
        "--data", default="digits", help="'digits', an image folder with train/ and test/, or a .npz feature file"
    )
    tr.add_argument("--labels-per-class", type=_positive_int, help="K labelled examples per class (low-data run)")
    tr.add_argument("--synthetic", help="a set written by `latentmix synthesize`")
    tr.add_argument(
        "--synthetic-ratio", type=float, default=0.5, help="probability a batch row is synthetic (default: 0.5)"
    )
    tr.add_argument("--gamma", type=float, help="re-sharpen synthetic labels (Diff-Mix)")
    tr.add_argument(
        "--mixup",
        default="none",
        choices=["none", "input", "cutmix", "manifold", "cross-modal"],
        help="cross-modal: image + caption fusion classifier (on digits the captions name the label)",
    )
    tr.add_argument(
        "--alpha", type=float, help="Beta(alpha, alpha) for mixup (default: 0.4 input, 1.0 cutmix, 2.0 manifold)"
    )
    tr.add_argument("--label-smoothing", type=float, default=0.0)
    tr.add_argument("--steps", type=_positive_int, default=1500)
    tr.add_argument("--batch-size", type=_positive_int, default=64)
    tr.add_argument("--lr", type=float, default=2e-3)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument(
        "--temperature-prior",
        type=_temperature_prior,
        default=argparse.SUPPRESS,
        metavar="SIGMA",
        help="σ of the log-normal prior on the fitted temperature; 'none' for the plain NLL fit (default: 0.3)",
    )
    tr.add_argument("--checkpoint-dir", help="save checkpoints here; a restarted run resumes from them")
    tr.add_argument("--json", help="write all metrics (before and after temperature scaling) here")
    tr.add_argument("--reliability", help="write a reliability diagram PNG here")

    cmp = sub.add_parser(
        "compare", help="recipes x seeds: mean ± std of accuracy, NLL, ECE before/after temperature scaling"
    )
    cmp.add_argument("--data", default="digits")
    cmp.add_argument("--labels-per-class", type=_positive_int, default=5)
    cmp.add_argument(
        "--recipes",
        nargs="+",
        default=None,
        help="default: erm input-mixup manifold-mixup blends-intra blends-inter blends-intra+manifold",
    )
    cmp.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    cmp.add_argument("--steps", type=_positive_int, default=1500)
    cmp.add_argument(
        "--backend",
        default="digits-ldm",
        help="backend for the synthetic recipes (default: digits-ldm, the study's best)",
    )
    cmp.add_argument(
        "--synthetic-n", type=_positive_int, default=2000, help="synthetic samples per seed (default: 2000)"
    )
    cmp.add_argument(
        "--temperature-prior",
        type=_temperature_prior,
        default=argparse.SUPPRESS,
        metavar="SIGMA",
        help="σ of the log-normal prior on the fitted temperature; 'none' for the plain NLL fit (default: 0.3)",
    )
    cmp.add_argument("--json", help="write all numbers here")

    fit = sub.add_parser("fit", help="train a backend")
    fit_sub = fit.add_subparsers(dest="model", required=True)
    vae = fit_sub.add_parser("vae", help="fit latentmix's convolutional VAE")
    from latentmix.train.fit_vae import VAEFitConfig

    _add_config_flags(vae, VAEFitConfig)
    vae.add_argument("--out", required=True, help="directory to save the backend to")
    gan = fit_sub.add_parser("gan", help="fit a GAN with its inversion encoder (resumes an interrupted run)")
    from latentmix.train.fit_gan import GANFitConfig

    _add_config_flags(gan, GANFitConfig)
    gan.add_argument("--out", required=True, help="directory to save the backend to (training state: OUT.train/)")
    ldm = fit_sub.add_parser(
        "ldm", help="fit a text-conditioned latent-diffusion UNet on an autoencoder's latents (resumes)"
    )
    from latentmix.train.fit_ldm import LDMFitConfig

    _add_config_flags(ldm, LDMFitConfig)
    ldm.add_argument("--out", required=True, help="directory to save the backend to (training state: OUT.train/)")
    ref = fit_sub.add_parser("reference-classifier", help="fit the digits classifier that judges `latentmix evaluate`")
    ref.add_argument("--epochs", type=_positive_int, default=60)
    ref.add_argument("--seed", type=int, default=0)
    ref.add_argument("--out", required=True)
    return parser


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    if args.command == "demo":
        from latentmix.demo import run_demo

        written = run_demo(args.out, seed=args.seed, quiet=args.quiet)
        print("latentmix demo: wrote")
        for name, path in written.items():
            print(f"  {name:<22} {path}")
        return 0
    if args.command == "grid":
        from latentmix.grid import interpolation_grid

        result = interpolation_grid(
            args.backend,
            method=args.method,
            steps=args.steps,
            pairs=args.pairs,
            classes=args.classes,
            prior=args.prior,
            data=args.data,
            split=args.split,
            seed=args.seed,
            out=args.out,
            gif=args.gif,
            refine_steps=args.refine_steps,
            prompts=_prompt_pairs(args.prompts),
            text_method=args.text_method,
            num_inference_steps=args.num_inference_steps,
            guidance_scale=args.guidance_scale,
        )
        print(f"wrote {result.png} ({len(result.row_labels)} pairs x {args.steps} steps, {result.method})")
        if result.gif:
            print(f"wrote {result.gif}")
        return 0
    if args.command == "synthesize":
        from accelerate import PartialState

        from latentmix.synthesize import SynthesisConfig, synthesize

        config = SynthesisConfig(
            backend=args.backend,
            data=args.data,
            split=args.split,
            n=args.n,
            strategy=args.strategy,
            seed=args.seed,
            alpha=args.alpha,
            lam=args.lam,
            gamma=args.gamma,
            k=args.k,
            method=args.method,
            class_pairs=tuple(args.class_pairs) if args.class_pairs else None,
            text_encoder=args.text_encoder,
            shard_size=args.shard_size,
            allow_extrapolation=args.allow_extrapolation,
            refine_steps=args.refine_steps,
            labels_per_class=args.labels_per_class,
            subset_seed=args.subset_seed,
            num_inference_steps=args.num_inference_steps,
            guidance_scale=args.guidance_scale,
        )
        result = synthesize(config, args.out, quiet=args.quiet)
        if PartialState().is_main_process:
            print(
                f"wrote {result.num_samples} samples to {result.out} ({result.written} new this run): "
                "images/, metadata.jsonl, embeddings.safetensors, manifest.json"
            )
        return 0
    if args.command == "train":
        import json
        from pathlib import Path

        from latentmix.atomic import atomic_write_text
        from latentmix.metrics import calibration_bins
        from latentmix.train.classifier import TrainConfig, train_classifier

        for flag, value, suffix in (("--json", args.json, ".json"), ("--reliability", args.reliability, ".png")):
            if value and Path(value).suffix.lower() != suffix:
                raise ValueError(f"{flag} must be a {suffix} path, got {value}")
        config = TrainConfig(
            data=args.data,
            labels_per_class=args.labels_per_class,
            synthetic=args.synthetic,
            synthetic_ratio=args.synthetic_ratio,
            gamma=args.gamma,
            mixup=args.mixup,
            alpha=args.alpha,
            label_smoothing=args.label_smoothing,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            checkpoint_dir=args.checkpoint_dir,
            **_temperature_kwargs(args),
        )
        report = train_classifier(config, quiet=args.quiet)
        from accelerate import PartialState

        if not PartialState().is_main_process:
            return 0
        for name in ("test", "test_temperature_scaled"):
            print(f"{name:<24} " + "  ".join(f"{k}={v:.4f}" for k, v in report[name].items()))
        print(f"temperature {report['temperature']:.3f} (fitted on {report['val_examples']} validation examples)")
        if args.reliability:
            from latentmix.viz import reliability_diagram

            logits, labels = report["_test_logits"].double(), report["_test_labels"]
            reliability_diagram(
                calibration_bins(logits.softmax(1), labels),
                calibration_bins((logits / report["temperature"]).softmax(1), labels),
                args.reliability,
                title=args.mixup,
            )
            print(f"wrote {args.reliability}")
        if args.json:
            atomic_write_text(
                Path(args.json), json.dumps({k: v for k, v in report.items() if not k.startswith("_")}, indent=2) + "\n"
            )
            print(f"wrote {args.json}")
        return 0
    if args.command == "compare":
        from latentmix.compare import DEFAULT_RECIPES, format_table, run_compare, save_results
        from latentmix.train.classifier import TrainConfig

        base = TrainConfig(
            data=args.data, labels_per_class=args.labels_per_class, steps=args.steps, **_temperature_kwargs(args)
        )
        results = run_compare(
            base,
            list(args.recipes or DEFAULT_RECIPES),
            args.seeds,
            backend=args.backend,
            synthetic_n=args.synthetic_n,
            quiet=args.quiet,
        )
        print(format_table(results))
        if args.json:
            save_results(results, args.json)
            print(f"wrote {args.json}")
        return 0
    if args.command == "evaluate":
        import json
        from pathlib import Path

        from latentmix.atomic import atomic_write_text
        from latentmix.evaluate import EvalConfig, evaluate_backend, format_report

        if args.json and Path(args.json).suffix.lower() != ".json":
            raise ValueError(f"--json must be a .json path, got {args.json}")
        report = evaluate_backend(
            args.backend,
            EvalConfig(
                refine_steps=args.refine_steps,
                seed=args.seed,
                num_inference_steps=args.num_inference_steps,
                guidance_scale=args.guidance_scale,
            ),
            quiet=args.quiet,
        )
        report["backend_name"] = args.backend
        print(format_report(report))
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(Path(args.json), json.dumps(report, indent=2) + "\n")
            print(f"wrote {args.json}")
        return 0
    if args.command == "fit" and args.model in ("vae", "gan", "ldm"):
        from accelerate import PartialState

        from latentmix.train.fit_gan import GANFitConfig, fit_gan
        from latentmix.train.fit_ldm import LDMFitConfig, fit_ldm
        from latentmix.train.fit_vae import VAEFitConfig, fit_vae

        config_class, fit = {
            "vae": (VAEFitConfig, fit_vae),
            "gan": (GANFitConfig, fit_gan),
            "ldm": (LDMFitConfig, fit_ldm),
        }[args.model]
        values = {f.name: getattr(args, f.name) for f in fields(config_class)}
        values.update({k: tuple(v) for k, v in values.items() if isinstance(v, list)})
        _, metrics = fit(config_class(**values), args.out, quiet=args.quiet, command=_command(argv))
        if PartialState().is_main_process:
            print(_saved(args.out, metrics))
        return 0
    if args.command == "fit" and args.model == "reference-classifier":
        from latentmix.reference import fit_reference_classifier

        _, metrics = fit_reference_classifier(
            args.out, epochs=args.epochs, seed=args.seed, quiet=args.quiet, command=_command(argv)
        )
        print(_saved(args.out, metrics))
        return 0
    raise AssertionError(f"unhandled command {args.command}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.quiet:
        import os

        os.environ["TQDM_DISABLE"] = "1"
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as transformers_logging

        disable_progress_bars()
        transformers_logging.disable_progress_bar()
    else:
        from latentmix.backends.ldm import LatentDiffusionBackend

        LatentDiffusionBackend.show_progress = True
    try:
        return _run(args, argv)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"latentmix: error: {message}", file=sys.stderr)
        return 2
    except OSError as exc:  # full disk, permissions: nothing half-written is left (writes are atomic)
        print(f"latentmix: error: {exc.strerror or exc} ({exc.filename or 'output'})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("latentmix: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
