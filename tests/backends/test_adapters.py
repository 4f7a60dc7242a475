"""Textual-inversion files added to a diffusion backend's text encoder (tiny SD pipeline built from config; the
embedded digits-ldm for the job end to end)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from latentmix import load_backend
from latentmix.backends import RunOptions
from latentmix.cli import main


@pytest.fixture
def sd_dir(tiny_sd_pipeline, tmp_path):
    tiny_sd_pipeline.save_pretrained(tmp_path / "sd")
    return tmp_path / "sd"


def test_a_learned_token_is_added_and_its_embedding_row_is_the_files_vector(sd_dir, tmp_path):
    torch.manual_seed(0)
    vector = torch.randn(32)
    save_file({"<my-shape>": vector}, str(tmp_path / "learned_embeds.safetensors"))
    base = load_backend(str(sd_dir))
    backend = load_backend(
        str(sd_dir), run=RunOptions(textual_inversion=(str(tmp_path / "learned_embeds.safetensors"),))
    )
    tokenizer, model = backend.text_encoder.tokenizer, backend.text_encoder.model
    token_id = tokenizer.convert_tokens_to_ids("<my-shape>")
    assert token_id == len(tokenizer) - 1
    assert torch.equal(model.get_input_embeddings().weight[token_id], vector)
    assert torch.equal(
        model.get_input_embeddings().weight[:token_id], base.text_encoder.model.get_input_embeddings().weight
    )
    with torch.inference_mode():
        assert torch.equal(backend.encode_text(["a photo"]), base.encode_text(["a photo"]))  # other words unchanged
        assert not torch.allclose(backend.encode_text(["a <my-shape>"]), backend.encode_text(["a photo"]))


def test_multi_vector_files_and_named_tokens(sd_dir, tmp_path):
    vectors = torch.randn(3, 32)
    save_file({"emb_params": vectors}, str(tmp_path / "a1111.safetensors"))
    backend = load_backend(str(sd_dir), run=RunOptions(textual_inversion=(f"<tri>={tmp_path / 'a1111.safetensors'}",)))
    tokenizer = backend.text_encoder.tokenizer
    ids = tokenizer.convert_tokens_to_ids(["<tri>", "<tri>_1", "<tri>_2"])
    assert torch.equal(backend.text_encoder.model.get_input_embeddings().weight[ids], vectors)
    read = backend.text_encoder._tokenize(["a <tri>"])["input_ids"][0].tolist()
    assert all(i in read for i in ids)  # the prompt's token reads all three vectors
    spelled = backend.text_encoder._tokenize(["a <tri> <tri>_1 <tri>_2"])["input_ids"][0].tolist()
    assert spelled == read  # a prompt that spells the vectors out reads each once, not again


@pytest.mark.parametrize(
    ("tensors", "spec", "message"),
    [
        ({"<x>": torch.randn(16)}, "{f}", "vectors of size 16, the text encoder's embeddings are 32 wide"),
        ({"a": torch.randn(32)}, "{f}", "token 'a' already exists in the tokenizer"),
        ({"emb_params": torch.randn(2, 32)}, "{f}", "does not name its token"),
        ({"<x>": torch.full((32,), float("nan"))}, "{f}", "must be a finite"),
        ({"<x>": torch.randn(32), "<y>": torch.randn(32)}, "{f}", "holds 2 tensors"),
    ],
)
def test_bad_embedding_files_are_refused_in_one_line(sd_dir, tmp_path, tensors, spec, message):
    path = tmp_path / "emb.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ValueError, match=message):
        load_backend(str(sd_dir), run=RunOptions(textual_inversion=(spec.format(f=path),)))


def test_pickles_and_backends_without_a_text_encoder_are_refused(sd_dir, tmp_path):
    torch.save({"<x>": torch.randn(32)}, tmp_path / "emb.bin")
    with pytest.raises(ValueError, match="not a .safetensors file; pickled embeddings"):
        load_backend(str(sd_dir), run=RunOptions(textual_inversion=(str(tmp_path / "emb.bin"),)))
    save_file({"<x>": torch.randn(16)}, str(tmp_path / "emb.safetensors"))
    with pytest.raises(ValueError, match="'vae' has no text encoder"):
        load_backend("digits-vae", run=RunOptions(textual_inversion=(str(tmp_path / "emb.safetensors"),)))


def test_synthesize_prompts_with_a_learned_token(tmp_path):
    torch.manual_seed(0)
    save_file({"<digit-style>": torch.randn(384)}, str(tmp_path / "style.safetensors"))
    argv = ["--quiet", "synthesize", "--backend", "digits-ldm", "--labels-per-class", "1", "--strategy", "augment",
            "--noise", "random", "--strength", "0.5", "--num-inference-steps", "6", "--guidance-scale", "1",
            "--textual-inversion", str(tmp_path / "style.safetensors"),
            "--prompt-template", "a <digit-style> digit {class}"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "set")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "set" / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all(r["prompt"] == f"a <digit-style> digit {r['label']}" for r in rows)
    settings = json.loads((tmp_path / "set" / "manifest.json").read_text())["settings"]
    assert settings["textual_inversion"] == [str(tmp_path / "style.safetensors")]
