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

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from latentmix.configs import PairEvalConfig
from latentmix.data import ImageTextDataset, SyntheticDataset, load_dataset, load_pairs, spread_indices

COLUMNS = ("text", "nearest_text", "composed_text")  # the caption columns of a synthetic set scored, where present


def recall_at(greater: Tensor, ties: Tensor, k: int) -> Tensor:
    """Expected recall@k per query when ``greater`` candidates score above the match and ``ties`` equal it."""
    return ((k - greater).double() / (ties + 1).double()).clamp(0.0, 1.0)


def retrieval(
    images: Tensor,
    texts: Tensor,
    *,
    text_ids: Tensor | None = None,
    group_size: int = 100,
    generator: torch.Generator | None = None,
    table: Tensor | None = None,
    named: Tensor | None = None,
) -> dict[str, float]:
    """Recall@1/@5 both ways within random groups, and the matched similarity, from unit embeddings (N, E).

    Args:
        images, texts: row i of each is pair i.
        text_ids: equal ids mark equal captions (ties); default: every caption distinct.
        group_size: pairs per group (N // group_size groups; at least one group of min(N, group_size)).
        generator: shuffles the pairs into groups.
        table, named: (N, F) factor values (label first) and (N, F) whether each caption names each factor: the
            perfect judge's text→image recall@1 ("ceiling") and the factor-level recall@1 ("fits") are added.
    """
    n = images.shape[0]
    if n < 2:
        raise ValueError(f"pair alignment needs at least 2 pairs, got {n}")
    g = min(group_size, n)
    groups = n // g
    order = torch.randperm(n, generator=generator)[: groups * g].view(groups, g)
    img, txt = images[order].double(), texts[order].double()
    sims = img @ txt.transpose(1, 2)  # (G, g, g): image i against caption j
    match = sims.diagonal(dim1=1, dim2=2)  # (G, g)
    ids = (text_ids if text_ids is not None else torch.arange(n))[order]
    same_text = ids[:, :, None] == ids[:, None, :]  # (G, g, g), the diagonal included
    above_i2t = ((sims > match[:, :, None]) & ~same_text).sum(2)
    ties_i2t = same_text.sum(2) - 1
    above_t2i = (sims > match[:, None, :]).sum(1)
    no_ties = torch.zeros_like(above_t2i)
    out = {
        "image_to_text_r1": float(recall_at(above_i2t, ties_i2t, 1).mean()),
        "image_to_text_r5": float(recall_at(above_i2t, ties_i2t, 5).mean()),
        "text_to_image_r1": float(recall_at(above_t2i, no_ties, 1).mean()),
        "text_to_image_r5": float(recall_at(above_t2i, no_ties, 5).mean()),
        "matched_similarity": float(match.mean()),
        "pairs_scored": int(groups * g),
        "groups": int(groups),
    }
    if table is not None and named is not None:
        t, m = table[order], named[order]  # (G, g, F)
        # fits[b, i, j]: image j matches every factor that caption i names
        fits = (~m[:, :, None, :] | (t[:, :, None, :] == t[:, None, :, :])).all(-1)
        out["text_to_image_r1_ceiling"] = float((1.0 / fits.sum(2).double()).mean())
        top_image = sims.argmax(1, keepdim=True)  # (G, 1, g): per caption, the image it retrieves first
        top_text = sims.argmax(2, keepdim=True)  # (G, g, 1): per image, the caption it retrieves first
        out["text_to_image_r1_fits"] = float(fits.gather(2, top_image.transpose(1, 2)).double().mean())
        out["image_to_text_r1_fits"] = float(fits.gather(1, top_text.transpose(1, 2)).double().mean())
    return out


def factor_table(data: ImageTextDataset) -> tuple[Tensor, Tensor] | None:
    """(labels and factor values (N, F), which of them each caption names (N, F)), where the data knows both."""
    if data.factor_values is None or data.named_factors is None:
        return None
    names = ["label", *data.factor_values]
    table = torch.cat([data.labels[:, None], data.factor_labels()], dim=1)
    named = torch.tensor([[f in item for f in names] for item in data.named_factors], dtype=torch.bool)
    return table, named


@torch.inference_mode()
def embed_images(model, data: ImageTextDataset, indices, *, batch_size: int = 512, quiet: bool = True) -> Tensor:
    """(N, E) unit image embeddings of ``data``'s images at ``indices``, ``batch_size`` at a time."""
    indices = list(indices)
    chunks = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    return torch.cat([model.embed_images(data.images(c)) for c in tqdm(chunks, desc="embed images", disable=quiet)])


@torch.inference_mode()
def embed_captions(model, texts: list[str], encoder=None) -> tuple[Tensor, Tensor]:
    """(N, E) unit caption embeddings, and an id per caption (equal captions share it)."""
    from latentmix.classifiers.align import caption_ids
    from latentmix.data.text import TextEncoder

    encoder = encoder or TextEncoder.from_pretrained(model.config.text_encoder, device="cpu")
    return model.embed_texts(encoder.encode(texts)), caption_ids(texts)


def score_pairs(
    model,
    data: ImageTextDataset,
    *,
    columns: dict[str, list[str]] | None = None,
    group_size: int = 100,
    seed: int = 0,
    max_pairs: int | None = None,
    batch_size: int = 512,
    encoder=None,
    quiet: bool = True,
) -> dict[str, Any]:
    """Alignment numbers of ``data``'s pairs (its ``texts``), or of each caption column in ``columns``
    (name -> one caption per item), all against the same images and the same groups."""
    indices = spread_indices(len(data), max_pairs).tolist()
    images = embed_images(model, data, indices, batch_size=batch_size, quiet=quiet)
    factors = factor_table(data)
    results = {}
    for name, texts in (columns or {"text": data.texts}).items():
        texts = [texts[i] for i in indices]
        captions, ids = embed_captions(model, texts, encoder)
        extra = {}
        if factors is not None and columns is None:
            extra = {"table": factors[0][indices], "named": factors[1][indices]}
        gen = torch.Generator().manual_seed(seed)
        results[name] = retrieval(images, captions, text_ids=ids, group_size=group_size, generator=gen, **extra)
    return results if columns is not None else results["text"]


def _origin(spec: str) -> str:
    """The data a paired set was made from (its manifest's settings), or ``spec`` itself for real data."""
    from latentmix.data.synthetic import _read_manifest

    path = Path(spec)
    if not (path / "manifest.json").is_file():
        return spec
    return str(_read_manifest(path).get("settings", {}).get("data", ""))


def open_pairs(spec: str, image_size: int, channels: int) -> tuple[ImageTextDataset, str]:
    """The pairs to score and the data they come from: a synthetic set (its source data), or a named data set
    or captioned folder (its test split, or the whole folder when it has no test/)."""
    data = load_pairs(spec, image_size=image_size, channels=channels)
    if isinstance(data, SyntheticDataset):
        return data, str(data.manifest.get("settings", {}).get("data", ""))
    return data, spec


def evaluate_pairs(config: PairEvalConfig, *, quiet: bool = False) -> dict[str, Any]:
    """Score ``config.pairs`` (each of its caption columns) and real test pairs with an alignment model."""
    from latentmix.classifiers.align import align_model_for, check_captioned, load_align_model
    from latentmix.data.text import TextEncoder

    config.validate()
    align = align_model_for(config.align, _origin(config.pairs))
    model = load_align_model(align)
    channels, size = model.image_shape
    pairs, origin = open_pairs(config.pairs, size, channels)
    check_captioned(pairs, f"pairs {config.pairs!r}")
    if model.class_names and list(pairs.class_names) != model.class_names:
        raise ValueError(
            f"align: {align} was fitted on {model.config.data!r} (classes {', '.join(model.class_names[:6])}…), but "
            f"the pairs have classes {', '.join(pairs.class_names[:6])}…; fit one on their data with `latentmix fit "
            "align`"
        )
    encoder = TextEncoder.from_pretrained(model.config.text_encoder, device="cpu")
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
    report = {"config": config.__dict__ | {"align": align}, "data": origin, "sets": sets}
    if note:
        report["note"] = note
    return report


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


def format_pair_report(report: dict[str, Any]) -> str:
    """The report as a table: one row per scored set (percentages; sim is the mean matched cosine)."""
    config = report["config"]
    lines = [
        f"pair alignment judged by {config['align']} (recall within random groups of {config['group_size']}, "
        f"seed {config['seed']}; ties between equal captions broken at random in expectation)",
        f"{'set':<22} {'pairs':>6} {'i→t R@1':>8} {'i→t R@5':>8} {'t→i R@1':>8} {'t→i R@5':>8} {'sim':>6}"
        "  | factor-level R@1 i→t / t→i | t→i R@1 ceiling",
    ]
    for name, s in report["sets"].items():
        cells = [100 * s[k] for k in ("image_to_text_r1", "image_to_text_r5", "text_to_image_r1", "text_to_image_r5")]
        row = f"{name:<22} {s['pairs_scored']:>6} " + " ".join(f"{c:>8.1f}" for c in cells)
        row += f" {s['matched_similarity']:>6.3f}"
        if "text_to_image_r1_ceiling" in s:
            row += f"  | {100 * s['image_to_text_r1_fits']:.1f} / {100 * s['text_to_image_r1_fits']:.1f}"
            row += f" | {100 * s['text_to_image_r1_ceiling']:.1f}"
        lines.append(row)
    if report.get("note"):
        lines.append(report["note"])
    return "\n".join(lines)
