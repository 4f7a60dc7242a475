"""Pair alignment: the retrieval numbers, `latentmix fit align` and `latentmix evaluate-pairs`, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from latentmix.classifiers.align import AlignModel, load_align_model, recall_at, retrieval, score_pairs
from latentmix.cli import main
from latentmix.configs import AlignFitConfig, PairEvalConfig
from latentmix.data import load_dataset
from latentmix.data.shapes import POSITION_WORDS
from latentmix.jobs.evaluate_pairs import evaluate_pairs, format_pair_report
from latentmix.train.fit_align import fit_align, info_nce


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.double(), dim=-1)


def test_retrieval_is_perfect_for_matched_embeddings_and_at_chance_for_shuffled_ones():
    gen = torch.Generator().manual_seed(0)
    emb = _unit(torch.randn(400, 64, generator=gen))
    perfect = retrieval(emb, emb, group_size=100, generator=torch.Generator().manual_seed(1))
    assert perfect["groups"] == 4 and perfect["pairs_scored"] == 400
    for key in ("image_to_text_r1", "image_to_text_r5", "text_to_image_r1", "text_to_image_r5"):
        assert perfect[key] == 1.0
    assert perfect["matched_similarity"] == pytest.approx(1.0)
    other = _unit(torch.randn(400, 64, generator=gen))  # captions unrelated to the images: chance is 1/100, 5/100
    chance = retrieval(emb, other, group_size=100, generator=torch.Generator().manual_seed(1))
    assert chance["text_to_image_r1"] < 0.05 and chance["image_to_text_r5"] < 0.15
    assert retrieval(emb[:30], emb[:30], group_size=100)["groups"] == 1  # fewer pairs than a group: one group


def test_equal_captions_are_ties_broken_at_random_in_expectation():
    images = _unit(torch.eye(4))
    texts = images.clone()
    texts[1] = texts[0]  # pair 1's caption is the same text as pair 0's
    ids = torch.tensor([0, 0, 1, 2])
    out = retrieval(images, texts, text_ids=ids, group_size=4, generator=torch.Generator().manual_seed(0))
    # image 0 ranks captions 0 and 1 (the same text) first: recall@1 = 1/2; image 1 scores 0 against every caption
    # and shares its caption's text with caption 0: also 1/2; images 2 and 3 find theirs
    assert out["image_to_text_r1"] == pytest.approx(0.75)
    # caption 1 retrieves image 0 (the image of its twin caption) first: images are never ties
    assert out["text_to_image_r1"] == pytest.approx(0.75)
    assert recall_at(torch.tensor([0, 2, 0]), torch.tensor([0, 0, 3]), 1).tolist() == [1.0, 0.0, 0.25]
    assert recall_at(torch.tensor([4]), torch.tensor([2]), 5).tolist() == [1 / 3]


def test_the_ceiling_and_factor_level_recall_follow_what_each_caption_names():
    # four images: (label, colour) = (0, 0), (1, 0), (0, 1), (1, 1); caption 0 names only the colour
    table = torch.tensor([[0, 0], [1, 0], [0, 1], [1, 1]])
    named = torch.tensor([[False, True], [True, True], [True, True], [True, True]])
    emb = _unit(torch.eye(4))
    out = retrieval(emb, emb, group_size=4, generator=torch.Generator().manual_seed(0), table=table, named=named)
    # caption 0 ("colour 0") fits images 0 and 1: a perfect judge finds its image half the time
    assert out["text_to_image_r1_ceiling"] == pytest.approx((0.5 + 1 + 1 + 1) / 4)
    assert out["text_to_image_r1_fits"] == 1.0 and out["image_to_text_r1_fits"] == 1.0
    wrong = emb[[1, 0, 3, 2]]  # every caption retrieves the image of the other label, same colour
    out = retrieval(emb, wrong, group_size=4, generator=torch.Generator().manual_seed(0), table=table, named=named)
    assert out["text_to_image_r1_fits"] == pytest.approx(0.25)  # only caption of pair 0 (colour only) still fits


def test_info_nce_is_clip_loss_for_distinct_captions_and_blind_to_which_twin_caption_an_image_prefers():
    logits = torch.randn(5, 5, generator=torch.Generator().manual_seed(0)) * 3
    target = torch.arange(5)
    clip = (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target)) / 2
    assert info_nce(logits, torch.arange(5)) == pytest.approx(float(clip))
    swapped = logits[:, [1, 0, 2, 3, 4]]  # every image now scores caption 1 as it scored caption 0, and vice versa
    twins = torch.tensor([7, 7, 1, 2, 3])  # captions 0 and 1 are the same text
    assert info_nce(swapped, twins) == pytest.approx(float(info_nce(logits, twins)), abs=1e-6)
    assert abs(float(info_nce(swapped, torch.arange(5)) - clip)) > 1e-3  # told apart, the swap changes the loss


def _captioned_folder(root, *, train: int = 160, test: int = 60, size: int = 16):
    """A train/test imagefolder of real shapes renders with their captions, labels and factors."""
    data = load_dataset("shapes", split="test", image_size=size)
    (root / "factors.json").write_text(json.dumps(data.factor_values))
    for split, indices in (("train", range(train)), ("test", range(train, train + test))):
        (root / split).mkdir(parents=True)
        rows = []
        for i in indices:
            arr = ((data.load_image(i).permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
            Image.fromarray(arr).save(root / split / f"{i}.png")
            rows.append({"file_name": f"{i}.png", "text": data.texts[i], **data.factors(i)})
            rows[-1]["named_factors"] = sorted(data.named_factors[i])
        (root / split / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return root


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, shapes_cache):
    root = _captioned_folder(tmp_path_factory.mktemp("captioned"))
    out = tmp_path_factory.mktemp("align") / "model"
    config = AlignFitConfig(data=str(root), epochs=30, batch_size=32, width=16, embed_dim=32)
    result = fit_align(config, out, quiet=True)
    return root, out, result


def test_fit_align_learns_the_pairs_saves_a_card_and_loads_whole(fitted):
    root, out, result = fitted
    assert (out / "MODEL_CARD.md").is_file() and "fit align" in (out / "MODEL_CARD.md").read_text()
    model = load_align_model(out)
    assert isinstance(model, AlignModel) and model.image_shape == (3, 16)
    train = load_dataset(root, split="train")
    scores = score_pairs(model, train, group_size=40, seed=0)
    assert scores["text_to_image_r1"] > 5 / 40  # five times chance on the pairs it was fitted on
    assert 0 < scores["text_to_image_r1_ceiling"] <= 1  # the folder's factors give a ceiling
    for key, value in result.metrics.items():
        if key.startswith("test_") and key != "test_pairs":
            assert 0.0 <= value <= 1.0 + 1e-9, key


@pytest.mark.filterwarnings("ignore::latentmix.train.common.FitWarning")  # a 1-epoch VAE on purpose
def test_evaluate_pairs_scores_every_caption_column_of_a_synthetic_set_beside_real_pairs(fitted, tmp_path, capsys):
    root, out, _ = fitted
    from latentmix.backends import VAEBackend
    from latentmix.configs import VAEFitConfig
    from latentmix.train.fit_vae import fit_vae

    vae_dir = tmp_path / "vae"
    vae = VAEFitConfig(data=str(root), epochs=1, block_channels=(8, 16), latent_channels=0, latent_dim=8)
    fit_vae(vae, vae_dir, quiet=True)
    assert isinstance(VAEBackend.from_pretrained(vae_dir), VAEBackend)
    syn = tmp_path / "set"
    argv = ["--quiet", "synthesize", "--backend", str(vae_dir), "--data", str(root), "-n", "40", "--out", str(syn)]
    assert main(argv) == 0
    capsys.readouterr()
    report_file = str(tmp_path / "r.json")
    argv = ["--quiet", "evaluate-pairs", str(syn), "--align", str(out), "--group-size", "20", "--json", report_file]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "pairs: text" in printed and "pairs: composed_text" in printed and "real test pairs" in printed
    report = json.loads((tmp_path / "r.json").read_text())
    # the folder has shapes' factors: 'text' is rendered from them and the nearest-caption rule is kept beside it
    assert set(report["sets"]) == {"pairs: text", "pairs: nearest_text", "pairs: composed_text", "real test pairs"}
    rows = [json.loads(line) for line in (syn / "metadata.jsonl").read_text().splitlines()]
    names = json.loads((syn / "manifest.json").read_text())["class_names"]
    for row in rows:
        dominant = row["factors"]
        assert dominant["label"] == names[row["label_a"] if row["lambda"] >= 0.5 else row["label_b"]]
        assert dominant["colour"] in row["text"]
        assert any(words in row["text"] for words in POSITION_WORDS[dominant["position"]])
    assert report["sets"]["pairs: text"]["pairs_scored"] == 40 and report["sets"]["real test pairs"]["groups"] == 3
    again = evaluate_pairs(PairEvalConfig(pairs=str(syn), align=str(out), group_size=20))
    assert again.sets == report["sets"]  # seeded: the same groups, the same numbers
    assert "factor-level" in format_pair_report(again)


def test_evaluate_pairs_refuses_sets_without_captions_models_of_other_data_and_data_without_a_model(
    fitted, tmp_path, capsys
):
    root, out, _ = fitted
    plain = tmp_path / "plain" / "test" / "cat"
    plain.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (16, 16), (80 * i, 0, 0)).save(plain / f"{i}.png")
    cases = [
        (["evaluate-pairs", str(tmp_path / "plain"), "--align", str(out)], "no captions of its own"),
        (["evaluate-pairs", "digits", "--align", str(out)], "no captions of its own"),
        (["evaluate-pairs", str(root)], "no alignment model for data"),
        (["evaluate-pairs", str(root), "--align", str(tmp_path / "missing")], "does not exist"),
        (["evaluate-pairs", str(root), "--align", str(out), "--group-size", "1"], "group_size"),
        (["fit", "align", "--data", "digits", "--out", str(tmp_path / "x")], "no captions of its own"),
    ]
    for argv, message in cases:
        assert main(["--quiet", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (argv, err)


def test_a_model_fitted_on_other_classes_is_refused(fitted, tmp_path, capsys):
    _, out, _ = fitted
    other = tmp_path / "other"
    (other / "test").mkdir(parents=True)
    rows = []
    for i in range(4):
        Image.new("RGB", (16, 16), (60 * i, 0, 0)).save(other / "test" / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": f"a red thing number {i}", "label": ["a", "b"][i % 2]})
    (other / "test" / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert main(["--quiet", "evaluate-pairs", str(other), "--align", str(out)]) == 2
    assert "fit one on their data" in capsys.readouterr().err


def test_the_scorer_runs_where_device_says(tmp_path, capsys):
    import torch

    from latentmix.utils.device import resolve_device

    assert resolve_device("cpu") == torch.device("cpu") and resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        assert main(["--quiet", "evaluate-pairs", "shapes", "--device", "cuda", "--max-pairs", "20"]) == 2
        assert "device: cuda is not available on this machine" in capsys.readouterr().err
    assert main(["--quiet", "fit", "align", "--device", "tpu", "--out", str(tmp_path / "a")]) == 2
    assert "device must be one of auto, cpu, cuda, mps, xpu" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
