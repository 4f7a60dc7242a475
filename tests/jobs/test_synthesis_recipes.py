"""synthesize's recipes of the literature: strength, noise kinds, augment / translate, prompts, presets — on the
embedded latent-diffusion model (a real diffusers UNet and DDIM), at a few sampler steps."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel

from latentmix.cli import main
from latentmix.configs import SynthesisConfig
from latentmix.jobs.synthesize import synthesize

FEW = dict(backend="digits-ldm", data="digits", labels_per_class=1, num_inference_steps=10, guidance_scale=1.0)


VAE = dict(backend="digits-vae", num_inference_steps=None, guidance_scale=None)


def run(**changes):
    return synthesize(SynthesisConfig(**{**FEW, "shard_size": 8, **changes}), quiet=True)


@pytest.fixture
def unet_items():
    """Counts the items every diffusers UNet call evaluates (a global forward pre-hook)."""
    from torch.nn.modules.module import register_module_forward_pre_hook

    counted = {"items": 0}

    def hook(module, args):
        if isinstance(module, UNet2DConditionModel):
            counted["items"] += int(args[0].shape[0])

    handle = register_module_forward_pre_hook(hook)
    yield counted
    handle.remove()


@pytest.mark.parametrize(
    ("noise", "strength", "encode_steps", "decode_steps"),
    [("random", 0.5, 0, 5), ("random", 1.0, 0, 10), ("inversion", 0.5, 5, 5), ("inversion", 0.3, 3, 3)],
)
def test_each_sample_runs_int_steps_times_strength_unet_steps(unet_items, noise, strength, encode_steps, decode_steps):
    result = run(strategy="intra-class", n=12, noise=noise, strength=(strength,), labels_per_class=2)
    sources = 20  # two labelled examples of each digit
    assert result.num_samples == 12
    assert unet_items["items"] == sources * encode_steps + 12 * decode_steps


def test_augment_makes_distinct_variants_of_every_source_identical_across_reruns():
    first = run(strategy="augment", per_image=3, noise="random", strength=(0.7,)).samples
    assert first is not None and len(first.ids) == 30
    assert first.source_a[:10] == first.source_a[10:20] == first.source_a[20:]  # variant v of source s: 10·v + s
    assert all(b is None for b in first.source_b) and bool((first.lam == 1).all())
    images = first.images.reshape(3, 10, -1).float()
    for s in range(10):
        assert all((images[a, s] - images[b, s]).abs().max() > 8 for a, b in ((0, 1), (0, 2), (1, 2)))
    again = run(strategy="augment", per_image=3, noise="random", strength=(0.7,), shard_size=5).samples
    assert again is not None
    torch.testing.assert_close(again.latents, first.latents)  # each sample's noise is its own: any shard size
    assert (again.images.int() - first.images.int()).abs().max() <= 1
    rerun = run(strategy="augment", per_image=3, noise="random", strength=(0.7,)).samples
    assert rerun is not None and torch.equal(rerun.images, first.images)


def test_translate_rows_carry_the_target_prompt_and_the_diff_mix_label(tmp_path):
    out = tmp_path / "mix"
    template = "a handwritten digit {class}"
    result = run(strategy="translate", n=16, noise="random", strength=(0.5, 0.9), gamma=0.5, out=str(out),
                 prompt_template=template)  # fmt: skip
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert result.num_samples == 16 and {r["strength"] for r in rows} == {0.5, 0.9}
    for r in rows:
        assert r["label_a"] != r["label_b"] and r["noise"] == "random"
        assert r["text"] == r["prompt"] == template.format(**{"class": str(r["label_b"])})
        weight = r["strength"] ** 0.5
        expected = np.zeros(10)
        expected[r["label_a"]], expected[r["label_b"]] = 1 - weight, weight
        np.testing.assert_allclose(r["soft_label"], expected, atol=1e-5)
        assert r["lambda"] == pytest.approx(1 - r["strength"])
        assert r["label"] == r["label_b"]  # s^γ > 1/2: the target class dominates


def test_prompt_templates_and_per_class_prompt_files(tmp_path):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"3": ["a thin three", "a bold three"], "7": "a seven, {text}"}))
    result = run(strategy="augment", noise="random", strength=(0.5,), prompts=str(prompts),
                 prompt_template="digit {class}", out=str(tmp_path / "set"))  # fmt: skip
    rows = [json.loads(line) for line in (tmp_path / "set" / "metadata.jsonl").read_text().splitlines()]
    assert result.num_samples == 10
    by_label = {r["label"]: r["prompt"] for r in rows}
    assert by_label[3] in ("a thin three", "a bold three") and by_label[7].startswith("a seven, ")
    assert by_label[0] == "digit 0"
    with pytest.raises(ValueError, match=r"prompt_template: 'a \{color\} digit' names \{color\}; the data's fields"):
        run(strategy="augment", noise="random", prompt_template="a {color} digit")
    prompts.write_text(json.dumps({"cat": "a cat"}))
    with pytest.raises(ValueError, match="prompts: class 'cat' is not a class of the data"):
        run(strategy="augment", noise="random", prompts=str(prompts))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(**VAE, noise="random"), "noise: 'random' .* needs a diffusion backend"),
        (dict(**VAE, strategy="translate"), "translate .* needs a text-conditioned backend"),
        (dict(**VAE, prompt_template="{class}"), "prompt_template: backend 'vae' is not text-cond"),
        (dict(**VAE, strength=(0.5,)), "strength applies to diffusion backends"),
        (dict(strength=(0.05,)), "strength 0.05 keeps no step of 10"),
        (dict(strategy="augment", per_image=3), "augment with noise inversion makes the same image every time"),
        (
            dict(strategy="augment", n=25),
            r"n: augment from the sources' own encodings \(noise inversion at one strength, .*\) makes one image per "
            r"source \(10 here\); n=25 would repeat them",
        ),
        (dict(**VAE, strategy="augment", n=11), r"makes one image per source \(10 here\); n=11 would repeat"),
        (dict(strategy="augment", lam=0.5), "lam applies to the blend strategies"),
        (dict(recipe="diff-mix", strategy="knn"), "recipe diff-mix is strategy 'translate'; drop strategy 'knn'"),
        (dict(per_image=2, n=5), "n: per_image sets the number of samples; drop n"),
    ],
)
def test_settings_a_recipe_or_backend_cannot_take_are_refused_before_any_work(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        run(**{"out": str(tmp_path / "s"), **changes})
    assert not (tmp_path / "s").exists()


def test_recipes_set_their_method_and_paper_defaults_and_let_the_user_change_those():
    mix = SynthesisConfig(recipe="diff-mix")
    assert (mix.strategy, mix.noise, mix.strength, mix.gamma, mix.per_image) == ("translate", "random", (0.8,), 0.5, 5)
    tuned = SynthesisConfig(recipe="da-fusion", strength=(0.3,), per_image=2)
    assert (tuned.strategy, tuned.strength, tuned.per_image, tuned.prompt_template) == (
        "augment", (0.3,), 2, "a photo of a {class}"
    )  # fmt: skip
    assert SynthesisConfig(recipe="diff-ii").strategy == "intra-class"


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def test_cli_recipe_end_to_end_and_two_processes_give_the_same_set(tmp_path, torchrun):
    argv = ["synthesize", "--recipe", "da-fusion", "--backend", "digits-ldm", "--labels-per-class", "1",
            "--per-image", "2", "--num-inference-steps", "5", "--guidance-scale", "1",
            "--shard-size", "4"]  # fmt: skip
    assert main(["--quiet", *argv, "--out", str(tmp_path / "one")]) == 0
    manifest = json.loads((tmp_path / "one" / "manifest.json").read_text())
    assert manifest["num_samples"] == 20 and manifest["settings"]["recipe"] == "da-fusion"
    rows = [json.loads(line) for line in (tmp_path / "one" / "metadata.jsonl").read_text().splitlines()]
    assert {r["strength"] for r in rows} <= {0.5, 0.7, 0.9} and len({r["strength"] for r in rows}) > 1
    assert all(r["prompt"] == f"a photo of a {r['label']}" for r in rows)
    proc = torchrun("-m", "latentmix", "--quiet", *argv, "--out", str(tmp_path / "two"), cwd=tempfile.mkdtemp(),
                    threads=torch.get_num_threads())  # fmt: skip
    assert proc.stdout.count("wrote 20 samples") == 1
    assert digest(tmp_path / "two") == digest(tmp_path / "one")


def test_compare_runs_a_published_recipe_from_the_seeds_labelled_examples(tmp_path):
    from latentmix.configs import TrainConfig
    from latentmix.jobs.compare import recipe_config

    config = recipe_config(TrainConfig(data="digits", labels_per_class=1), "diff-mix", 3, tmp_path)
    assert config.synthetic is not None
    manifest = json.loads((Path(config.synthetic) / "manifest.json").read_text())
    settings = manifest["settings"]
    assert (settings["recipe"], settings["strategy"], settings["subset_seed"]) == ("diff-mix", "translate", 3)
    assert manifest["num_samples"] == 5 * 10  # per_image 5 of the 10 labelled examples
