"""interpolation_grid: endpoints by index / class / prior, batched decoding, files, bad input."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from latentmix import interpolation_grid
from latentmix.jobs.grid import render_grid


def test_grid_between_real_images_shows_them_beside_their_reconstructions(tiny_vae, digits_test, tmp_path):
    result = interpolation_grid(
        backend=tiny_vae,
        pairs=[(0, 1), (2, 3), (4, 5)],
        steps=6,
        method="lerp",
        out=tmp_path / "g.png",
        gif=tmp_path / "g.gif",
    )
    assert result.images.shape == (3, 6, 1, 8, 8) and result.latents.shape == (3, 6, 6)
    assert torch.equal(result.real_a, digits_test.images([0, 2, 4]))
    with torch.inference_mode():
        recon = tiny_vae.decode(tiny_vae.encode(digits_test.images([0, 2, 4])))
    torch.testing.assert_close(result.images[:, 0], recon)
    assert result.cells().shape == (3, 8, 1, 8, 8)
    png = Image.open(result.png)
    assert png.size == render_grid(result).size and png.height >= 3 * 64
    gif = Image.open(result.gif)
    assert gif.n_frames == 6 + 4  # ping-pong: 0..5 then 4..1
    assert result.row_labels == ["#0 -> #2".replace("#2", "#1"), "#2 -> #3", "#4 -> #5"]


def test_grid_by_class_picks_images_of_those_classes_reproducibly(tiny_vae, digits_test):
    r1 = interpolation_grid(backend=tiny_vae, classes=[(3, 8), ("1", "1")], steps=3, seed=5)
    r2 = interpolation_grid(backend=tiny_vae, classes=[(3, 8), ("1", "1")], steps=3, seed=5)
    assert torch.equal(r1.images, r2.images)
    assert r1.row_labels == ["3 -> 8", "1 -> 1"]
    assert not torch.equal(r1.real_a[1], r1.real_b[1])  # intra-class: two different images


def test_default_grid_walks_between_class_pairs(tiny_vae):
    result = interpolation_grid(backend=tiny_vae, steps=4)
    assert result.row_labels == ["0 -> 1", "2 -> 3", "4 -> 5", "6 -> 7", "8 -> 9"]
    assert result.method == "slerp"


def test_grid_from_the_prior_uses_the_seed(tiny_vae):
    r1 = interpolation_grid(backend=tiny_vae, prior=2, steps=5, seed=1)
    r2 = interpolation_grid(backend=tiny_vae, prior=2, steps=5, seed=1)
    assert r1.real_a is None and torch.equal(r1.latents, r2.latents)
    assert r1.cells().shape == (2, 5, 1, 8, 8)
    assert not torch.equal(r1.latents, interpolation_grid(backend=tiny_vae, prior=2, steps=5, seed=2).latents)


def test_all_pairs_and_steps_are_decoded_in_one_batched_call(tiny_vae):
    calls = []
    decode = tiny_vae._decode
    tiny_vae._decode = lambda z, **kw: calls.append(z.shape[0]) or decode(z, **kw)
    interpolation_grid(backend=tiny_vae, pairs=[(i, i + 1) for i in range(0, 20, 2)], steps=10)
    assert calls == [100]


def test_grid_on_an_rgb_autoencoder_kl_and_image_folder(tiny_akl_backend, tmp_path):
    import skimage.data

    for cls, pixels in [("a", skimage.data.astronaut()), ("b", skimage.data.coffee()), ("b", skimage.data.chelsea())]:
        (tmp_path / "data" / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(tmp_path / "data" / cls / f"{len(list((tmp_path / 'data' / cls).iterdir()))}.png")
    result = interpolation_grid(
        backend=tiny_akl_backend, data=tmp_path / "data", split="all", steps=3, out=tmp_path / "rgb.png"
    )
    assert result.images.shape == (1, 3, 3, 16, 16) and result.png.is_file()
    assert result.row_labels == ["a -> b"]
    with pytest.raises(ValueError, match="no generative prior"):
        interpolation_grid(backend=tiny_akl_backend, prior=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(steps=1), "steps must be an int >= 2"),
        (dict(method="cubic"), "method must be one of"),
        (dict(pairs=[(0, 999)]), "index 999 is out of range"),
        (dict(classes=[(3, 12)]), "class 12 is out of range"),
        (dict(pairs=[(0, 1)], prior=2), "only one of"),
        (dict(prior=0), "prior must be a positive"),
        (dict(gif="walk.png"), "gif must be a .gif path"),
    ],
)
def test_bad_input_raises_and_writes_nothing(tiny_vae, tmp_path, kwargs, message):
    kwargs.setdefault("out", tmp_path / "g.png")
    if "gif" in kwargs:
        kwargs["gif"] = tmp_path / kwargs["gif"]
    with pytest.raises(ValueError, match=message):
        interpolation_grid(backend=tiny_vae, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_out_must_be_png(tiny_vae, tmp_path):
    with pytest.raises(ValueError, match="out must be a .png path"):
        interpolation_grid(backend=tiny_vae, out=tmp_path / "g.jpg")
