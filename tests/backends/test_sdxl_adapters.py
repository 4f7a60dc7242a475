"""SDXL LoRA and textual-inversion files (a tiny SDXL pipeline built from config): what diffusers' own loaders make
of the same files is what the backend samples."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from latentmix import load_backend
from latentmix.backends import RunOptions, StableDiffusionXLBackend
from latentmix.cli import main

PROMPTS = ["a red circle", "a blue square"]
ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]
CLIP_ATTENTION = ["q_proj", "k_proj", "v_proj", "out_proj"]


@pytest.fixture
def xl_dir(tiny_sdxl_pipeline, tmp_path):
    tiny_sdxl_pipeline.save_pretrained(tmp_path / "xl")
    return tmp_path / "xl"


@pytest.fixture
def lora_dir(tiny_sdxl_pipeline, xl_dir, tmp_path):
    """A LoRA on the UNet and both text encoders (random, non-zero; rank 2, alpha 4), written by diffusers'
    ``StableDiffusionXLPipeline.save_lora_weights`` with its adapter metadata, as its DreamBooth-LoRA SDXL script
    writes it."""
    from diffusers import StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    pipe = tiny_sdxl_pipeline
    layers = {}
    for name, model, targets in (
        ("unet", pipe.unet, ATTENTION),
        ("text_encoder", pipe.text_encoder, CLIP_ATTENTION),
        ("text_encoder_2", pipe.text_encoder_2, CLIP_ATTENTION),
    ):
        config = LoraConfig(r=2, lora_alpha=4, target_modules=targets)
        inject_adapter_in_model(config, model)
        torch.manual_seed(0)
        with torch.no_grad():
            for key, p in model.named_parameters():
                if "lora_" in key:
                    p.normal_(0, 0.2)
        layers[f"{name}_lora_layers"] = convert_state_dict_to_diffusers(get_peft_model_state_dict(model))
        layers[f"{name}_lora_adapter_metadata"] = config.to_dict()  # alpha 4 at rank 2: each update scaled by 2
    StableDiffusionXLPipeline.save_lora_weights(tmp_path / "lora", **layers)
    return tmp_path / "lora"


def noise(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(0))


def diffusers_images(xl_dir, prompts=PROMPTS, lora=None, scale=1.0, embedding=None, token=None) -> torch.Tensor:
    """The images of diffusers' SDXL pipeline, loaded from ``xl_dir`` with its own LoRA / textual-inversion
    loaders (4 DDIM steps, guidance 3)."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(xl_dir)
    pipe.set_progress_bar_config(disable=True)
    if lora is not None:
        pipe.load_lora_weights(lora)
        pipe.fuse_lora(lora_scale=scale)
    if embedding is not None:
        state = load_file(str(embedding))
        pipe.load_textual_inversion(state["clip_l"], token=token, text_encoder=pipe.text_encoder,
                                    tokenizer=pipe.tokenizer)  # fmt: skip
        pipe.load_textual_inversion(state["clip_g"], token=token, text_encoder=pipe.text_encoder_2,
                                    tokenizer=pipe.tokenizer_2)  # fmt: skip
    out = pipe(prompt=prompts, latents=noise(len(prompts)), num_inference_steps=4, guidance_scale=3.0,
               height=16, width=16, output_type="pt")  # fmt: skip
    return out.images.clamp(0, 1)


def ours(backend, prompts=PROMPTS) -> torch.Tensor:
    with torch.inference_mode():
        return (backend.decode(noise(len(prompts)), texts=prompts, guidance_scale=3.0) + 1) / 2


def backend(xl_dir) -> StableDiffusionXLBackend:
    return StableDiffusionXLBackend.from_pretrained(xl_dir, num_inference_steps=4)


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_an_sdxl_lora_samples_as_diffusers_fuses_it(xl_dir, lora_dir, scale):
    base = ours(backend(xl_dir))
    adapted = backend(xl_dir)
    assert adapted.add_lora(lora_dir, scale) == ["unet", "text_encoder", "text_encoder_2"]
    images = ours(adapted)
    torch.testing.assert_close(images, diffusers_images(xl_dir, lora=lora_dir, scale=scale), atol=1e-4, rtol=0)
    assert (images - base).abs().max() > 1e-2  # the LoRA changed the samples


def kohya_names(state: dict) -> dict:
    """A diffusers-format LoRA's tensors under kohya / Automatic1111 key names (``lora_unet_…``, ``lora_te1_…``,
    ``lora_te2_…``; ``lora_down`` / ``lora_up``, one ``.alpha`` per module), as sd-scripts writes SDXL LoRAs."""
    prefixes = {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}
    pattern = re.compile(r"^(unet|text_encoder_2|text_encoder)\.(.+?)\.(?:lora\.|lora_linear_layer\.|lora_)"
                         r"(down|up|A|B)\.weight$")  # fmt: skip
    out = {}
    for key, value in state.items():
        part, module, which = pattern.match(key).groups()  # type: ignore[union-attr]
        name = prefixes[part] + module.replace(".", "_")
        out[f"{name}.{'lora_down' if which in ('down', 'A') else 'lora_up'}.weight"] = value
        out[f"{name}.alpha"] = torch.tensor(4.0)  # the fixture's lora_alpha
    return out


def test_scale_zero_is_the_base_model_and_kohya_names_read_the_same(xl_dir, lora_dir, tmp_path):
    zero = backend(xl_dir)
    zero.add_lora(lora_dir, 0.0)
    torch.testing.assert_close(ours(zero), ours(backend(xl_dir)), atol=0, rtol=0)
    kohya = kohya_names(load_file(str(lora_dir / "pytorch_lora_weights.safetensors")))
    assert any(k.startswith("lora_te2_") for k in kohya) and any(k.startswith("lora_te1_") for k in kohya)
    save_file(kohya, str(tmp_path / "kohya.safetensors"))
    from_kohya, from_diffusers = backend(xl_dir), backend(xl_dir)
    assert from_kohya.add_lora(tmp_path / "kohya.safetensors") == ["unet", "text_encoder", "text_encoder_2"]
    from_diffusers.add_lora(lora_dir)
    torch.testing.assert_close(ours(from_kohya), ours(from_diffusers), atol=1e-5, rtol=0)


def test_loras_for_another_model_are_refused_before_anything_changes(xl_dir, lora_dir, tiny_sd_pipeline, tmp_path):
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    tiny_sd_pipeline.save_pretrained(tmp_path / "sd")
    # an SD 1.x LoRA: its UNet's cross-attention reads 32 features, SDXL's tiny UNet 56
    inject_adapter_in_model(LoraConfig(r=2, target_modules=ATTENTION), tiny_sd_pipeline.unet)
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(tiny_sd_pipeline.unet))
    StableDiffusionPipeline.save_lora_weights(tmp_path / "sd-lora", unet_lora_layers=state)
    xl = backend(xl_dir)
    before = {k: v.clone() for k, v in xl.unet.state_dict().items()}
    with pytest.raises(ValueError, match="lora: .*has size 32, the UNet's .* has 56 .*a LoRA for another model"):
        xl.add_lora(tmp_path / "sd-lora")
    assert all(torch.equal(v, before[k]) for k, v in xl.unet.state_dict().items())
    # an SDXL LoRA into a Stable Diffusion backend: its second text encoder's weights have nowhere to go
    with pytest.raises(ValueError, match="adapts text_encoder_2, which this backend does not have"):
        load_backend(str(tmp_path / "sd"), run=RunOptions(lora=(str(lora_dir),)))


def test_an_sdxl_embedding_adds_its_token_to_both_encoders_as_diffusers_does(xl_dir, tmp_path):
    torch.manual_seed(0)
    first, second = torch.randn(2, 32), torch.randn(2, 24)
    save_file({"clip_l": first, "clip_g": second}, str(tmp_path / "shiny.safetensors"))
    xl = backend(xl_dir)
    plain = ours(xl, ["a shiny circle"])
    assert xl.add_textual_inversion(f"<shiny>={tmp_path / 'shiny.safetensors'}") == ["<shiny>", "<shiny>_1"]
    for encoder, vectors in ((xl.text_encoder, first), (xl.text_encoder_2, second)):
        ids = encoder.tokenizer.convert_tokens_to_ids(["<shiny>", "<shiny>_1"])
        assert torch.equal(encoder.model.get_input_embeddings().weight[ids], vectors)
    prompts = ["a <shiny> circle", "a blue square"]
    images = ours(xl, prompts)
    reference = diffusers_images(xl_dir, prompts, embedding=tmp_path / "shiny.safetensors", token="<shiny>")
    torch.testing.assert_close(images, reference, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours(xl, ["a shiny circle"]), plain, atol=0, rtol=0)  # other words unchanged
    # without TOKEN=, the file's name is the token (Automatic1111's rule), also from a directory of files
    (tmp_path / "embeds").mkdir()
    save_file({"clip_l": first[:1], "clip_g": second[:1]}, str(tmp_path / "embeds" / "glossy.safetensors"))
    named = load_backend(str(xl_dir), run=RunOptions(textual_inversion=(str(tmp_path / "embeds"),)))
    assert all("glossy" in e.tokenizer.get_vocab() for e in (named.text_encoder, named.text_encoder_2))


@pytest.mark.parametrize(
    ("tensors", "spec", "message"),
    [
        ({"<x>": torch.randn(32)}, "{f}", "holds <x>; an SDXL embedding file holds clip_l and clip_g"),
        ({"clip_l": torch.randn(16), "clip_g": torch.randn(24)}, "{f}", "16, the first text encoder's .* 32 wide"),
        ({"clip_l": torch.randn(32), "clip_g": torch.randn(32)}, "{f}", "32, the second text encoder's .* 24 wide"),
        ({"clip_l": torch.randn(2, 32), "clip_g": torch.randn(24)}, "{f}", "clip_l has 2 vectors, clip_g 1"),
        ({"clip_l": torch.randn(32), "clip_g": torch.randn(24)}, "a={f}", "token 'a' already exists in the tokenizer"),
    ],
)
def test_bad_sdxl_embeddings_are_refused_and_change_neither_encoder(xl_dir, tmp_path, tensors, spec, message):
    path = tmp_path / "emb.safetensors"
    save_file(tensors, str(path))
    xl = backend(xl_dir)
    sizes = [len(e.tokenizer) for e in (xl.text_encoder, xl.text_encoder_2)]
    with pytest.raises(ValueError, match=message):
        xl.add_textual_inversion(spec.format(f=path))
    assert [len(e.tokenizer) for e in (xl.text_encoder, xl.text_encoder_2)] == sizes


def test_an_sdxl_embedding_on_a_stable_diffusion_backend_is_refused(tiny_sd_pipeline, tmp_path):
    tiny_sd_pipeline.save_pretrained(tmp_path / "sd")
    save_file({"clip_l": torch.randn(32), "clip_g": torch.randn(24)}, str(tmp_path / "xl.safetensors"))
    with pytest.raises(ValueError, match="is an SDXL embedding .*this backend has one text encoder"):
        load_backend(str(tmp_path / "sd"), run=RunOptions(textual_inversion=(f"<x>={tmp_path / 'xl.safetensors'}",)))


def test_synthesize_with_an_sdxl_lora_and_embedding_from_the_command_line(xl_dir, lora_dir, photo_patches, tmp_path,
                                                                          capsys):  # fmt: skip
    save_file({"clip_l": torch.randn(32), "clip_g": torch.randn(24)}, str(tmp_path / "style.safetensors"))
    args = ["--quiet", "synthesize", "--backend", str(xl_dir), "--data", str(photo_patches), "-n", "2",
            "--num-inference-steps", "2", "--lora", str(lora_dir), "--lora-scale", "0.8",
            "--textual-inversion", f"<style>={tmp_path / 'style.safetensors'}",
            "--prompt-template", "a <style> photo of a {class}", "--strategy", "augment", "--noise", "random",
            "--strength", "0.5", "--out", str(tmp_path / "set")]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (tmp_path / "set" / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(row["prompt"].startswith("a <style> photo of a ") for row in rows)
