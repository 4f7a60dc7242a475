"""``latentmix edit``: latent arithmetic on a user's images.

An attribute direction from the train latents of labelled data with factors (``shapes``, or a folder exported
with ``factors.json``) is added to the latents of the user's images, which are decoded and written as PNGs
(same names) beside a contact sheet ``edits.png`` (original | reconstruction | edited, one row per image).
By default each image gets a **matched** direction: the data's reference classifier reads the image's other
factors (its shape, size, position when recolouring) and the direction is taken between the train latents of
the source and target values that share them, nearest to the image (``--neighbours K``). ``--neighbours 0``
adds one global ``mean(z | factor = target) − mean(z | factor = source)`` to every image instead — the
textbook arithmetic, which on a spatial latent moves nothing far enough (see :mod:`latentmix.jobs.attributes`).
The output directory appears whole, by rename, or not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from latentmix.backends import CallOptions, LatentBackend, RunOptions, load_backend
from latentmix.classifiers.reference import load_reference_classifier, reference_for
from latentmix.configs import EditConfig
from latentmix.data import load_matching
from latentmix.data.images import is_image_file, load_image_files
from latentmix.jobs.attributes import (
    Direction,
    attribute_direction,
    check_reference,
    edit_images,
    factor_column,
    labelled_latents,
    matched_directions,
    predict_factors,
)
from latentmix.utils.atomic import check_new_output
from latentmix.utils.locks import holds_outputs

__all__ = ["EditResult", "direction_for", "edit", "image_files"]


@dataclass
class EditResult:
    out: Path
    files: list[Path]  # one edited PNG per input image
    sheet: Path  # edits.png
    direction: Direction  # the global mean difference (the one every image gets with neighbours 0)
    matched: list[dict[str, str]]  # per image: the factors (and values) its matched direction shared; [] if none


def image_files(paths) -> list[Path]:
    """The image files among ``paths`` (files, or folders searched recursively, hidden files skipped)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and is_image_file(f))
            if not found:
                raise ValueError(f"images: folder {p} holds no images")
            files += found
        elif p.is_file():
            if not is_image_file(p):
                raise ValueError(f"images: {p} is not an image file (.png, .jpg, ...)")
            files.append(p)
        else:
            raise ValueError(f"images: {p} does not exist")
    return files


def direction_for(
    backend: LatentBackend, config: EditConfig, images: Tensor | None = None, options: CallOptions | None = None
) -> tuple[Direction, Callable[[Tensor], list[Direction]] | None]:
    """The global attribute direction of ``config`` from the train latents of ``config.data``, and — with
    ``config.neighbours`` > 0 and ``images`` — a function giving the matched direction of each of their latents.
    The train images are encoded with ``options`` (default: ``config``'s), as the edited images are."""
    shape = (backend.image_size, backend.image_channels)
    who = f"backend {backend.backend_name!r}"
    options = backend.call_options(options if options is not None else CallOptions.from_settings(config))
    train = load_matching(
        config.data, "train", *shape, who=who, fix="use data of the model's shape", resize=config.resize
    )
    if train.factor_values is None:
        raise ValueError(
            f"data: {config.data!r} has no known factors; use data with factors (shapes, or a folder with factors.json)"
        )
    assert config.factor and config.source and config.target
    edit = (config.factor, config.source, config.target)
    if images is not None and config.neighbours:
        factor_column(train, config.factor)  # a bad factor name fails before the reference is looked for
        reference = load_reference_classifier(
            reference_for(config.reference, config.data, alternative=" or --neighbours 0")
        )
        check_reference(reference, train)
    z, labelled = labelled_latents(backend, train, config.direction_samples, options=options)
    direction = attribute_direction(z, labelled, *edit)
    if images is None or not config.neighbours:
        return direction, None
    read = predict_factors(reference, images, list(train.factor_values))

    def matched(latents: Tensor) -> list[Direction]:
        return matched_directions(z, labelled, *edit, read, latents, config.neighbours)

    return direction, matched


@holds_outputs(lambda config, **_: [config.out], check=check_new_output)  # one writer, from start to end
def edit(config: EditConfig, *, quiet: bool = False) -> EditResult:
    """Apply ``config``'s attribute direction to its images; write the edits and a contact sheet to
    ``config.out``."""
    from latentmix.utils.atomic import atomic_directory
    from latentmix.utils.viz import grid_image, save_png, to_pil, to_uint8

    out = Path(str(config.out))
    files = image_files(config.images)
    names = [f.stem + ".png" for f in files]
    if len(set(names)) != len(names):
        raise ValueError("images: two inputs share a file name; edit them into separate --out directories")
    backend = load_backend(config.backend, run=RunOptions.from_settings(config))
    options = backend.call_options(CallOptions.from_settings(config))  # refused before any work
    backend.show_progress = not quiet
    x = load_image_files(
        files, backend.image_size, backend.image_channels, resize=config.resize, who=f"backend {backend.backend_name!r}"
    )
    direction, matched = direction_for(backend, config, x, options)
    used: list[Direction] = [direction] * len(x)  # what each image was moved along, for the result

    def per_image(latents: Tensor) -> list[Direction]:
        assert matched is not None
        used[:] = matched(latents)
        return used

    move = per_image if matched else direction
    recon, edited = edit_images(backend, x, move, config.strength, options=options)

    def write(tmp: Path) -> None:
        for name, array in zip(names, to_uint8(edited), strict=True):
            to_pil(array).save(tmp / name)
        sheet = grid_image(
            torch.stack([x, recon.float().cpu(), edited.float().cpu()], dim=1),
            col_labels=["input", "recon", f"{direction.source}->{direction.target}"],
            gaps_after=(0,),
        )
        save_png(sheet, tmp / "edits.png")

    atomic_directory(out, write, marker="")
    return EditResult(out, [out / n for n in names], out / "edits.png", direction, [d.matched for d in used])
