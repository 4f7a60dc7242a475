"""Text encoders (real MiniLM, tiny CLIP from config), pairing strategies, shared-λ blending."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel

from latentmix import slerp
from latentmix.data.text import TextEncoder, default_text_encoder_path
from latentmix.latent.blend import CaptionBank, Pairs, blend, compose_caption, soft_labels
from latentmix.latent.pairing import Pairing, sample_lambdas, uniform


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return TextEncoder.from_pretrained()


# --- text encoders -------------------------------------------------------------------------


def test_minilm_embeddings_are_normalised_cached_and_meaningful(minilm):
    texts = ["a handwritten digit 3", "the digit 3, written by hand", "a photo of a cat"]
    calls = []
    hook = minilm.model.register_forward_hook(lambda m, i, o: calls.append(i))
    try:
        emb = minilm.encode(texts)
        again = minilm.encode(texts + texts)
    finally:
        hook.remove()
    assert emb.shape == (3, 384) and len(calls) == 1  # the repeat came from the cache
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    assert torch.equal(again[:3], emb)
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2]  # two captions of a 3 agree more than a 3 and a cat
    hidden, mask = minilm.hidden_states(texts)
    assert hidden.shape[:2] == mask.shape and hidden.shape[2] == 384


def test_clip_text_model_works_through_the_same_class(tmp_path):
    torch.manual_seed(0)
    config = CLIPTextConfig(
        vocab_size=30522,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=32,
    )
    CLIPTextModel(config).save_pretrained(tmp_path / "clip")
    AutoTokenizer.from_pretrained(str(default_text_encoder_path())).save_pretrained(tmp_path / "clip")
    enc = TextEncoder.from_pretrained(tmp_path / "clip")
    assert isinstance(enc.model, CLIPTextModel) and enc.embedding_dim == 32
    emb = enc.encode(["a digit", "another digit"])
    assert emb.shape == (2, 32) and torch.isfinite(emb).all()
    pooled = TextEncoder(enc.model, enc.tokenizer, pooling="pooler").encode(["a digit"])
    assert pooled.shape == (1, 32)


def test_text_encoder_errors(tmp_path, minilm):
    with pytest.raises(ValueError, match="could not load a text encoder"):
        TextEncoder.from_pretrained(tmp_path / "absent")
    with pytest.raises(TypeError, match="list of strings"):
        minilm.encode("a single string")
    with pytest.raises(ValueError, match="pooling must be one of"):
        TextEncoder(minilm.model, minilm.tokenizer, pooling="max")


# --- pairing ---------------------------------------------------------------------------------

LABELS = np.repeat(np.arange(5), [4, 6, 1, 5, 3])


@pytest.mark.parametrize("strategy", ["random", "intra-class", "inter-class", "knn"])
def test_pairs_depend_only_on_seed_and_index(strategy):
    latents = np.random.default_rng(0).normal(size=(len(LABELS), 8))
    p = Pairing(strategy, LABELS, seed=7, latents=latents)
    a, b = p.pairs(np.arange(500))
    a2, b2 = Pairing(strategy, LABELS, seed=7, latents=latents).pairs(np.arange(250, 500))
    assert np.array_equal(a[250:], a2) and np.array_equal(b[250:], b2)
    assert not np.array_equal(a, Pairing(strategy, LABELS, seed=8, latents=latents).pairs(np.arange(500))[0])
    assert (a != b).all()


def test_strategy_semantics():
    a, b = Pairing("intra-class", LABELS, 0).pairs(np.arange(400))
    assert (LABELS[a] == LABELS[b]).all() and 2 not in set(LABELS[a])  # class 2 has one example
    a, b = Pairing("inter-class", LABELS, 0).pairs(np.arange(400))
    assert (LABELS[a] != LABELS[b]).all() and len(set(zip(LABELS[a], LABELS[b], strict=True))) == 20
    a, b = Pairing("inter-class", LABELS, 0, class_pairs=[(0, 3)]).pairs(np.arange(100))
    assert set(LABELS[a]) == {0} and set(LABELS[b]) == {3}
    latents = np.random.default_rng(1).normal(size=(len(LABELS), 4))
    p = Pairing("knn", LABELS, 0, latents=latents, k=2)
    a, b = p.pairs(np.arange(300))
    dist = ((latents[:, None] - latents[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    nearest2 = np.argsort(dist, axis=1)[:, :2]
    assert all(bi in nearest2[ai] for ai, bi in zip(a, b, strict=True))


def test_counter_based_draws_are_uniform_and_beta_distributed():
    u = uniform(3, np.arange(200_000), "a")
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    lam = sample_lambdas(3, np.arange(200_000), 0.4)
    assert abs(lam.var() - 1 / (4 * 1.8)) < 0.003
    assert not np.array_equal(uniform(3, np.arange(10), "a"), uniform(3, np.arange(10), "b"))


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("inter-class", np.zeros(5, dtype=int)), {}, "at least 2 classes"),
        (("intra-class", np.arange(5)), {}, "a class with at least 2 examples"),
        (("inter-class", LABELS), {"class_pairs": [(1, 1)]}, "not a pair of two different classes"),
        (("inter-class", LABELS), {"class_pairs": [(1, 9)]}, "class 9 has no examples"),
        (("knn", LABELS), {}, "needs the source latents"),
        (("mixup", LABELS), {}, "strategy must be one of"),
        (("random", np.zeros(1, dtype=int)), {}, "at least 2 source examples"),
    ],
)
def test_pairing_errors(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Pairing(*args, seed=0, **kwargs)


# --- blending --------------------------------------------------------------------------------


def _side(seed, labels):
    g = torch.Generator().manual_seed(seed)
    text = torch.nn.functional.normalize(torch.randn(len(labels), 12, generator=g), dim=1)
    onehot = torch.nn.functional.one_hot(torch.tensor(labels), 4).float()
    return Pairs(torch.randn(len(labels), 6, generator=g), text, onehot, [f"caption {y}" for y in labels])


def test_one_shared_lambda_reaches_latent_text_and_label():
    a, b = _side(0, [0, 1, 2]), _side(1, [3, 3, 0])
    lam = torch.tensor([0.9, 0.5, 0.2], dtype=torch.float64)
    mix = blend(a, b, lam, method="slerp")
    t = (1 - lam).float()
    torch.testing.assert_close(mix.latents, slerp(a.latents, b.latents, t))
    torch.testing.assert_close(mix.text_embeddings, slerp(a.text_embeddings, b.text_embeddings, t))
    torch.testing.assert_close(mix.soft_labels, lam.float()[:, None] * a.labels + (1 - lam.float())[:, None] * b.labels)
    assert mix.composed_captions[0] == "a blend of caption 0 (90%) and caption 3 (10%)"
    assert mix.captions[0] == "caption 0" and mix.captions[2] == "caption 0"  # nearest to the blended text
    torch.testing.assert_close(mix.text_embeddings.norm(dim=1), torch.ones(3))  # stays on the sphere


def test_lambda_drawn_from_beta_with_a_generator_is_reproducible():
    a, b = _side(0, [0, 1, 2, 3]), _side(1, [1, 2, 3, 0])
    m1 = blend(a, b, alpha=0.4, generator=torch.Generator().manual_seed(5))
    m2 = blend(a, b, alpha=0.4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(m1.lam, m2.lam) and torch.equal(m1.latents, m2.latents)


def test_label_sharpening_follows_diff_mix():
    ya, yb = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    lam = torch.tensor([0.75])
    torch.testing.assert_close(soft_labels(ya, yb, lam), torch.tensor([[0.75, 0.25]]))
    torch.testing.assert_close(soft_labels(ya, yb, lam, gamma=2.0), torch.tensor([[1 - 0.0625, 0.0625]]))
    assert compose_caption("x", "y", 0.333) == "a blend of x (33%) and y (67%)"


def test_blend_errors():
    a, b = _side(0, [0, 1]), _side(1, [1, 2])
    with pytest.raises(ValueError, match=r"lam must be in \[0, 1\], got 1.5"):
        blend(a, b, 1.5)
    assert blend(a, b, 1.5, allow_extrapolation=True).lam.tolist() == [1.5, 1.5]
    with pytest.raises(ValueError, match="give lam .* or alpha"):
        blend(a, b)
    with pytest.raises(ValueError, match="same, non-zero number of pairs"):
        blend(a, _side(1, [1]), 0.5)
    with pytest.raises(ValueError, match="gamma must be > 0"):
        blend(a, b, 0.5, gamma=0)
    with pytest.raises(ValueError, match="caption bank needs"):
        CaptionBank([], torch.zeros(0, 3))
