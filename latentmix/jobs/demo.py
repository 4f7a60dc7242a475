"""``latentmix demo``: the main jobs on the embedded default, in well under a minute on CPU."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from latentmix.backends import load_backend
from latentmix.configs import DemoConfig, SynthesisConfig
from latentmix.data import SyntheticDataset
from latentmix.data.digits import digits_prompt
from latentmix.jobs.grid import interpolation_grid
from latentmix.jobs.synthesize import synthesize
from latentmix.utils.viz import grid_image, save_png


@dataclass
class DemoResult:
    """What :func:`run_demo` wrote: each file or folder by name."""

    written: dict[str, Path]


def run_demo(config: DemoConfig | None = None, *, quiet: bool = False) -> DemoResult:
    """Write grids between real test digits, a walk GIF, a prior grid, a latent-diffusion walk between
    prompts, a small paired set, a training comparison, and on ``shapes`` a walk and latent arithmetic
    to ``config.out``."""
    config = config or DemoConfig()
    config.validate()
    out, backend, seed = Path(config.out), config.backend, config.seed
    model = load_backend(backend)
    written: dict[str, Path] = {}
    interpolation_grid(
        backend=model, method="slerp", steps=10, seed=seed, out=out / "grid_slerp.png", gif=out / "walk_slerp.gif"
    )
    written["grid_slerp"], written["walk_gif"] = out / "grid_slerp.png", out / "walk_slerp.gif"
    interpolation_grid(backend=model, method="lerp", steps=10, seed=seed, out=out / "grid_lerp.png")
    written["grid_lerp"] = out / "grid_lerp.png"
    interpolation_grid(backend=model, method="slerp", steps=10, prior=5, seed=seed, out=out / "grid_prior.png")
    written["grid_prior"] = out / "grid_prior.png"
    prompts = [(digits_prompt(a), digits_prompt(b)) for a, b in ((0, 6), (4, 9), (3, 8))]
    interpolation_grid(
        backend="digits-ldm", prompts=prompts, steps=10, seed=seed, num_inference_steps=25,
        out=out / "grid_ldm_prompts.png",
    )  # fmt: skip
    written["grid_ldm_prompts"] = out / "grid_ldm_prompts.png"

    paired = out / f"paired_set_seed{seed}"
    synthesize(SynthesisConfig(backend=backend, n=256, strategy="inter-class", seed=seed, out=str(paired)), quiet=quiet)
    written["paired_set"] = paired
    synthetic = SyntheticDataset(paired)
    preview = synthetic.images(range(32)).reshape(4, 8, synthetic.channels, synthetic.image_size, synthetic.image_size)
    written["paired_preview"] = save_png(grid_image(preview), out / "paired_preview.png")
    written.update(_training_comparison(out, backend, seed, quiet))
    written.update(_shapes_examples(out, seed))
    return DemoResult(written)


def _shapes_examples(out: Path, seed: int) -> dict[str, Path]:
    """On ``shapes``: walks between test images that differ in colour only and in shape only, and latent
    arithmetic (red -> blue, circle -> square) applied to held-out test images, along the global mean difference
    and along each image's matched direction."""
    from functools import partial

    import numpy as np
    import torch

    from latentmix.data import load_dataset
    from latentmix.jobs.attributes import (
        attribute_direction,
        edit_images,
        factor_column,
        labelled_latents,
        matched_directions,
        true_factors,
    )
    from latentmix.jobs.evaluate_attributes import pairs_differing_in

    vae = load_backend("shapes-vae")
    test, train = load_dataset("shapes", split="test"), load_dataset("shapes", split="train")
    truth, rng = true_factors(test), np.random.default_rng(seed)
    pairs = []
    for column in (1, 0):  # colour, then shape (the label)
        ia, ib = pairs_differing_in(truth, column, 3, rng)
        pairs += list(zip(ia, ib, strict=True))
    interpolation_grid(backend=vae, data="shapes", pairs=pairs, steps=8, seed=seed, out=out / "shapes_walk.png")
    written = {"shapes_walk": out / "shapes_walk.png"}

    z_train, labelled = labelled_latents(vae, train, len(train))
    cells = []
    for factor, source, target in (("colour", "red", "blue"), ("label", "circle", "square")):
        direction = attribute_direction(z_train, labelled, factor, source, target)
        column, values = factor_column(test, factor)
        chosen = np.flatnonzero(truth[:, column].numpy() == values.index(source))[:6].tolist()
        x = test.images(chosen)
        recon, edited = edit_images(vae, x, direction)
        edit = partial(matched_directions, z_train, labelled, factor, source, target, truth[chosen])
        matched = edit_images(vae, x, edit)[1]  # each latent along its own matched direction
        cells.append(torch.stack([x, recon, edited, matched]).float())
    # columns: six red shapes turned blue, then six circles turned into squares; rows: the global mean
    # difference, then the matched direction of each image
    sheet = grid_image(torch.cat(cells, dim=1), row_labels=["input", "recon", "global", "matched"], gaps_after=(5,))
    written["shapes_arithmetic"] = save_png(sheet, out / "shapes_arithmetic.png")
    return written


def _training_comparison(out: Path, backend: str, seed: int, quiet: bool) -> dict[str, Path]:
    """5 labels per class: ERM vs ERM + intra-class blends of those same labels; table + diagrams."""
    from dataclasses import replace

    from latentmix.classifiers.metrics import calibration_bins
    from latentmix.train.classifier import TrainConfig, train_classifier
    from latentmix.utils.viz import reliability_diagram

    blends = out / f"blends_k5_seed{seed}"
    synthesize(
        SynthesisConfig(
            backend=backend,
            n=500,
            strategy="intra-class",
            seed=seed,
            labels_per_class=5,
            subset_seed=seed,
            out=str(blends),
        ),
        quiet=quiet,
    )
    base = TrainConfig(labels_per_class=5, steps=400, eval_every=50, seed=seed)
    lines = ["recipe (5 labels per class)   accuracy   NLL     ECE    ECE after T-scaling"]
    written = {}
    for name, config in [("erm", base), ("erm+blends", replace(base, synthetic=str(blends)))]:
        r = train_classifier(config, quiet=quiet)
        b, a = r.test, r.test_temperature_scaled
        lines.append(f"{name:<29} {b['accuracy']:.3f}      {b['nll']:.3f}   {b['ece']:.3f}  {a['ece']:.3f}")
        logits, labels = r.test_logits.double(), r.test_labels
        written[f"reliability_{name}"] = reliability_diagram(
            calibration_bins(logits.softmax(1), labels),
            calibration_bins((logits / r.temperature).softmax(1), labels),
            out / f"reliability_{name.replace('+', '_')}.png",
            title=name,
        )
    table = out / "training_comparison.txt"
    table.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    written["training_comparison"] = table
    return written
