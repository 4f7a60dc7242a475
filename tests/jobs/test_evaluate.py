"""Evaluation on any data (issue 11): a reference for any labelled data, attribute metrics on shapes, edits."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from latentmix.backends import ConvVAE, VAEBackend
from latentmix.cli import main
from latentmix.configs import EditConfig, EvalConfig, ReferenceFitConfig
from latentmix.data import load_dataset
from latentmix.jobs.attributes import predict_factors

SMALL = dict(
    test_images=200,
    prior_samples=32,
    intra_pairs_per_class=2,
    inter_paths=6,
    ppl_pairs=8,
    factor_paths=6,
    edits_per_pair=2,
    direction_samples=2000,
)


@pytest.fixture(scope="module")
def shapes_reference(tmp_path_factory, shapes_cache):
    """A real (one-epoch, narrow) reference classifier with a head per factor, fitted on shapes."""
    from latentmix.classifiers.reference import load_reference_classifier
    from latentmix.train.fit_reference import fit_reference_classifier

    out = tmp_path_factory.mktemp("ref") / "shapes-ref"
    result = fit_reference_classifier(ReferenceFitConfig(data="shapes", epochs=1, width=8), out, quiet=True)
    assert set(result.metrics) >= {"test_accuracy", "test_accuracy_colour", "test_accuracy_position"}
    assert result.metrics["test_accuracy_colour"] > 0.3  # chance is 1/6: the factor heads learn
    # saved and loaded, the heads answer by factor name in the data's order (config.json sorts its keys)
    test, loaded = load_dataset("shapes", split="test"), load_reference_classifier(out)
    assert list(loaded.factor_heads) != list(test.factor_values)
    x, order = test.images(range(64)), list(test.factor_values)
    fitted = predict_factors(result.backend.eval(), x, order)
    assert torch.equal(predict_factors(loaded, x, order), fitted)
    assert not torch.equal(predict_factors(loaded, x), fitted)  # the reference's own order is another
    return out


@pytest.fixture(scope="module")
def shapes_vae(tmp_path_factory):
    torch.manual_seed(0)
    backend = VAEBackend(ConvVAE(in_channels=3, image_size=32, latent_dim=12, block_channels=(8, 16)))
    out = tmp_path_factory.mktemp("vae") / "shapes-vae"
    backend.save_pretrained(out)
    return out


def _check_attributes(attributes: dict, prompted: bool) -> None:
    assert set(attributes["reconstruction"]) == {"label", "colour", "size", "position", "background", "all"}
    walks = ("", "_partial") if prompted else ("",)  # the diffusion backend adds walks between partly noised latents
    for factor in ("label", "colour", "position"):
        for method in ("lerp", "slerp"):
            for walk in walks:
                path = attributes[f"paths_{factor}_{method}{walk}"]
                # a monotone path holds only A's value and B's, so its midpoint is one of them: the monotone paths are
                # a subset of those whose midpoint is A's or B's value
                assert 0 <= path["monotone"] <= path["midpoint_a_or_b"] <= 1 and path["paths"] == 6
                assert path.get("strength") == (0.5 if walk else None)
    assert prompted or not any(key.endswith("_partial") for key in attributes)
    for factor in ("label", "colour", "size", "position"):
        arithmetic, matched = attributes[f"arithmetic_{factor}"], attributes[f"arithmetic_{factor}_matched"]
        assert 0 <= arithmetic["success"] <= arithmetic["target_reached"] <= 1 and arithmetic["edits"] > 0
        assert 0 <= matched["success"] <= matched["target_reached"] <= 1 and matched["edits"] == arithmetic["edits"]
    assert ("prompted" in attributes) == prompted
    if prompted:
        assert 0 <= attributes["prompted"]["compositional"] <= 1 and attributes["prompted"]["samples"] == 32


def test_evaluate_on_shapes_adds_attribute_metrics(shapes_vae, shapes_reference, tmp_path, capsys):
    report_file = tmp_path / "report.json"
    argv = ["--quiet", "evaluate", "--backend", str(shapes_vae), "--data", "shapes", "--reference"]
    argv += [str(shapes_reference), "--json", str(report_file)]
    argv += [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]
    assert main(argv) == 0
    report = json.loads(report_file.read_text())
    assert report["config"]["data"] == "shapes" and report["reconstruction"]["encoder"]["mse"] > 0
    _check_attributes(report["attributes"], prompted=False)
    out = capsys.readouterr().out
    assert "attributes:" in out and "arithmetic_colour" in out


def test_a_text_conditioned_backend_is_prompted_with_the_datas_captions(tiny_sd_pipeline, shapes_reference):
    """Compositional accuracy: the factors each test caption names (not the shape in vague captions)."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline

    from latentmix.backends import LatentDiffusionBackend
    from latentmix.jobs.evaluate import evaluate_backend

    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(8, 16, 16), latent_channels=4, norm_num_groups=4, sample_size=32,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
    )  # fmt: skip
    pipe = StableDiffusionPipeline(**{**tiny_sd_pipeline.components, "vae": vae})
    backend = LatentDiffusionBackend.from_pipeline(pipe, num_inference_steps=2)
    assert (backend.image_size, backend.latent_shape) == (32, (4, 8, 8))
    config = EvalConfig(data="shapes", reference=str(shapes_reference), path_strength=0.5, **SMALL)
    report = evaluate_backend(config, backend=backend, quiet=True).to_dict()
    _check_attributes(report["attributes"], prompted=True)
    with pytest.raises(ValueError, match="path_strength 0.4 keeps no step of 2"):
        evaluate_backend(
            EvalConfig(data="shapes", reference=str(shapes_reference), **SMALL), backend=backend, quiet=True
        )


def test_evaluate_needs_a_reference_for_the_data_and_one_of_its_classes(shapes_vae, photo_patches, capsys):
    assert main(["--quiet", "evaluate", "--backend", str(shapes_vae), "--data", str(photo_patches), "--resize"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no reference classifier for data" in err and "fit reference-classifier" in err
    argv = ["--quiet", "evaluate", "--backend", str(shapes_vae), "--data", "shapes", "--reference", "digits-classifier"]
    assert main(argv) == 2
    assert "was fitted on other classes" in capsys.readouterr().err
    assert main(["--quiet", "evaluate", "--backend", str(shapes_vae), "--data", "no-such-set"]) == 2
    assert "no-such-set" in capsys.readouterr().err


def test_evaluate_on_a_users_folder_with_its_own_reference(photo_patches, tmp_path):
    assert main(["--quiet", "fit", "reference-classifier", "--data", str(photo_patches), "--epochs", "2",
                 "--width", "8", "--out", str(tmp_path / "ref")]) == 0  # fmt: skip
    card = (tmp_path / "ref" / "MODEL_CARD.md").read_text()
    assert "| test_accuracy |" in card and "fit reference-classifier --data" in card
    torch.manual_seed(0)
    VAEBackend(ConvVAE(in_channels=3, image_size=16, latent_dim=8, block_channels=(8, 16))).save_pretrained(
        tmp_path / "vae"
    )
    argv = ["--quiet", "evaluate", "--backend", str(tmp_path / "vae"), "--data", str(photo_patches)]
    argv += ["--reference", str(tmp_path / "ref"), "--json", str(tmp_path / "r.json")]
    assert main([*argv, "--prior-samples", "24", "--inter-paths", "4", "--ppl-pairs", "4"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert "attributes" not in report and 0 <= report["class_consistency"]["intra_class_midpoints_lerp"] <= 1


def test_edit_moves_images_along_a_direction_and_writes_them(shapes_vae, tmp_path, capsys):
    from latentmix.jobs.edit import edit

    test = load_dataset("shapes", split="test")
    red = [i for i in range(40) if test.factors(i)["colour"] == "red"][:3]
    folder = tmp_path / "mine"
    folder.mkdir()
    for i in red:
        Image.fromarray(test._pixels[i]).save(folder / f"img{i}.png")
    config = EditConfig(images=(str(folder),), factor="colour", source="red", target="blue", backend=str(shapes_vae))
    result = edit(replace(config, out=tmp_path / "out"), quiet=True)
    assert [f.name for f in result.files] == sorted(f"img{i}.png" for i in red)
    assert Image.open(result.sheet).size[0] > 3 * 32 and all(Image.open(f).size == (32, 32) for f in result.files)
    assert result.direction.factor == "colour" and result.direction.vector.shape == (12,)
    # by default each image gets its matched direction: the embedded reference reads its other factors
    assert len(result.matched) == len(red) and all(
        set(m) <= {"label", "size", "position", "background"} and m for m in result.matched
    )
    same = edit(replace(config, strength=0.0, out=tmp_path / "zero"), quiet=True)
    recon = [Image.open(f) for f in same.files]
    files = zip(recon, result.files, strict=True)
    assert any(not np.array_equal(np.asarray(a), np.asarray(Image.open(b))) for a, b in files)
    plain = edit(replace(config, neighbours=0, out=tmp_path / "global"), quiet=True)
    assert plain.matched == [{}] * len(red)
    changed = [
        not np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
        for a, b in zip(plain.files, result.files, strict=True)
    ]
    assert any(changed)  # the matched edit is another edit than the global one
    # bad input: one line, exit 2, nothing written
    base = ["--quiet", "edit", "--images", str(folder), "--backend", str(shapes_vae), "--factor"]
    assert main([*base, "mood", "--source", "red", "--target", "blue", "--out", str(tmp_path / "x")]) == 2
    assert "mood" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main([*base, "colour", "--source", "red", "--target", "teal", "--out", str(tmp_path / "y")]) == 2
    assert "teal" in capsys.readouterr().err and not (tmp_path / "y").exists()
    assert main([*base, "colour", "--source", "red", "--target", "blue", "--data", "digits", "--resize",
                 "--out", str(tmp_path / "z")]) == 2  # fmt: skip
    assert "no known factors" in capsys.readouterr().err
    argv = [*base, "colour", "--source", "red", "--target", "blue", "--reference", "digits-classifier"]
    assert main([*argv, "--out", str(tmp_path / "w")]) == 2
    assert "fitted on other classes" in capsys.readouterr().err and not (tmp_path / "w").exists()
    assert main([*base, "colour", "--source", "red", "--target", "blue", "--out", str(tmp_path / "v")]) == 0
    assert "matched direction (shared factors read by the reference: " in capsys.readouterr().out
    argv = [*base, "colour", "--source", "red", "--target", "blue", "--direction-samples", "300"]
    assert main([*argv, "--out", str(tmp_path / "u")]) == 0  # too few latents to match on: said, not hidden
    assert "share an image's other factors: global direction" in capsys.readouterr().out


def test_edit_takes_the_sampler_settings_and_a_partial_inversion(tmp_path, capsys):
    """``edit --inversion-strength`` (like grid and walk): train and edited images are inverted part of the way, and
    strength 0 gives the image's partial round trip."""
    from latentmix.backends import load_backend
    from latentmix.jobs.edit import edit

    test = load_dataset("shapes", split="test")
    red = [i for i in range(60) if test.factors(i)["colour"] == "red"][:2]
    folder = tmp_path / "mine"
    folder.mkdir()
    for i in red:
        Image.fromarray(test._pixels[i]).save(folder / f"img{i}.png")
    config = EditConfig(images=(str(folder),), factor="colour", source="red", target="blue", backend="shapes-ldm",
                        num_inference_steps=4, inversion_strength=0.5, direction_samples=60, neighbours=0,
                        strength=0.0)  # fmt: skip
    result = edit(replace(config, out=tmp_path / "out"), quiet=True)
    ldm = load_backend("shapes-ldm")
    kwargs = {"texts": [""] * len(red), "num_inference_steps": 4, "strength": 0.5}
    with torch.inference_mode():
        x = test.images([int(f.stem[3:]) for f in result.files])  # in the order the files were written
        round_trip = ldm.decode(ldm.encode(x, **kwargs), **kwargs)
    written = torch.stack([torch.from_numpy(np.asarray(Image.open(f))) for f in result.files])
    expected = ((round_trip.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
    assert (written.int() - expected.int()).abs().max() <= 1
    argv = ["--quiet", "edit", "--images", str(folder), "--factor", "colour", "--source", "red", "--target", "blue"]
    assert main([*argv, "--inversion-strength", "0.5", "--out", str(tmp_path / "v")]) == 2  # the default VAE
    assert "inversion_strength applies to diffusion backends" in capsys.readouterr().err
