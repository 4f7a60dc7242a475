"""Attribute directions (issue 11): the global mean difference and the matched one, on real shapes pixels.

Pixels are a latent space too (the identity autoencoder), so what a direction does can be checked without a
fitted model: a red square at the left edited towards blue should look like the blue squares at the left.
"""

from __future__ import annotations

import pytest
import torch

from latentmix.data import Subset, load_dataset
from latentmix.jobs.attributes import apply_direction, attribute_direction, factors_given, true_factors


@pytest.fixture(scope="module")
def pixels():
    """(train latents = the train images flattened, the train split, the test split)."""
    train, test = load_dataset("shapes", split="train"), load_dataset("shapes", split="test")
    subset = Subset(train, range(4000))
    return subset.images(range(len(subset))).flatten(1), subset, test


def _rows(dataset, **factors):
    table, names = true_factors(dataset), ["label", *dataset.factor_values]
    rows = torch.ones(len(table), dtype=torch.bool)
    for name, value in factors.items():
        values = dataset.class_names if name == "label" else dataset.factor_values[name]
        rows &= table[:, names.index(name)] == values.index(value)
    return rows


def test_a_matched_direction_is_the_mean_difference_among_rows_that_share_the_given_factors(pixels):
    z, train, _ = pixels
    given = {"label": "square", "size": "large", "position": "left"}
    d = attribute_direction(z, train, "colour", "red", "blue", given=given)
    red, blue = _rows(train, colour="red", **given), _rows(train, colour="blue", **given)
    assert torch.allclose(d.vector, z[blue].mean(0) - z[red].mean(0))
    assert d.matched == given and d.neighbours == 0
    glob = attribute_direction(z, train, "colour", "red", "blue")
    assert glob.matched == {} and torch.allclose(
        glob.vector, z[_rows(train, colour="blue")].mean(0) - z[_rows(train, colour="red")].mean(0)
    )


def test_matching_lets_the_last_factors_go_while_a_value_has_too_few_rows(pixels):
    z, train, _ = pixels
    given = {"label": "square", "size": "large", "position": "left", "background": "plain"}
    cells = [int((_rows(train, colour=c, **given)).sum()) for c in ("red", "blue")]
    d = attribute_direction(z, train, "colour", "red", "blue", given=given, near=z[0], neighbours=max(cells) + 1)
    assert d.matched == {"label": "square", "size": "large", "position": "left"}  # the background went first
    # with the latent being edited, each value's mean is over its nearest rows
    k = 3
    d = attribute_direction(z, train, "colour", "red", "blue", given=d.matched, near=z[0], neighbours=k)
    red, blue = z[_rows(train, colour="red", **d.matched)], z[_rows(train, colour="blue", **d.matched)]
    shift = blue.mean(0) - red.mean(0)
    nearest = lambda rows, to: rows[(rows - to).square().sum(1).argsort()[:k]].mean(0)  # noqa: E731
    assert d.neighbours == k and torch.allclose(d.vector, nearest(blue, z[0] + shift) - nearest(red, z[0]))


def test_a_matched_edit_lands_on_the_wanted_examples_where_the_global_one_does_not(pixels):
    """Held-out red shapes moved towards blue: the matched edit ends near the blue shapes that share the
    example's shape, size and position; the global mean difference, averaged over every place, does not."""
    z, train, test = pixels
    truth = true_factors(test)
    red = [i for i in range(400) if test.factors(i)["colour"] == "red"][:12]
    assert len(red) >= 8
    glob = attribute_direction(z, train, "colour", "red", "blue")
    gaps = {"matched": [], "global": [], "unedited": []}
    for i in red:
        x = test.images([i]).flatten(1)
        given = factors_given(test, truth[i], "colour")
        matched = attribute_direction(z, train, "colour", "red", "blue", given=given, near=x[0], neighbours=10)
        wanted = z[_rows(train, colour="blue", **matched.matched)]
        for name, edited in (
            ("matched", apply_direction(x, matched)),
            ("global", apply_direction(x, glob)),
            ("unedited", x),
        ):
            gaps[name].append(float((wanted - edited).square().mean(1).min()))
    mean = {k: sum(v) / len(v) for k, v in gaps.items()}
    assert mean["matched"] < 0.7 * mean["global"] and mean["global"] < mean["unedited"], mean


def test_directions_name_bad_factors_and_values(pixels):
    z, train, _ = pixels
    with pytest.raises(ValueError, match="being changed"):
        attribute_direction(z, train, "colour", "red", "blue", given={"colour": "red"})
    with pytest.raises(ValueError, match="'teal' is not a value"):
        attribute_direction(z, train, "colour", "red", "blue", given={"label": "teal"})
    with pytest.raises(ValueError, match="'mood' is not one of the data's factors"):
        attribute_direction(z, train, "colour", "red", "blue", given={"mood": "calm"})
    with pytest.raises(ValueError, match="2 directions for 3 latents"):
        apply_direction(z[:3], [attribute_direction(z, train, "colour", "red", "blue")] * 2)
