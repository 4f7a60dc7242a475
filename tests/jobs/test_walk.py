"""Keyframe walks decoded by real backends, even spacing, and `latentmix walk` (frames, video, GIF, manifest)."""

from __future__ import annotations

import json
from dataclasses import replace

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

from latentmix.backends import load_backend
from latentmix.classifiers.reference import load_reference_classifier
from latentmix.cli import main
from latentmix.data import DigitsDataset
from latentmix.jobs.keyframe_walk import decode_keyframe_walk, pixel_features, reference_features
from latentmix.latent.keyframes import keyframe_path
from latentmix.utils.viz import to_uint8


@pytest.fixture(scope="module")
def vae():
    return load_backend("digits-vae")


@pytest.fixture(scope="module")
def digit_latents(vae):
    x = DigitsDataset("test").images(range(8))
    with torch.inference_mode():
        return vae.encode(x)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("latentmix: error:"), err
    return lines[0]


def test_all_frames_of_all_paths_decode_in_shared_calls_like_one_call_per_frame(vae, digit_latents):
    kf = digit_latents.reshape(2, 4, -1)
    walk = decode_keyframe_walk(vae, kf, 5, "spline", closed=True)
    assert walk.images.shape == (2, 20, 1, 8, 8) and walk.keyframe_frames == [[0, 5, 10, 15]] * 2
    path = keyframe_path(kf, 5, "spline", closed=True)
    torch.testing.assert_close(walk.latents, path)
    with torch.inference_mode():
        for p in range(2):
            for t in (0, 3, 19):
                torch.testing.assert_close(walk.images[p, t], vae.decode(path[p, t : t + 1])[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(walk.images[:, ::5], vae.decode(digit_latents).reshape(2, 4, 1, 8, 8))


@pytest.mark.parametrize("closed", [False, True])
def test_even_spacing_makes_frames_change_by_the_same_amount(vae, digit_latents, closed):
    features = reference_features(load_reference_classifier("digits-classifier"))
    kf = digit_latents.reshape(2, 4, -1)
    uniform = decode_keyframe_walk(vae, kf, 8, "spline", closed=closed, features=features)
    even = decode_keyframe_walk(vae, kf, 8, "spline", closed=closed, spacing="even", features=features)
    assert even.images.shape == uniform.images.shape
    torch.testing.assert_close(even.cv_uniform, uniform.cv)  # the dense measurement contains the uniform frames
    assert float(even.cv.max()) <= 0.15 < float(uniform.cv.min())
    for p in range(2):  # keyframes are still frames, in order
        frames = even.keyframe_frames[p]
        assert frames[0] == 0 and frames == sorted(frames) and len(set(frames)) == 4
        torch.testing.assert_close(even.latents[p, frames], kf[p])
    pixels = decode_keyframe_walk(vae, kf, 8, "slerp", spacing="even", features=pixel_features)
    assert float(pixels.cv.max()) <= 0.15


def test_text_conditions_travel_along_the_same_positions():
    ldm = load_backend("digits-ldm")
    z = ldm.sample(3, generator=torch.Generator().manual_seed(0))
    conds = ldm.encode_text(["a handwritten digit 1", "a handwritten digit 4", "a handwritten digit 7"])
    walk = decode_keyframe_walk(ldm, z[None], 2, "spline", conds=conds[None], num_inference_steps=5)
    with torch.inference_mode():  # frame 2 is keyframe 1 decoded under its own prompt
        torch.testing.assert_close(walk.images[0, 2], ldm.decode(z[1:2], cond=conds[1:2], num_inference_steps=5)[0])
        mid = 0.5 * (conds[1] + conds[2])
        one = ldm.decode(walk.latents[0, 3:4], cond=mid[None], num_inference_steps=5)[0]
    torch.testing.assert_close(walk.images[0, 3], one, atol=1e-5, rtol=0)


def test_walk_command_writes_frames_video_gif_and_manifest(tmp_path, capsys):
    out = tmp_path / "walk"
    code = main(
        ["--quiet", "walk", "--keyframes", "0", "5", "9", "--frames", "6", "--spacing", "even", "--out", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "wrote 13 frames through 3 keyframes" in printed and "spacing cv" in printed
    frames = sorted((out / "frames").iterdir())
    assert [f.name for f in frames[:2]] == ["00000.png", "00001.png"] and len(frames) == 13
    manifest = json.loads((out / "walk.json").read_text())
    assert manifest["frames"] == 13 and manifest["keyframes"] == ["#0", "#5", "#9"] and manifest["video"] == "walk.mp4"
    assert manifest["spacing_cv"] <= 0.15 < manifest["spacing_cv_uniform"]
    # every keyframe frame is that test digit's reconstruction
    vae = load_backend("digits-vae")
    with torch.inference_mode():
        recon = to_uint8(vae.reconstruct(DigitsDataset("test").images([0, 5, 9])))
    for k, frame in enumerate(manifest["keyframe_frames"]):
        assert np.array_equal(np.asarray(Image.open(frames[frame]))[..., None], recon[k])
    reader = imageio_ffmpeg.read_frames(str(out / "walk.mp4"))
    meta = next(reader)
    assert meta["size"] == (256, 256) and meta["fps"] == 24 and sum(1 for _ in reader) == 13
    assert Image.open(out / "walk.gif").n_frames == 2 * 13 - 2  # ping-pong


def test_seed_and_prompt_travel_with_the_fast_sampler_as_webm(tmp_path, capsys):
    out = tmp_path / "prompts"
    args = ["--quiet", "walk", "--backend", "digits-ldm", "--prompts", "a handwritten digit 3", "a handwritten digit 8"]
    fast = ["--num-inference-steps", "5", "--sampler", "dpm-solver", "--closed", "--frames", "3", "--video", "webm"]
    assert main([*args, *fast, "--out", str(out)]) == 0, capsys.readouterr().err
    assert len(list((out / "frames").iterdir())) == 6 and (out / "walk.webm").stat().st_size > 0
    assert json.loads((out / "walk.json").read_text())["keyframes"][0] == "seed 0: a handwritten digit 3"
    seeds = tmp_path / "seeds"
    assert (
        main(["--quiet", "walk", "--seeds", "1", "2", "3", "--method", "slerp", "--video", "none", "--out", str(seeds)])
        == 0
    )
    assert sorted(p.name for p in seeds.iterdir()) == ["frames", "walk.gif", "walk.json"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--keyframes", "0"], "at least 2 keyframes"),
        (["--keyframes", "0", "nope.png"], "neither a dataset index nor an image file"),
        (["--keyframes", "0", "99999"], "out of range"),
        (["--seeds", "1", "2", "--fps", "0"], "fps must be"),
        (["--seeds", "1", "2", "--prompts", "a"], "not text-conditioned"),
        (["--keyframes", "0", "1", "--inversion", "exact"], "inversion applies to diffusion backends"),
        (["--backend", "digits-ldm", "--keyframes", "0", "1", "--sampler", "dpm-solver"], "decode with ddim"),
        (["--seeds", "1", "2", "--prompts", "a", "b", "c"], "one prompt per keyframe"),
        (["--backend", "digits-ldm", "--seeds", "1", "2", "--inversion-strength", "0.5"], "prior keyframes are pure"),
        (["--keyframes", "0", "1", "--inversion-strength", "0.5"], "inversion_strength applies to diffusion backends"),
        (["--backend", "digits-ldm", "--keyframes", "0", "1", "--inversion-strength", "0"], "strength must be"),
    ],
)
def test_bad_walks_are_one_line_errors_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["--quiet", "walk", *args, "--out", str(out)]) == 2
    assert message in one_line_error(capsys)
    assert not out.exists()


def test_a_missing_codec_or_library_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    import sys

    import latentmix.utils.video as video

    monkeypatch.setattr(video, "_encoders", lambda exe: "")
    assert main(["--quiet", "walk", "--seeds", "1", "2", "--out", str(tmp_path / "a")]) == 2
    assert "no libx264 encoder" in one_line_error(capsys)
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    assert main(["--quiet", "walk", "--seeds", "1", "2", "--video", "webm", "--out", str(tmp_path / "b")]) == 2
    assert "needs imageio-ffmpeg" in one_line_error(capsys)
    assert not any(tmp_path.iterdir())


def test_an_encode_that_fails_half_way_leaves_no_video_and_no_walk(tmp_path, monkeypatch, capsys):
    import latentmix.utils.video as video

    frames = (np.random.default_rng(0).random((6, 8, 8, 3)) * 255).astype(np.uint8)
    real = imageio_ffmpeg.write_frames

    def failing(*args, **kwargs):
        writer = real(*args, **kwargs)

        def gen():
            writer.send(None)
            yield
            for _ in range(3):
                frame = yield
                writer.send(frame)
            writer.close()
            raise OSError(28, "No space left on device")

        return gen()

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", failing)
    with pytest.raises(OSError, match="No space"):
        video.save_video(frames, tmp_path / "v.mp4", fps=10)
    assert list(tmp_path.iterdir()) == []
    assert main(["--quiet", "walk", "--seeds", "1", "2", "--frames", "4", "--out", str(tmp_path / "w")]) == 2
    assert "No space left on device" in one_line_error(capsys)
    assert [p.name for p in tmp_path.iterdir()] == [".w.lock"]  # no walk, no temporary: only the writer lock's file


def test_walk_between_partly_inverted_keyframes(tmp_path):
    """``inversion_strength``: the keyframes are inverted part of the way and every frame is sampled back from there,
    so each keyframe frame is that image's partial round trip."""
    from latentmix.configs import WalkConfig
    from latentmix.jobs.walk import walk

    ldm, test = load_backend("digits-ldm"), DigitsDataset("test")
    config = WalkConfig(
        backend="digits-ldm",
        keyframes=("0", "5"),
        frames=3,
        video="none",
        num_inference_steps=6,
        inversion_strength=0.5,
    )
    result = walk(replace(config, out=tmp_path / "out", backend=ldm))
    kwargs = {"texts": [test.texts[0], test.texts[5]], "num_inference_steps": 6, "strength": 0.5}
    with torch.inference_mode():
        ends = ldm.decode(ldm.encode(test.images([0, 5]), **kwargs), **kwargs)
        full = {**kwargs, "strength": 1.0}
        assert not np.array_equal(to_uint8(ldm.decode(ldm.encode(test.images([0, 5]), **full), **full)), to_uint8(ends))
    keyframe_frames = json.loads(result.manifest.read_text())["keyframe_frames"]
    frames = [np.asarray(Image.open(result.frames[k])) for k in keyframe_frames]
    assert all(np.array_equal(frame[..., None], end) for frame, end in zip(frames, to_uint8(ends), strict=True))


def test_walk_from_python_with_int_indices_and_path_objects(tmp_path):
    from latentmix.configs import WalkConfig
    from latentmix.jobs.walk import walk

    Image.fromarray(np.full((8, 8), 200, dtype=np.uint8)).save(tmp_path / "bright.png")
    config = WalkConfig(keyframes=(3, tmp_path / "bright.png", 7), frames=2, video="none")
    result = walk(replace(config, out=tmp_path / "out"))
    assert result.labels == ["#3", "bright.png", "#7"] and len(result.frames) == 5 and result.video is None
    with pytest.raises(ValueError, match="list of dataset indices or image files"):
        walk(WalkConfig(keyframes=(True, 2), out=tmp_path / "bad"))
