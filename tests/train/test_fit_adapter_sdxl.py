"""`fit lora` / `fit textual-inversion` on SDXL (a tiny SDXL pipeline built from config): tokens learned in both text
encoders, LoRA on the UNet and both encoders, saved in the formats diffusers and the community tools read."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from latentmix import load_backend
from latentmix.backends import RunOptions
from latentmix.cli import main
from latentmix.configs import LoRAFitConfig, TextualInversionFitConfig
from latentmix.train.fit_adapter import fit_adapter


@pytest.fixture
def xl_dir(tiny_sdxl_pipeline, tmp_path):
    tiny_sdxl_pipeline.save_pretrained(tmp_path / "xl")
    return tmp_path / "xl"


def encoders(backend):
    return backend.text_encoder, backend.text_encoder_2


def test_fit_lora_on_sdxl_adapts_the_unet_and_both_encoders_and_diffusers_reads_it(xl_dir, photos, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    config = LoRAFitConfig(backend=str(xl_dir), data=str(photos), steps=6, batch_size=6, lr=1e-2,
                           text_encoder_lora=True)  # fmt: skip
    result = fit_adapter(config, tmp_path / "lora", quiet=True)
    out = tmp_path / "lora"
    keys = load_file(str(out / "pytorch_lora_weights.safetensors")).keys()
    assert {k.split(".", 1)[0] for k in keys} == {"unet", "text_encoder", "text_encoder_2"}
    assert result.metrics["learned_tokens"] == 2 and result.metrics["text_encoder_lora_parameters"] > 0
    # diffusers' SDXL loader fuses the same weights as --lora
    pipe = StableDiffusionXLPipeline.from_pretrained(xl_dir)
    pipe.load_lora_weights(out)
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    ours = load_backend(str(xl_dir), run=RunOptions(lora=(str(out),)))
    for theirs, mine in ((pipe.unet, ours.unet), (pipe.text_encoder, ours.text_encoder.model),
                         (pipe.text_encoder_2, ours.text_encoder_2.model)):  # fmt: skip
        reference = theirs.state_dict()
        rows = {k: v for k, v in mine.state_dict().items() if "token_embedding" not in k}  # ours has the tokens too
        assert all(torch.allclose(v, reference[k], atol=1e-6) for k, v in rows.items())
    # one SDXL embedding file per class: both encoders' vectors, the token in its metadata; loaded into both
    file = out / "learned_embeds" / "cat.safetensors"
    saved = load_file(str(file))
    assert {k: tuple(v.shape) for k, v in saved.items()} == {"clip_l": (1, 32), "clip_g": (1, 24)}
    with safe_open(str(file), framework="pt") as f:
        assert f.metadata()["token"] == "<cat>"
    for encoder, vectors in zip(encoders(result.backend), (saved["clip_l"], saved["clip_g"]), strict=True):
        row = encoder.tokenizer.convert_tokens_to_ids("<cat>")
        assert torch.equal(encoder.model.get_input_embeddings().weight[row], vectors[0])
    assert json.loads((out / "prompts.json").read_text()) == {"cat": "a photo of a <cat>",
                                                               "coffee": "a photo of a <coffee>"}  # fmt: skip
    base = load_backend(str(xl_dir))
    with torch.inference_mode():
        assert not torch.allclose(result.backend.encode_text(["a photo"]), base.encode_text(["a photo"]))


def test_fit_textual_inversion_on_sdxl_learns_only_the_tokens_deterministically(xl_dir, photos, tmp_path):
    def fit(out):
        config = TextualInversionFitConfig(backend=str(xl_dir), data=str(photos), steps=6, batch_size=6,
                                           token_lr=0.05)  # fmt: skip
        return fit_adapter(config, tmp_path / out, quiet=True)

    result, again = fit("a"), fit("b")
    assert not (tmp_path / "a" / "pytorch_lora_weights.safetensors").exists()
    a, b = (load_file(str(tmp_path / d / "learned_embeds" / "coffee.safetensors")) for d in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # deterministic by seed
    base = load_backend(str(xl_dir))
    for adapted, old, vectors in zip(encoders(result.backend), encoders(base), (a["clip_l"], a["clip_g"]),
                                     strict=True):  # fmt: skip
        weight, before = adapted.model.get_input_embeddings().weight, old.model.get_input_embeddings().weight
        assert torch.equal(weight[: len(before)], before)  # no existing word moved
        pieces = old.tokenizer("coffee", add_special_tokens=False)["input_ids"]
        assert not torch.allclose(vectors[0], before[torch.tensor(pieces)].mean(0))  # the token learned
    assert all(torch.equal(v, base.unet.state_dict()[k]) for k, v in result.backend.unet.state_dict().items())
    assert again.metrics["unet_lora_parameters"] == 0


def test_fit_lora_on_sdxl_then_synthesize_from_the_command_line(xl_dir, photos, tmp_path, capsys):
    fit = ["--quiet", "fit", "lora", "--backend", str(xl_dir), "--data", str(photos), "--steps", "3",
           "--batch-size", "6", "--out", str(tmp_path / "lora")]  # fmt: skip
    assert main(fit) == 0, capsys.readouterr().err
    syn = ["--quiet", "synthesize", "--recipe", "diff-mix", "--backend", str(xl_dir), "--data", str(photos),
           "--lora", str(tmp_path / "lora"), "--prompts", str(tmp_path / "lora" / "prompts.json"),
           "--num-inference-steps", "2", "--per-image", "1", "--out", str(tmp_path / "set")]  # fmt: skip
    assert main(syn) == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (tmp_path / "set" / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["prompt"] for r in rows} <= {"a photo of a <cat>", "a photo of a <coffee>"}


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_training_conditions_the_unet_as_sampling_does(kind, tiny_sd_pipeline, tiny_sdxl_pipeline, photos, tmp_path):
    """The conditionings a training step feeds the UNet are the backend's own ``encode_text`` of the prompts (SDXL:
    both encoders' penultimate states and the pooled embedding, no padding mask), and so is its UNet call."""
    from latentmix.train.common import split_batch_accelerator
    from latentmix.train.fit_adapter import AdapterRun, adapter_dataset

    (tiny_sdxl_pipeline if kind == "sdxl" else tiny_sd_pipeline).save_pretrained(tmp_path / kind)
    config = LoRAFitConfig(backend=str(tmp_path / kind), data=str(photos), batch_size=6, text_encoder_lora=True)
    backend = load_backend(config.backend)
    run = AdapterRun(config, backend, adapter_dataset(config, backend), split_batch_accelerator(6, 0, cpu=True), True)
    with torch.no_grad():
        hidden = run._hidden()
        torch.testing.assert_close(hidden, backend.encode_text(run.prompt_rows), atol=1e-5, rtol=0)
        x, t = torch.randn(2, *backend.latent_shape), torch.tensor([10, 500])
        expected = backend._unet_output(x, t, hidden)
        torch.testing.assert_close(run._noise_prediction(x, t, hidden), expected, atol=1e-5, rtol=0)
