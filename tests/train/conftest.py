"""Fixtures of the adapter-fitting tests."""

from __future__ import annotations

import pytest
from PIL import Image


@pytest.fixture
def photos(tmp_path):
    """Two classes of real photo patches (skimage's cat and coffee), 16 x 16 RGB, three per class."""
    from skimage import data

    root = tmp_path / "photos"
    for name, image in (("cat", data.chelsea()), ("coffee", data.coffee())):
        (root / name).mkdir(parents=True)
        for i in range(3):
            patch = image[40 * i : 40 * i + 96, 60 * i : 60 * i + 96]
            Image.fromarray(patch).resize((16, 16)).save(root / name / f"{i}.png")
    return root
