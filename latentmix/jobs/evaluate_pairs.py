"""Pair alignment: does each caption of a paired set describe its image? (``latentmix evaluate-pairs``)

An alignment model (:mod:`latentmix.classifiers.align`) embeds every image and every caption; the pairs are shuffled
(seeded) into groups of ``group_size`` (100 by default, the last incomplete group left out), and within each
group every image retrieves among the group's captions (image→text) and every caption among its images
(text→image). Reported: recall@1 and recall@5 both ways, and the mean cosine of the matched pairs. Exactly
equal captions inside a group are ties, broken at random in expectation (a tie of t other captions at the top
gives recall@1 = 1 / (t + 1)), so a set that repeats captions is neither rewarded nor punished for it.

Where the pairs carry factors and know which of them each caption names (real ``shapes`` pairs: half of the
captions say "object" for the shape), the text→image **ceiling** is reported too: the recall@1 of a perfect
judge, which cannot tell apart the images that match everything a caption says. It is what "within groups of
100" allows on that data. (Image→text has no such ceiling: of two captions an image satisfies, the one naming
more of it is the better match, and a model may learn so.) Beside it, the
**factor-level** recall@1 ("fits"): how often the first image a caption retrieves matches every factor the
caption names (text→image), and how often the first caption an image retrieves names only factors the image
has (image→text) — retrieval judged by meaning rather than by instance.

Everything is batched: images go through the image tower ``batch_size`` at a time, each unique caption
through the text encoder once, and all groups' similarity matrices in one batched matmul.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latentmix.classifiers.align import score_pairs
from latentmix.configs import PairEvalConfig
from latentmix.data import ImageTextDataset, SyntheticDataset, load_dataset, load_pairs

COLUMNS = ("text", "nearest_text", "composed_text")  # the caption columns of a synthetic set scored, where present


def _origin(spec: str) -> str:
    """The data a paired set was made from (its manifest's settings), or ``spec`` itself for real data."""
    from latentmix.data.synthetic import read_manifest

    path = Path(spec)
    if not (path / "manifest.json").is_file():
        return spec
    return str(read_manifest(path).get("settings", {}).get("data", ""))


def open_pairs(spec: str, image_size: int, channels: int) -> tuple[ImageTextDataset, str]:
    """The pairs to score and the data they come from: a synthetic set (its source data), or a named data set
    or captioned folder (its test split, or the whole folder when it has no test/)."""
    data = load_pairs(spec, image_size=image_size, channels=channels)
    if isinstance(data, SyntheticDataset):
        return data, str(data.manifest.get("settings", {}).get("data", ""))
    return data, spec


@dataclass
class PairReport:
    """What :func:`evaluate_pairs` measured.

    Attributes:
        config: the settings, JSON-ready, with the alignment model used.
        data: the data the pairs come from (a paired set's source data).
        sets: per scored set (``"pairs: text"``, ``"pairs: nearest_text"``, …, ``"real test pairs"``) its numbers
            (:func:`~latentmix.classifiers.align.retrieval`).
        note: why no real pairs were scored, where none were.
    """

    config: dict[str, Any]
    data: str
    sets: dict[str, dict[str, Any]]
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``latentmix evaluate-pairs --json``)."""
        out = {"config": self.config, "data": self.data, "sets": self.sets}
        return {**out, "note": self.note} if self.note else out


def evaluate_pairs(config: PairEvalConfig, *, quiet: bool = False) -> PairReport:
    """Score ``config.pairs`` (each of its caption columns) and real test pairs with an alignment model."""
    from latentmix.classifiers.align import align_model_for, check_captioned, load_align_model
    from latentmix.data.text import TextEncoder
    from latentmix.utils.device import resolve_device

    config.validate()
    device = resolve_device(config.device)
    align = align_model_for(config.align, _origin(config.pairs))
    model = load_align_model(align).to(device)
    channels, size = model.image_shape
    pairs, origin = open_pairs(config.pairs, size, channels)
    check_captioned(pairs, f"pairs {config.pairs!r}")
    if model.class_names and list(pairs.class_names) != model.class_names:
        raise ValueError(
            f"align: {align} was fitted on {model.config.data!r} (classes {', '.join(model.class_names[:6])}…), but "
            f"the pairs have classes {', '.join(pairs.class_names[:6])}…; fit one on their data with `latentmix fit "
            "align`"
        )
    encoder = TextEncoder.from_pretrained(model.config.text_encoder, device=device)
    if config.text_precision == "bf16":
        encoder.model.to(torch.bfloat16)
    kw: dict[str, Any] = {"group_size": config.group_size, "seed": config.seed, "max_pairs": config.max_pairs}
    kw.update(batch_size=config.batch_size, encoder=encoder, quiet=quiet)
    columns = None
    if isinstance(pairs, SyntheticDataset):
        columns = {c: getattr(pairs, c + "s") for c in COLUMNS if getattr(pairs, c + "s") is not None}
    scored = score_pairs(model, pairs, columns=columns, **kw)
    sets = {f"pairs: {c}": s for c, s in scored.items()} if columns else {"pairs: text": scored}
    real, note = _real_pairs(config, model, size, channels)
    if real is not None:
        sets["real test pairs"] = score_pairs(model, real, **kw)
    return PairReport(config.__dict__ | {"align": align}, origin, sets, note)


def _real_pairs(config: PairEvalConfig, model, size: int, channels: int) -> tuple[ImageTextDataset | None, str]:
    name = config.real or model.config.data
    if not name or (config.real is None and str(Path(config.pairs)) == str(Path(name))):
        return None, "" if config.real else "real pairs: the pairs scored are the model's own test pairs"
    try:
        return load_dataset(name, split="test", image_size=size, channels=channels), ""
    except (ValueError, FileNotFoundError) as exc:
        if config.real is not None:
            raise
        return None, f"real pairs: {name} could not be read ({exc}); pass --real"


def format_pair_report(report: PairReport) -> str:
    """The report as a table: one row per scored set (percentages; sim is the mean matched cosine)."""
    config = report.config
    lines = [
        f"pair alignment judged by {config['align']} (recall within random groups of {config['group_size']}, "
        f"seed {config['seed']}; ties between equal captions broken at random in expectation)",
        f"{'set':<22} {'pairs':>6} {'i→t R@1':>8} {'i→t R@5':>8} {'t→i R@1':>8} {'t→i R@5':>8} {'sim':>6}"
        "  | factor-level R@1 i→t / t→i | t→i R@1 ceiling",
    ]
    for name, s in report.sets.items():
        cells = [100 * s[k] for k in ("image_to_text_r1", "image_to_text_r5", "text_to_image_r1", "text_to_image_r5")]
        row = f"{name:<22} {s['pairs_scored']:>6} " + " ".join(f"{c:>8.1f}" for c in cells)
        row += f" {s['matched_similarity']:>6.3f}"
        if "text_to_image_r1_ceiling" in s:
            row += f"  | {100 * s['image_to_text_r1_fits']:.1f} / {100 * s['text_to_image_r1_fits']:.1f}"
            row += f" | {100 * s['text_to_image_r1_ceiling']:.1f}"
        lines.append(row)
    if report.note:
        lines.append(report.note)
    return "\n".join(lines)
