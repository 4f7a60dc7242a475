"""``latentmix export``: write a data set as a Hugging Face imagefolder that any tool (and latentmix) can read.

``OUT/train/`` and ``OUT/test/`` (or the one split asked for) each get ``images/*.png`` and a
``metadata.jsonl`` with one row per image: ``file_name``, ``text`` (the caption), ``label`` (an int, named
by ``OUT/class_names.json``) and, for data with known factors (``shapes``), one column per factor holding
the value's name plus ``named_factors`` (the factors the caption names). ``OUT/factors.json`` lists each
factor's values in order. Reading ``OUT`` back (``--data OUT``) gives the same images, captions, labels and
factors. The directory appears whole, by rename, or not at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from latentmix.configs import ExportConfig
from latentmix.data import ImageTextDataset, load_dataset
from latentmix.data.folder import CLASS_NAMES, FACTORS, METADATA
from latentmix.utils.atomic import check_new_output
from latentmix.utils.locks import holds_outputs

__all__ = ["ExportConfig", "ExportResult", "export_dataset", "write_split"]


@dataclass
class ExportResult:
    """What :func:`export_dataset` wrote: ``out`` and the images of each split written there."""

    out: Path
    counts: dict[str, int]


@holds_outputs(lambda config, **_: [config.out], check=check_new_output)  # one writer, from start to end
def export_dataset(config: ExportConfig, *, quiet: bool = False) -> ExportResult:
    """Write ``config.data`` (``config.split``: ``train``, ``test`` or ``all`` = both) as an imagefolder under
    ``config.out`` (new or empty), its images at ``config.image_size`` (default: the data's own)."""
    from latentmix.utils.atomic import atomic_directory

    data, split, image_size = config.data, config.split, config.image_size
    out = Path(str(config.out))
    splits = ("train", "test") if split == "all" else (split,)
    parts = {s: load_dataset(data, split=s, image_size=image_size) for s in splits}
    first = next(iter(parts.values()))
    if not first.class_names:
        raise ValueError(f"data {data!r} has no labels; export writes labelled data")

    def write(tmp: Path) -> None:
        (tmp / CLASS_NAMES).write_text(json.dumps(list(first.class_names), indent=1) + "\n", encoding="utf-8")
        if first.factor_values is not None:
            (tmp / FACTORS).write_text(json.dumps(first.factor_values, indent=1) + "\n", encoding="utf-8")
        for name, part in parts.items():
            _write_split(part, tmp / name, f"export {name}", quiet)

    atomic_directory(out, write, marker="")
    return ExportResult(out, {name: len(part) for name, part in parts.items()})


def _write_split(dataset: ImageTextDataset, folder: Path, desc: str, quiet: bool) -> None:
    def batches():
        for start in range(0, len(dataset), 256):
            indices = range(start, min(start + 256, len(dataset)))
            texts = [dataset.texts[i] for i in indices]
            factors = [dataset.factors(i) for i in indices] if dataset.factor_values is not None else None
            named = [dataset.named_factors[i] for i in indices] if dataset.named_factors is not None else None
            yield dataset.images(indices), texts, [int(dataset.labels[i]) for i in indices], factors, named

    write_split(folder, batches(), len(dataset), desc, quiet)


def write_split(folder: Path, batches, count: int, desc: str, quiet: bool) -> None:
    """Write ``images/*.png`` and ``metadata.jsonl`` under ``folder`` from batches of (images in [-1, 1], texts,
    labels, factors (dicts of value names, the label included, or None), named factors (or None))."""
    from latentmix.utils.viz import to_pil, to_uint8

    (folder / "images").mkdir(parents=True)
    width = len(str(max(count - 1, 0)))
    rows, i = [], 0
    bar = tqdm(total=count, desc=desc, disable=quiet)
    for images, texts, labels, factors, named in batches:
        for j, image in enumerate(to_uint8(images)):
            file_name = f"images/{i:0{width}d}.png"
            to_pil(image).save(folder / file_name)
            row: dict = {"file_name": file_name, "text": texts[j], "label": labels[j]}
            if factors is not None:
                row.update({k: v for k, v in factors[j].items() if k != "label"})
            if named is not None:
                row["named_factors"] = sorted(named[j])
            rows.append(json.dumps(row, ensure_ascii=False))
            i += 1
        bar.update(len(texts))
    bar.close()
    (folder / METADATA).write_text("\n".join(rows) + "\n", encoding="utf-8")
