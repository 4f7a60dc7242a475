"""``latentmix demo``: the main jobs on the embedded default, in well under a minute on CPU."""

from __future__ import annotations

import os
from pathlib import Path

from latentmix.backends import load_backend
from latentmix.data import SyntheticDataset
from latentmix.grid import DEFAULT_BACKEND, interpolation_grid
from latentmix.synthesize import SynthesisConfig, synthesize
from latentmix.viz import grid_image, save_png


def run_demo(out: str | os.PathLike = "latentmix-demo", *, backend: str = DEFAULT_BACKEND, seed: int = 0, quiet: bool = False) -> dict[str, Path]:
    """Write grids between real test digits, a walk GIF, a prior grid and a small paired set to ``out``.

    Returns the paths written, by name.
    """
    out = Path(out)
    model = load_backend(backend)
    written: dict[str, Path] = {}
    slerp = interpolation_grid(model, method="slerp", steps=10, seed=seed, out=out / "grid_slerp.png", gif=out / "walk_slerp.gif")
    written["grid_slerp"], written["walk_gif"] = slerp.png, slerp.gif
    written["grid_lerp"] = interpolation_grid(model, method="lerp", steps=10, seed=seed, out=out / "grid_lerp.png").png
    written["grid_prior"] = interpolation_grid(model, method="slerp", steps=10, prior=5, seed=seed, out=out / "grid_prior.png").png

    paired = out / f"paired_set_seed{seed}"
    synthesize(SynthesisConfig(backend=backend, n=256, strategy="inter-class", seed=seed), paired, quiet=quiet)
    written["paired_set"] = paired
    synthetic = SyntheticDataset(paired)
    preview = synthetic.images(range(32)).reshape(4, 8, synthetic.channels, synthetic.image_size, synthetic.image_size)
    written["paired_preview"] = save_png(grid_image(preview), out / "paired_preview.png")
    return written
