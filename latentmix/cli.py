"""The ``latentmix`` command: parse arguments, call one library function, print where things are.

Every subcommand's flags are generated from its settings dataclass in :mod:`latentmix.configs` (flag
names, defaults, choices, help text), so the command line and the library cannot disagree. Only the
handlers import the heavy modules, so ``latentmix --help`` starts at once.

Bad input — a bad flag value or a setting the library refuses — prints one line (``latentmix: error:
...``) and exits with status 2. Programming errors are not disguised: they end in a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from latentmix import configs
from latentmix.configs.options import ArgumentParser, add_flags, from_args
from latentmix.version import __version__


def _command(argv: list[str]) -> str:
    """The command line as typed, for model cards."""
    return "latentmix " + " ".join(shlex.quote(a) for a in argv)


def _saved(out: str, metrics: dict) -> str:
    shown = (f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
    return f"saved {out}: " + ", ".join(shown)


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def _write_json(path: str, data: dict) -> None:
    from latentmix.utils.atomic import atomic_write_text

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(path), json.dumps(data, indent=2) + "\n")
    print(f"wrote {path}")


_default_showwarning = warnings.showwarning

# -- handlers: one library call each ---------------------------------------------------------------------


def _demo(args: argparse.Namespace, argv: list[str]) -> int:
    from latentmix.jobs.demo import run_demo

    result = run_demo(from_args(configs.DemoConfig, args), quiet=args.quiet)
    print("latentmix demo: wrote")
    for name, path in result.written.items():
        print(f"  {name:<22} {path}")
    return 0


def _grid(args: argparse.Namespace, argv: list[str]) -> int:
    config = from_args(configs.GridConfig, args)
    config.validate()  # before the heavy imports: a bad flag answers at once
    from latentmix.jobs.grid import interpolation_grid

    result = interpolation_grid(config=config, quiet=args.quiet)
    print(f"wrote {result.png} ({len(result.row_labels)} pairs x {config.steps} steps, {result.method})")
    if result.gif:
        print(f"wrote {result.gif}")
    return 0


def _walk(args: argparse.Namespace, argv: list[str]) -> int:
    config = from_args(configs.WalkConfig, args)
    config.validate()
    from latentmix.jobs.walk import walk

    result = walk(config, quiet=args.quiet)
    w = result.walk
    spacing = ""
    if w.cv is not None and w.cv_uniform is not None:
        spacing = f", spacing cv {float(w.cv[0]):.3f} (uniform t: {float(w.cv_uniform[0]):.3f})"
    print(
        f"wrote {len(result.frames)} frames through {len(result.labels)} keyframes to {result.out / 'frames'}{spacing}"
    )
    for path in (result.video, result.gif, result.manifest):
        if path is not None:
            print(f"wrote {path}")
    return 0


def _synthesize(args: argparse.Namespace, argv: list[str]) -> int:
    config = from_args(configs.SynthesisConfig, args)
    config.validate()
    from latentmix.jobs.synthesize import synthesize

    result = synthesize(config, quiet=args.quiet)
    if _is_main_process():
        kept = f" (kept {result.num_samples} of {result.generated} by the filter)" if config.filter_classifier else ""
        where = {"imagefolder": "images/, ", "webdataset": "shards/*.tar, ", "parquet": "data/*.parquet, "}
        print(
            f"wrote {result.num_samples} samples to {result.out} ({result.written} new this run){kept}: "
            f"{where[config.set_format]}metadata.jsonl, shards/ (embeddings), manifest.json"
        )
        if config.balance is not None and result.out is not None:
            print(_balance_summary(json.loads((result.out / "manifest.json").read_text(encoding="utf-8"))["balance"]))
    return 0


def _balance_summary(balance: dict) -> str:
    """What the manifest says was balanced: each class's real + synthetic count, and the classes that fell short of
    the target, with why (a filter kept fewer blends than were made)."""
    target, total = balance["target"], balance["total"]
    shown = ", ".join(f"{k} {balance['real'][k]}+{balance['synthetic'][k]}" for k in balance["real"])
    short = [k for k in total if total[k] < target]
    if not short:
        return f"balanced to {target} per class (real + synthetic): {shown}"
    made = balance.get("made", {})
    why = "; ".join(f"{k} {total[k]} (the filter kept {balance['synthetic'][k]} of {made.get(k, '?')})" for k in short)
    return f"balanced towards {target} per class (real + synthetic): {shown}; short of {target}: {why}"


def _explore(args: argparse.Namespace, argv: list[str]) -> int:
    config = from_args(configs.ExploreConfig, args)
    config.validate()
    from latentmix.explore import explorer_for
    from latentmix.explore.serving import address, check_serving, exposure_warning

    check_serving(config)  # before the model loads: a bad host, out or limit answers at once
    explorer = explorer_for(config)
    try:
        from latentmix.explore.app import launch
    except ImportError as exc:
        raise ValueError(f'explore needs Gradio: pip install "latentmix[explore]" ({exc})') from None
    auth = tuple(config.auth.split(":", 1)) if config.auth else None
    app = launch(explorer, host=config.host, port=config.port, block=False, auth=auth)
    where = address(config.host, app.server_port)
    print(f"latentmix explore: serving {where} (exports go to {config.out}); Ctrl-C stops it", flush=True)
    warning = exposure_warning(config)
    if warning is not None:
        print(f"latentmix: warning: {warning}", file=sys.stderr, flush=True)
    try:
        app.block_thread()
    finally:
        app.close()
    return 0


def _evaluate(args: argparse.Namespace, argv: list[str]) -> int:
    from latentmix.jobs.evaluate import evaluate_backend, format_report

    config = from_args(configs.EvalConfig, args)
    if args.json is not None:
        from latentmix.utils.validation import output_file

        output_file(args.json, "--json", (".json",))
    report = evaluate_backend(config, quiet=args.quiet)
    print(format_report(report))
    if args.json:
        _write_json(args.json, report.to_dict())
    return 0


def _evaluate_pairs(args: argparse.Namespace, argv: list[str]) -> int:
    from latentmix.jobs.evaluate_pairs import evaluate_pairs, format_pair_report

    if args.json is not None:
        from latentmix.utils.validation import output_file

        output_file(args.json, "--json", (".json",))
    report = evaluate_pairs(from_args(configs.PairEvalConfig, args), quiet=args.quiet)
    print(format_pair_report(report))
    if args.json:
        _write_json(args.json, report.to_dict())
    return 0


def _export(args: argparse.Namespace, argv: list[str]) -> int:
    config = from_args(configs.ExportConfig, args)
    config.validate()
    from latentmix.jobs.export import export_dataset

    result = export_dataset(config, quiet=args.quiet)
    print(f"wrote {result.out}: " + ", ".join(result.counts) + " (metadata.jsonl each)")
    return 0


def _augment(args: argparse.Namespace, argv: list[str]) -> int:
    config = from_args(configs.AugmentConfig, args)
    config.validate()
    from latentmix.jobs.augment import augment_dataset

    result = augment_dataset(config, quiet=args.quiet)
    print(
        f"wrote {result.out}: images/, metadata.jsonl ({config.mode}: {', '.join(config.transforms)}, p={config.p:g})"
    )
    return 0


def _edit(args: argparse.Namespace, argv: list[str]) -> int:
    config = from_args(configs.EditConfig, args)
    config.validate()
    from latentmix.jobs.edit import edit

    result = edit(config, quiet=args.quiet)
    d = result.direction
    print(f"wrote {len(result.files)} images edited along {d.factor} {d.source} -> {d.target} to {result.out}")
    if any(result.matched):
        shared = sorted({name for matched in result.matched for name in matched})
        print(f"each along its matched direction (shared factors read by the reference: {', '.join(shared)})")
    elif config.neighbours:
        print(f"no {config.neighbours} train latents of each value share an image's other factors: global direction")
    print(f"wrote {result.sheet}")
    return 0


def _train(args: argparse.Namespace, argv: list[str]) -> int:
    outputs = from_args(configs.ReportOutputs, args)
    outputs.validate()
    config = from_args(configs.TrainConfig, args)
    config.validate()
    from latentmix.train.classifier import train_classifier

    report = train_classifier(config, quiet=args.quiet, command=_command(argv))
    if not _is_main_process():
        return 0
    for name, numbers in (("test", report.test), ("test_temperature_scaled", report.test_temperature_scaled)):
        print(f"{name:<24} " + "  ".join(f"{k}={v:.4f}" for k, v in numbers.items()))
    print(f"temperature {report.temperature:.3f} (fitted on {report.val_examples} validation examples)")
    if report.robustness is not None:
        shown = ", ".join(f"{k} {100 * v:.1f}" for k, v in report.robustness.items())
        print(f"robust accuracy % (inputs in [-1, 1]): {shown}")
    if report.missing_modality is not None:
        shown = ", ".join(f"{k} {100 * v:.1f}" for k, v in report.missing_modality.items())
        print(f"test accuracy % by what the classifier is given: {shown}")
    if report.synthetic_agreement is not None:
        share = 100 * report.synthetic_agreement
        print(f"synthetic set: the trained classifier predicts the dominant label of {share:.1f} % of its samples")
    if outputs.reliability:
        from latentmix.classifiers.metrics import calibration_bins
        from latentmix.utils.viz import reliability_diagram

        logits, labels = report.test_logits.double(), report.test_labels
        before = calibration_bins(logits.softmax(1), labels)
        after = calibration_bins((logits / report.temperature).softmax(1), labels)
        reliability_diagram(before, after, outputs.reliability, title=report.config.mixup)
        print(f"wrote {outputs.reliability}")
    if outputs.json:
        _write_json(outputs.json, report.to_dict())
    return 0


def _compare(args: argparse.Namespace, argv: list[str]) -> int:
    from latentmix.jobs.compare import format_table, run_compare

    if args.json is not None:
        from latentmix.utils.validation import output_file

        output_file(args.json, "--json", (".json",))
    base = from_args(configs.TrainConfig, args, defaults=configs.COMPARE_TRAIN_DEFAULTS)
    result = run_compare(from_args(configs.CompareConfig, args, train=base), quiet=args.quiet)
    print(format_table(result))
    if args.json:
        _write_json(args.json, result.to_dict())
    return 0


def _fit(args: argparse.Namespace, argv: list[str]) -> int:
    config = from_args(FIT_HELP[args.model][0], args)
    config.validate()
    result = _fitters()[args.model](config, args.out, quiet=args.quiet, command=_command(argv))
    if _is_main_process():
        print(_saved(args.out, result.metrics))
    return 0


def _fitters() -> dict[str, Callable]:
    from latentmix.train.fit_adapter import fit_adapter
    from latentmix.train.fit_align import fit_align
    from latentmix.train.fit_gan import fit_gan
    from latentmix.train.fit_ldm import fit_ldm
    from latentmix.train.fit_reference import fit_reference_classifier
    from latentmix.train.fit_vae import fit_vae

    return {
        "vae": fit_vae, "gan": fit_gan, "ldm": fit_ldm,
        "reference-classifier": fit_reference_classifier, "align": fit_align,
        "lora": fit_adapter, "textual-inversion": fit_adapter,
    }  # fmt: skip


# -- the parser --------------------------------------------------------------------------------------------

FIT_HELP = {
    "vae": (configs.VAEFitConfig, "fit latentmix's convolutional VAE"),
    "gan": (configs.GANFitConfig, "fit a GAN with its inversion encoder (resumes an interrupted run)"),
    "ldm": (configs.LDMFitConfig, "fit a text-conditioned latent-diffusion UNet on an autoencoder's latents (resumes)"),
    "reference-classifier": (
        configs.ReferenceFitConfig,
        "fit the classifier that judges `latentmix evaluate` (one head per factor where the data has factors)",
    ),
    "align": (
        configs.AlignFitConfig,
        "fit the image-text alignment model that judges `latentmix evaluate-pairs` (CLIP-style, InfoNCE)",
    ),
    "lora": (
        configs.LoRAFitConfig,
        "adapt a diffusion backend to your labelled images: peft LoRA on the UNet's attention + one token per class",
    ),
    "textual-inversion": (
        configs.TextualInversionFitConfig,
        "learn one token per class for a diffusion backend's text encoder (nothing else changes)",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="latentmix", description="Generative latent interpolation.")
    parser.add_argument("--version", action="version", version=f"latentmix {__version__}")
    parser.add_argument("--quiet", action="store_true", help="hide progress bars")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let a model directory's own Python code run when its text encoder needs it (auto_map). RISK: that code "
        "runs with your rights; only for directories you trust. Off: such directories are refused",
    )
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=None,
        metavar="N",
        help="largest image (width x height) read from data folders; larger ones are refused as possible "
        "decompression bombs (default: 50,000,000)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the main jobs on the embedded default models")
    add_flags(demo, configs.DemoConfig)
    demo.set_defaults(handler=_demo)

    grid = sub.add_parser("grid", help="interpolation grid (PNG, optional GIF) between real or prior endpoints")
    add_flags(grid, configs.GridConfig, required=("out",))
    grid.set_defaults(handler=_grid)

    wk = sub.add_parser(
        "walk", help="walk through keyframes (indices, image files, seeds or prompts): PNG frames, video and GIF"
    )
    add_flags(wk, configs.WalkConfig, required=("out",))
    wk.set_defaults(handler=_walk)

    xp = sub.add_parser("explore", help="a local web page: pick endpoints, slide t, strips, sheets, walks, exports")
    add_flags(xp, configs.ExploreConfig)
    xp.set_defaults(handler=_explore)

    syn = sub.add_parser("synthesize", help="write a paired augmentation set: blended images, captions, soft labels")
    add_flags(syn, configs.SynthesisConfig, required=("out",))
    syn.set_defaults(handler=_synthesize)

    ev = sub.add_parser("evaluate", help="quality report of a backend on a data set's test split")
    add_flags(ev, configs.EvalConfig)
    ev.add_argument("--json", help="also write the full report here (.json)")
    ev.set_defaults(handler=_evaluate)

    ep = sub.add_parser(
        "evaluate-pairs", help="pair alignment of a paired set (and of real pairs): recall@1/@5 both ways, similarity"
    )
    pairs_help = configs.PairEvalConfig.__dataclass_fields__["pairs"].metadata["help"]
    ep.add_argument("pairs", metavar="PAIRS", help=pairs_help)
    add_flags(ep, configs.PairEvalConfig, skip=("pairs",))
    ep.add_argument("--json", help="also write the full report here (.json)")
    ep.set_defaults(handler=_evaluate_pairs)

    ed = sub.add_parser(
        "edit", help="latent arithmetic: move your images along an attribute direction (e.g. red -> blue)"
    )
    add_flags(ed, configs.EditConfig, required=("images", "factor", "source", "target", "out"))
    ed.set_defaults(handler=_edit)

    au = sub.add_parser(
        "augment", help="write a data set or paired set with its pairs flipped, moved, recoloured (captions follow)"
    )
    add_flags(au, configs.AugmentConfig, required=("out",))
    au.set_defaults(handler=_augment)

    ex = sub.add_parser("export", help="write a data set (e.g. shapes) as an imagefolder with metadata.jsonl")
    add_flags(ex, configs.ExportConfig, required=("out",))
    ex.set_defaults(handler=_export)

    tr = sub.add_parser(
        "train", help="train a classifier (real data, optional synthetic set, mixup); report accuracy and calibration"
    )
    add_flags(tr, configs.TrainConfig)
    add_flags(tr, configs.ReportOutputs)
    tr.set_defaults(handler=_train)

    cmp = sub.add_parser("compare", help="recipes x seeds: accuracy, NLL, ECE before/after temperature scaling, paired")
    add_flags(cmp, configs.CompareConfig)
    add_flags(
        cmp, configs.TrainConfig, skip=("seed", "checkpoint_dir", "synthetic"), defaults=configs.COMPARE_TRAIN_DEFAULTS
    )
    cmp.add_argument("--json", help="write all numbers here (.json)")
    cmp.set_defaults(handler=_compare)

    fit = sub.add_parser("fit", help="fit a backend or the reference classifier")
    fit_sub = fit.add_subparsers(dest="model", required=True, metavar="MODEL")
    for name, (config_class, help_text) in FIT_HELP.items():
        model = fit_sub.add_parser(name, help=help_text)
        add_flags(model, config_class)
        model.add_argument("--out", required=True, help="directory to save to (training state, if any: OUT.train/)")
        model.set_defaults(handler=_fit)
    for command in _data_commands(parser):
        add_flags(command, configs.DataColumns)
    return parser


def _data_commands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every (sub)command of ``parser`` that takes ``--data``."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in dict.fromkeys(action.choices.values()):  # aliases share one parser
                found += _data_commands(command)
        elif action.dest == "data" and "--data" in action.option_strings:
            found.append(parser)
    return found


def _fold_data_columns(args: argparse.Namespace) -> None:
    """``--image-column`` … ``--data-config`` into ``args.data``'s ``?`` options (refused for other data)."""
    names = [f.name for f in dataclasses.fields(configs.DataColumns)]
    given = {name: getattr(args, name) for name in names if hasattr(args, name)}
    if given:
        from latentmix.data.hf import with_options

        args.data = with_options(getattr(args, "data", None), **given)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """latentmix's own warnings (a fit that cannot converge) as one line; others as Python shows them."""
    from latentmix.train.common import FitWarning

    if issubclass(category, FitWarning):
        print(f"latentmix: warning: {message}", file=sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    if args.trust_remote_code:
        from latentmix.data.text import set_trust_remote_code

        set_trust_remote_code(True)
    if args.max_image_pixels is not None:
        from latentmix.data.images import set_max_image_pixels

        try:
            set_max_image_pixels(args.max_image_pixels)
        except ValueError as exc:
            print(f"latentmix: error: {exc}", file=sys.stderr)
            return 2
    from latentmix.data.hf import report_columns  # which columns a `datasets` dataset was read by, once each

    show = not args.quiet and _is_main_process()
    report_columns((lambda line: print(f"latentmix: {line}", flush=True)) if show else None)
    if args.quiet:
        os.environ["TQDM_DISABLE"] = "1"
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as transformers_logging

        disable_progress_bars()
        transformers_logging.disable_progress_bar()
    try:
        _fold_data_columns(args)
        return args.handler(args, argv)
    except (ValueError, FileNotFoundError) as exc:  # bad input, named by the library
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
