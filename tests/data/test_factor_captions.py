"""Blend captions rendered from the blended factors (latentmix.data.factor_captions)."""

from __future__ import annotations

import pytest

from latentmix.data import load_dataset
from latentmix.data.factor_captions import FactorCaptioner, blended_factors, is_shapes, render_generic, render_shapes

A = {"label": "circle", "colour": "red", "size": "small", "position": "left", "background": "plain"}
B = {"label": "square", "colour": "red", "size": "large", "position": "top", "background": "plain"}


def test_the_dominant_parent_names_each_factor_and_both_are_named_near_half():
    assert blended_factors(A, B, 0.8) == {k: (v,) for k, v in A.items()}
    assert blended_factors(A, B, 0.2) == {k: (v,) for k, v in B.items()}
    near = blended_factors(A, B, 0.45, margin=0.1)  # b dominates, a close behind: both named where they differ
    assert near["label"] == ("square", "circle") and near["size"] == ("large", "small")
    assert near["colour"] == ("red",) and near["background"] == ("plain",)  # shared values are named once
    assert blended_factors(A, B, 0.45)["label"] == ("square",)  # the default margin, 0: always the dominant one
    assert blended_factors(A, B, 0.5, margin=0.1)["label"] == ("circle", "square")  # a tie: a counts as dominant


def test_shapes_captions_use_the_data_sets_words_and_name_every_factor():
    text = render_shapes({k: (v,) for k, v in A.items()}, index=0)
    assert text == "a small red circle on the left"  # template 0, first paraphrases
    both = render_shapes(blended_factors(A, B, 0.55, margin=0.1), index=3)
    assert "circle or" in both and ("square" in both or "box" in both) and "on the left or at the top" in both
    texts = {render_shapes({k: (v,) for k, v in A.items()}, index=i) for i in range(30)}
    assert len(texts) > 5 and all("red" in t for t in texts)  # paraphrase variety, the facts kept
    assert render_generic(blended_factors(A, B, 0.55, margin=0.1)) == (
        "circle or square; colour: red; size: small or large; position: left or top; background: plain"
    )


def test_the_captioner_recognises_shapes_and_refuses_data_without_factors(shapes_cache, digits_test):
    shapes = load_dataset("shapes", split="test", image_size=8)
    assert is_shapes(shapes)
    captioner = FactorCaptioner(shapes)
    a, b = shapes.factors(0), shapes.factors(1)
    assert captioner.factors(0, 1, 0.7) == a and captioner.factors(0, 1, 0.3) == b
    assert a["colour"] in captioner.caption(0, 1, 0.9, index=4)
    with pytest.raises(ValueError, match="needs source data with factors"):
        FactorCaptioner(digits_test)
    with pytest.raises(ValueError, match="caption_margin"):
        FactorCaptioner(shapes, margin=0.7)
