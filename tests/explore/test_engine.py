"""The explore page's engine (every number the page shows) and the ``latentmix explore`` command, without a
browser; tests/explore/test_browser.py drives the page itself."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

from latentmix.backends import CallOptions, load_backend
from latentmix.cli import main
from latentmix.configs import ExploreConfig
from latentmix.data import load_dataset
from latentmix.explore import Explorer, display_image, explorer_for
from latentmix.latent.interpolate import interpolate, interpolation_grid_2d
from latentmix.utils.viz import to_uint8


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("explore")
    return Explorer(load_backend("digits-vae"), load_dataset("digits", split="test"), out_dir=out,
                    backend_spec="digits-vae", data_spec="digits")  # fmt: skip


def _decode(explorer: Explorer, z: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return explorer.backend.decode(z).float()


def _z(explorer: Explorer, i: int) -> torch.Tensor:
    with torch.inference_mode():
        return explorer.backend.encode(explorer.dataset.images([i]))


def test_frame_is_one_decode_of_the_cached_endpoints(explorer):
    a, b = explorer.from_index(0), explorer.from_index(5)
    explorer.frame(a, b, 0.5)
    encodes, decodes = explorer.encodes, explorer.decodes
    for t in (0.0, 0.3, 1.0):
        for method in ("slerp", "lerp"):
            got = explorer.frame(a, b, t, method)
            want = _decode(explorer, interpolate(_z(explorer, 0), _z(explorer, 5), t, method))[0]
            torch.testing.assert_close(got, want)
    assert explorer.encodes == encodes  # cached
    assert explorer.decodes == decodes + 6  # one latent per move
    assert a.name == f"#0 ({explorer.class_names[a.label]})" and a.text == explorer.dataset.texts[0]


def test_strip_and_sheet_match_the_library(explorer):
    a, b, c, d = (explorer.from_index(i) for i in (1, 2, 3, 4))
    strip = explorer.strip(a, b, 5, "slerp")
    assert strip.shape == (5, 1, 8, 8)
    torch.testing.assert_close(strip[2], explorer.frame(a, b, 0.5, "slerp"), atol=1e-5, rtol=0)
    sheet = explorer.sheet([a, b, c, d], 3, 4, "lerp")
    z = interpolation_grid_2d(*(_z(explorer, i) for i in (1, 2, 3, 4)), 3, 4, "lerp")[0]
    torch.testing.assert_close(sheet, _decode(explorer, z.flatten(0, 1)).reshape(3, 4, 1, 8, 8), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="four endpoints"):
        explorer.sheet([a, b], 3, 3)
    with pytest.raises(ValueError, match="frames must be at most 64"):
        explorer.strip(a, b, 65)
    with pytest.raises(ValueError, match=r"t must be in \[0, 1\]"):
        explorer.frame(a, b, 1.5)
    with pytest.raises(ValueError, match="method"):
        explorer.frame(a, b, 0.5, "cubic")


def test_blend_info_is_one_lambda_for_caption_and_label(explorer):
    a, b = explorer.from_index(0), explorer.from_index(5)
    info = explorer.blend_info(a, b, 0.25)
    assert info["lam"] == pytest.approx(0.75)
    assert info["caption"] == f"a blend of {a.text} (75%) and {b.text} (25%)"
    names = explorer.class_names
    assert info["soft_label"] == {names[a.label]: 0.75, names[b.label]: 0.25}
    assert sum(info["soft_label"].values()) == pytest.approx(1.0)


def test_uploads_are_converted_like_the_loader_and_refused_when_broken_or_large(explorer, tmp_path):
    rgb = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(rgb)
    e = explorer.from_upload(rgb)
    assert e.kind == "upload" and e.name == "photo.png" and e.file.parent == explorer.out_dir / "uploads"
    x = explorer.image(e)
    assert x.shape == (1, 8, 8) and float(x.min()) >= -1 and float(x.max()) <= 1
    assert explorer.from_upload(rgb).key == e.key  # same pixels, same cache entry
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="upload: broken.jpg is not an image latentmix can read"):
        explorer.from_upload(broken)
    small = Explorer(explorer.backend, None, out_dir=tmp_path / "o", max_upload_pixels=1000)
    with pytest.raises(ValueError, match=r"40 x 60|60 x 40"):
        small.from_upload(rgb)
    with pytest.raises(ValueError, match="no data set"):
        small.from_index(0)
    with pytest.raises(ValueError, match="out of range"):
        explorer.from_index(len(explorer.dataset))
    with pytest.raises(ValueError, match="not text-conditioned"):
        explorer.from_prompt("a handwritten digit 3")


def test_display_image_is_a_whole_number_upscale(explorer):
    x = explorer.dataset.images([7])[0]
    shown = np.asarray(display_image(x))
    assert shown.shape == (256, 256, 3)
    np.testing.assert_array_equal(shown[::32, ::32, 0], to_uint8(x[None])[0][:, :, 0])


def test_exports_are_written_whole(explorer):
    a, b = explorer.from_index(0), explorer.from_index(5)
    frame = explorer.save_frame(explorer.frame(a, b, 0.5))
    assert Image.open(frame).size == (8, 8)
    strip = explorer.save_strip(explorer.strip(a, b, 6), video="mp4")
    assert set(strip) == {"png", "gif", "mp4"} and all(p.stat().st_size > 0 for p in strip.values())
    assert Image.open(strip["gif"]).n_frames == 10  # ping-pong
    assert not list(explorer.out_dir.glob("*.tmp*"))


def test_synthesize_like_this_writes_the_current_blend(explorer, tmp_path):
    a, b = explorer.from_index(0), explorer.from_index(5)
    assert a.label != b.label
    result = explorer.synthesize_like(a, b, 0.25, "lerp", n=8)
    manifest = json.loads((result.out / "manifest.json").read_text())
    assert result.num_samples == 8 and result.out.parent == explorer.out_dir
    config = manifest["settings"]
    assert config["lam"] == 0.75 and config["method"] == "lerp" and config["strategy"] == "inter-class"
    assert [list(p) for p in config["class_pairs"]] == [[a.label, b.label]]
    rows = [json.loads(line) for line in (result.out / "metadata.jsonl").read_text().splitlines()]
    assert {r["label_a"] for r in rows} == {a.label} and {r["label_b"] for r in rows} == {b.label}
    assert {r["lambda"] for r in rows} == {0.75}
    Image.new("L", (8, 8), 128).save(tmp_path / "grey.png")
    with pytest.raises(ValueError, match="pick A and B from the data set"):
        explorer.synthesize_like(a, explorer.from_upload(tmp_path / "grey.png"), 0.5, "slerp")


def test_keyframe_walk_and_attribute_edit(explorer):
    ends = [explorer.from_index(i) for i in (0, 5, 9)]
    result = explorer.keyframe_walk(ends, 3, "spline", "uniform")
    assert len(result.frames) == 7 and result.gif.is_file() and result.out.parent == explorer.out_dir
    factors = explorer.factors()
    assert list(factors) == ["label"] and factors["label"] == explorer.class_names
    a = ends[0]
    source, target = explorer.class_names[a.label], explorer.class_names[(a.label + 1) % 10]
    pair = explorer.edit(a, "label", source, target, 1.5)
    assert pair.shape == (2, 1, 8, 8) and not torch.allclose(pair[0], pair[1])
    torch.testing.assert_close(pair[0], explorer.frame(a, a, 0.0), atol=1e-5, rtol=0)


def test_prompts_on_a_text_conditioned_backend(tmp_path):
    ldm = load_backend("digits-ldm")
    explorer = Explorer(ldm, None, out_dir=tmp_path, options=CallOptions(num_inference_steps=4))
    a, b = explorer.from_prompt("a handwritten digit 3", 0), explorer.from_prompt("a handwritten digit 8", 1)
    frame = explorer.frame(a, b, 0.5)
    za, ca = explorer.latent(a)
    zb, cb = explorer.latent(b)
    with torch.inference_mode():
        want = ldm.decode(interpolate(za, zb, 0.5, "slerp"), cond=(ca + cb) / 2, num_inference_steps=4)[0]
    torch.testing.assert_close(frame, want.float())
    assert explorer.blend_info(a, b, 0.5)["caption"].startswith("a blend of a handwritten digit 3 (50%)")


def test_explorer_for_picks_the_backends_own_data_and_refuses_mismatches(tmp_path):
    ex = explorer_for(ExploreConfig(out=str(tmp_path)))
    assert ex.backend_spec == "digits-vae" and ex.data_spec == "digits" and len(ex.dataset) > 0
    with pytest.raises(ValueError, match="pass the backend's own --data, or pass --resize"):
        explorer_for(ExploreConfig(backend="digits-vae", data="shapes", out=str(tmp_path)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_bad_input_is_one_line(capsys):
    assert main(["explore", "--port", "70000"]) == 2
    err = capsys.readouterr().err
    assert "port must be at most 65535" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exit_info:
        main(["explore", "--split", "nope"])
    assert exit_info.value.code == 2


def test_cli_serves_the_page_and_prints_its_address(tmp_path):
    pytest.importorskip("gradio")
    port = _free_port()
    argv = [sys.executable, "-m", "latentmix", "--quiet", "explore", "--port", str(port), "--out", str(tmp_path)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 120
        while "serving" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
        assert f"serving http://127.0.0.1:{port}/" in line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            assert response.status == 200 and b"latentmix explore" in response.read()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_readme_explore_commands_parse():
    from pathlib import Path

    from latentmix.cli import build_parser

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text.split("## Exploring a latent space in the browser", 1)[1].split("```bash\n", 1)[1].split("```")[0]
    lines = [line.split("#")[0].split("&&")[-1].strip() for line in section.splitlines()]
    commands = [line for line in lines if line.startswith("latentmix explore")]
    assert len(commands) == 3
    for command in commands:
        args = build_parser().parse_args(command.split()[1:])
        assert args.command == "explore"


def test_the_page_edits_along_the_matched_direction_like_latentmix_edit(tmp_path):
    from latentmix.classifiers.reference import load_reference_classifier
    from latentmix.data import load_dataset
    from latentmix.jobs.attributes import attribute_direction, edit_images, predict_factors

    test = load_dataset("shapes", split="test")
    explorer = Explorer(load_backend("shapes-vae"), test, out_dir=tmp_path, data_spec="shapes")
    reds = [i for i in range(len(test)) if test.factors(i)["colour"] == "red"][:8]
    edits = torch.stack([explorer.edit(explorer.from_index(i), "colour", "red", "blue")[1] for i in reds])
    z, labelled = explorer._train_latents()
    direction = attribute_direction(z, labelled, "colour", "red", "blue")
    plain = edit_images(explorer.backend, test.images(reds), direction)[1].float()
    assert not torch.allclose(edits, plain)  # each along its matched direction, not the one mean difference
    read = predict_factors(load_reference_classifier("shapes-classifier"), edits, list(test.factor_values))
    colour = ["label", *test.factor_values].index("colour")
    blue = test.factor_values["colour"].index("blue")
    assert int((read[:, colour] == blue).sum()) >= 6  # the edit mostly does what it says (about 80 % in BENCHMARKS)
    with pytest.raises(ValueError, match="the target is the source value"):
        explorer.edit(explorer.from_index(reds[0]), "colour", "red", "red")
