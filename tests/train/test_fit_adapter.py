"""`fit lora` / `fit textual-inversion`: adapting a diffusion backend to a few labelled photos (a tiny Stable
Diffusion pipeline built from config; the embedded digits-ldm for the command line), and loading the result with
diffusers' own loaders and with `synthesize --lora`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from latentmix import load_backend
from latentmix.backends import RunOptions
from latentmix.cli import main
from latentmix.configs import LoRAFitConfig, TextualInversionFitConfig
from latentmix.train.fit_adapter import fit_adapter


@pytest.fixture
def sd_dir(tiny_sd_pipeline, tmp_path):
    tiny_sd_pipeline.save_pretrained(tmp_path / "sd")
    return tmp_path / "sd"


def _unet_out(unet, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 8, 8, generator=gen)
    cond = torch.randn(2, 5, 32, generator=gen)
    with torch.inference_mode():
        return unet(x, torch.tensor([10, 500]), encoder_hidden_states=cond).sample


def test_a_lora_written_by_fit_lora_loads_with_diffusers_and_scale_zero_is_the_base_model(sd_dir, photos, tmp_path):
    from diffusers import StableDiffusionPipeline

    config = LoRAFitConfig(backend=str(sd_dir), data=str(photos), steps=12, batch_size=6, lr=1e-2)
    result = fit_adapter(config, tmp_path / "ad", quiet=True)
    out = tmp_path / "ad"
    assert json.loads((out / "prompts.json").read_text()) == {
        "cat": "a photo of a <cat>",
        "coffee": "a photo of a <coffee>",
    }
    assert all(k.startswith("unet.") for k in load_file(str(out / "pytorch_lora_weights.safetensors")))
    # trainable: the adapter only, a few per cent of the UNet
    assert 0 < result.metrics["unet_lora_share_percent"] <= 5.0

    pipe = StableDiffusionPipeline.from_pretrained(str(sd_dir))
    base = _unet_out(pipe.unet)
    pipe.load_lora_weights(str(out))  # diffusers' own loader reads the directory
    adapted = _unet_out(pipe.unet)
    assert not torch.allclose(adapted, base, atol=1e-6)
    assert torch.allclose(_unet_out_scaled(pipe.unet, 0.0), base, atol=1e-6)

    ours = load_backend(str(sd_dir), run=RunOptions(lora=(str(out),)))
    assert torch.allclose(_unet_out(ours.unet), adapted, atol=1e-5)  # fused = diffusers' unfused adapter
    assert torch.allclose(_unet_out(result.backend.unet), adapted, atol=1e-5)
    zero = load_backend(str(sd_dir), run=RunOptions(lora=(str(out),), lora_scale=0.0))
    assert torch.equal(_unet_out(zero.unet), base)
    # the learned tokens came with the LoRA directory
    tokenizer = ours.text_encoder.tokenizer
    assert tokenizer.convert_tokens_to_ids(["<cat>", "<coffee>"]) == [len(tokenizer) - 2, len(tokenizer) - 1]


def test_a_text_encoder_lora_changes_the_conditionings_and_scale_zero_does_not(sd_dir, photos, tmp_path):
    config = LoRAFitConfig(backend=str(sd_dir), data=str(photos), steps=8, batch_size=6, lr=1e-2,
                           text_encoder_lora=True, tokens=False, prompt_template="a photo of a {class}")  # fmt: skip
    result = fit_adapter(config, tmp_path / "te", quiet=True)
    keys = load_file(str(tmp_path / "te" / "pytorch_lora_weights.safetensors")).keys()
    assert any(k.startswith("text_encoder.") and ".q_proj.lora" in k for k in keys)
    assert result.metrics["text_encoder_lora_parameters"] > 0 and result.metrics["learned_tokens"] == 0
    plain = load_backend(str(sd_dir))
    zero = load_backend(str(sd_dir), run=RunOptions(lora=(str(tmp_path / "te"),), lora_scale=0.0))
    with torch.inference_mode():
        assert not torch.allclose(result.backend.encode_text(["a photo"]), plain.encode_text(["a photo"]))
        assert torch.equal(zero.encode_text(["a photo"]), plain.encode_text(["a photo"]))
    assert len(zero.text_encoder.tokenizer) == len(plain.text_encoder.tokenizer)  # --no-tokens adds none
    # diffusers' own loader fuses both parts of the file into the same weights as --lora
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(sd_dir)
    pipe.load_lora_weights(tmp_path / "te")
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    ours = load_backend(str(sd_dir), run=RunOptions(lora=(str(tmp_path / "te"),)))
    for theirs, mine in ((pipe.text_encoder, ours.text_encoder.model), (pipe.unet, ours.unet)):
        reference = theirs.state_dict()
        assert all(torch.allclose(v, reference[k], atol=1e-6) for k, v in mine.state_dict().items())


def _unet_out_scaled(unet, scale):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=gen)
    cond = torch.randn(2, 5, 32, generator=gen)
    with torch.inference_mode():
        return unet(
            x, torch.tensor([10, 500]), encoder_hidden_states=cond, cross_attention_kwargs={"scale": scale}
        ).sample


def test_textual_inversion_learns_only_the_class_tokens_and_diffusers_reads_them(sd_dir, photos, tmp_path):
    from diffusers import StableDiffusionPipeline

    config = TextualInversionFitConfig(backend=str(sd_dir), data=str(photos), steps=10, batch_size=6, token_lr=0.05)
    result = fit_adapter(config, tmp_path / "ti", quiet=True)
    out = tmp_path / "ti"
    assert not (out / "pytorch_lora_weights.safetensors").exists()
    files = sorted(p.name for p in (out / "learned_embeds").iterdir())
    assert files == ["cat.safetensors", "coffee.safetensors"]
    saved = load_file(str(out / "learned_embeds" / "cat.safetensors"))["<cat>"]

    base = load_backend(str(sd_dir))
    adapted = result.backend
    weight = adapted.text_encoder.model.get_input_embeddings().weight
    old = base.text_encoder.model.get_input_embeddings().weight
    assert torch.equal(weight[: len(old)], old)  # no existing word moved
    cat = adapted.text_encoder.tokenizer.convert_tokens_to_ids("<cat>")
    assert torch.equal(weight[cat], saved[0])
    assert torch.equal(_unet_out(adapted.unet), _unet_out(base.unet))  # textual inversion leaves the UNet alone
    # the token moved from its initial value (the mean of the class name's pieces) during training
    pieces = base.text_encoder.tokenizer("cat", add_special_tokens=False)["input_ids"]
    assert not torch.allclose(saved[0], old[torch.tensor(pieces)].mean(0))

    pipe = StableDiffusionPipeline.from_pretrained(str(sd_dir))
    pipe.load_textual_inversion(str(out / "learned_embeds" / "cat.safetensors"))
    row = pipe.tokenizer.convert_tokens_to_ids("<cat>")
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[row], saved[0])


def test_fit_lora_is_deterministic_by_seed(sd_dir, photos, tmp_path):
    def fit(seed, out):
        config = LoRAFitConfig(backend=str(sd_dir), data=str(photos), steps=4, batch_size=6, lr=1e-2, seed=seed)
        fit_adapter(config, tmp_path / out, quiet=True)
        return {**load_file(str(tmp_path / out / "pytorch_lora_weights.safetensors")),
                **load_file(str(tmp_path / out / "learned_embeds" / "cat.safetensors"))}  # fmt: skip

    a, b, c = fit(0, "a"), fit(0, "b"), fit(1, "c")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_fit_lora_resumes_exactly_after_an_interruption(sd_dir, photos, tmp_path, monkeypatch, crash_on_call):
    """Killed after its checkpoint at step 2 (mid-epoch: 3 batches of 2 per epoch), the same command ends with the
    adapter an uninterrupted run saves; other settings are refused, another checkpoint cadence is not."""
    from latentmix.train import fit_adapter as fa

    def config(**changes):
        settings = {"steps": 6, "batch_size": 2, "lr": 1e-2, "text_encoder_lora": True, "checkpoint_every": 2}
        return LoRAFitConfig(backend=str(sd_dir), data=str(photos), **{**settings, **changes})

    def saved(out):
        return {**load_file(str(tmp_path / out / "pytorch_lora_weights.safetensors")),
                **load_file(str(tmp_path / out / "learned_embeds" / "cat.safetensors"))}  # fmt: skip

    fit_adapter(config(), tmp_path / "whole", quiet=True)
    real = crash_on_call(fa, "check_finite_loss", 4)  # the 4th step: after the checkpoint at step 2
    with pytest.raises(KeyboardInterrupt):
        fit_adapter(config(), tmp_path / "cut", quiet=True)
    assert not (tmp_path / "cut").exists() and (tmp_path / "cut.train" / "state.safetensors").is_file()
    monkeypatch.setattr(fa, "check_finite_loss", real)
    with pytest.raises(ValueError, match="holds a run with other settings \\(lr: 0.01 there vs 0.02 now"):
        fit_adapter(config(lr=2e-2), tmp_path / "cut", quiet=True)
    result = fit_adapter(config(checkpoint_every=3), tmp_path / "cut", quiet=True)
    assert result.metrics["resumed_from_step"] == 2
    whole, cut = saved("whole"), saved("cut")
    assert whole.keys() == cut.keys() and all(torch.equal(whole[k], cut[k]) for k in whole)


def test_fit_lora_cli_then_synthesize_with_the_lora_and_its_prompts(tmp_path, capsys):
    argv = ["--quiet", "fit", "lora", "--data", "digits", "--labels-per-class", "2", "--steps", "6", "--batch-size",
            "10", "--lr", "0.01"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    card = (tmp_path / "a" / "MODEL_CARD.md").read_text()
    assert "fit lora --data digits --labels-per-class 2" in card and "unet_lora_share_percent" in card
    assert "saved " in capsys.readouterr().out

    syn = ["--quiet", "synthesize", "--backend", "digits-ldm", "--strategy", "augment", "--labels-per-class", "1",
           "--strength", "0.6", "--noise", "random", "--num-inference-steps", "6", "--prompts",
           str(tmp_path / "a" / "prompts.json")]  # fmt: skip
    assert main([*syn, "--lora", str(tmp_path / "a"), "--out", str(tmp_path / "s1")]) == 0
    assert main([*syn, "--lora", str(tmp_path / "a"), "--lora-scale", "0", "--out", str(tmp_path / "s0")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "s1" / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and {r["prompt"] for r in rows} == {f"a photo of a <{c}>" for c in range(10)}
    one = np.asarray(Image.open(tmp_path / "s1" / rows[0]["file_name"]))
    zero = np.asarray(Image.open(tmp_path / "s0" / rows[0]["file_name"]))
    assert not np.array_equal(one, zero)  # the LoRA changes what is drawn


def test_bad_adapters_are_refused_with_one_line(sd_dir, tmp_path, capsys):
    config = LoRAFitConfig(data="digits", labels_per_class=1, steps=2, batch_size=10)
    fit_adapter(config, tmp_path / "digits-lora", quiet=True)
    with pytest.raises(ValueError, match=r"lora: .*(has size|has no linear).*another model"):
        load_backend(str(sd_dir), run=RunOptions(lora=(str(tmp_path / "digits-lora"),)))
    (tmp_path / "pickled").mkdir()
    torch.save({"unet.x": torch.zeros(1)}, tmp_path / "pickled" / "pytorch_lora_weights.bin")
    with pytest.raises(ValueError, match="pytorch_lora_weights.bin are pickles and are not read"):
        load_backend(str(sd_dir), run=RunOptions(lora=(str(tmp_path / "pickled"),)))
    with pytest.raises(ValueError, match="lora_scale applies to the LoRA weights of --lora; none were given"):
        RunOptions(lora_scale=0.5)
    with pytest.raises(ValueError, match="lora: backend 'vae'"):
        load_backend("digits-vae", run=RunOptions(lora=(str(tmp_path / "digits-lora"),)))
    with pytest.raises(ValueError, match="backend: 'digits-vae' is a vae backend"):
        fit_adapter(LoRAFitConfig(backend="digits-vae", steps=1), tmp_path / "x", quiet=True)
    with pytest.raises(ValueError, match=r"prompt_template must name \{token\}"):
        LoRAFitConfig(prompt_template="a photo of a {class}").validate()
    assert main(["fit", "textual-inversion", "--prompt-template", "a {class}", "--out", str(tmp_path / "y")]) == 2
    assert "prompt_template must name {token}" in capsys.readouterr().err


def test_fit_lora_runs_in_two_real_processes_with_torchrun(tmp_path, torchrun):
    argv = ["--data", "digits", "--labels-per-class", "2", "--steps", "3", "--batch-size", "10", "--text-encoder-lora"]
    proc = torchrun(
        "-m", "latentmix", "--quiet", "fit", "lora", "--data", "digits", *argv, "--out", str(tmp_path / "ddp")
    )
    assert proc.stdout.count("saved") == 1 and "processes=2" in proc.stdout
    backend = load_backend("digits-ldm", run=RunOptions(lora=(str(tmp_path / "ddp"),)))
    assert backend.text_encoder.tokenizer.convert_tokens_to_ids("<7>") == len(backend.text_encoder.tokenizer) - 3


def test_compare_runs_a_recipe_on_the_backend_adapted_to_each_seeds_labelled_images(tmp_path):
    from latentmix.configs import TrainConfig
    from latentmix.jobs.compare import run_compare

    base = TrainConfig(data="digits", labels_per_class=1, steps=4, eval_every=2)
    results = run_compare(train=base, recipes=["erm", "da-fusion+lora"], seeds=[0], synthetic_n=10, adapt_steps=3,
                          workdir=str(tmp_path), quiet=True)  # fmt: skip
    adapter = tmp_path / "lora-digits-ldm-k1-seed0-steps3"
    assert (adapter / "pytorch_lora_weights.safetensors").is_file()
    rows = [json.loads(line) for line in next(tmp_path.glob("da-fusion-lora-k1-seed0")).joinpath(
        "metadata.jsonl").read_text().splitlines()]  # fmt: skip
    assert {r["prompt"] for r in rows} == {f"a photo of a <{c}>" for c in range(10)}  # prompted with the tokens
    assert "da-fusion+lora" in results.recipes
