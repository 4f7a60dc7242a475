"""``latentmix demo``: the main job on the embedded default, in well under a minute on CPU."""

from __future__ import annotations

import os
from pathlib import Path

from latentmix.backends import load_backend
from latentmix.grid import DEFAULT_BACKEND, interpolation_grid


def run_demo(out: str | os.PathLike = "latentmix-demo", *, backend: str = DEFAULT_BACKEND, seed: int = 0) -> dict[str, Path]:
    """Write slerp and lerp grids between real test digits, a walk GIF and a prior grid to ``out``.

    Returns the paths written, by name.
    """
    out = Path(out)
    model = load_backend(backend)
    written: dict[str, Path] = {}
    slerp = interpolation_grid(model, method="slerp", steps=10, seed=seed, out=out / "grid_slerp.png", gif=out / "walk_slerp.gif")
    written["grid_slerp"], written["walk_gif"] = slerp.png, slerp.gif
    written["grid_lerp"] = interpolation_grid(model, method="lerp", steps=10, seed=seed, out=out / "grid_lerp.png").png
    written["grid_prior"] = interpolation_grid(model, method="slerp", steps=10, prior=5, seed=seed, out=out / "grid_prior.png").png
    return written
