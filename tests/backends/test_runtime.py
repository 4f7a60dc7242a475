"""Run settings of a diffusion backend (issue 30): variants, chunk sizes, memory features, precision, negative
prompts and the Euler sampler — on a tiny Stable Diffusion pipeline built from config."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from diffusers import EulerDiscreteScheduler

from latentmix.backends import AutoencoderKLBackend, LatentDiffusionBackend, RunOptions, load_backend

PROMPTS = ["a red square", "a blue circle", "a green triangle", "", "a red circle", "a blue square", "x"]


@pytest.fixture
def sd_dir(tiny_sd_pipeline, tmp_path):
    tiny_sd_pipeline.save_pretrained(tmp_path / "sd")
    return tmp_path / "sd"


def noise(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def rows_per_call(module) -> tuple[list[int], object]:
    rows: list[int] = []
    handle = module.register_forward_pre_hook(lambda _m, args: rows.append(int(args[0].shape[0])))
    return rows, handle


def test_a_folder_saved_as_an_fp16_variant_loads_with_variant_fp16(tiny_sd_pipeline, tmp_path):
    tiny_sd_pipeline.save_pretrained(tmp_path / "sd16", variant="fp16")
    unet_files = sorted(p.name for p in (tmp_path / "sd16" / "unet").iterdir())
    assert "diffusion_pytorch_model.fp16.safetensors" in unet_files
    assert "diffusion_pytorch_model.safetensors" not in unet_files
    with pytest.raises(ValueError, match=r"holds only the fp16 variant .*--variant fp16"):
        load_backend(tmp_path / "sd16")
    with pytest.raises(ValueError, match=r"no ema variant \(diffusion_pytorch_model\.ema\.safetensors"):
        load_backend(tmp_path / "sd16", run=RunOptions(variant="ema"))
    loaded = load_backend(tmp_path / "sd16", run=RunOptions(variant="fp16"))
    reference = LatentDiffusionBackend.from_pipeline(tiny_sd_pipeline, num_inference_steps=3)
    with torch.inference_mode():
        ours = loaded.decode(noise(2), texts=PROMPTS[:2], num_inference_steps=3)
        ref = reference.decode(noise(2), texts=PROMPTS[:2])
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="variant applies to diffusers folders; .* is a latentmix save"):
        load_backend("digits-vae", run=RunOptions(variant="fp16"))


def test_chunk_sizes_are_honoured_and_keep_the_images(sd_dir):
    whole = load_backend(sd_dir)
    chunked = load_backend(sd_dir, run=RunOptions(unet_batch_size=3, vae_batch_size=2))
    assert chunked.batch_size == 3 and chunked.autoencoder.batch_size == 2
    unet_rows, h1 = rows_per_call(chunked.unet)
    vae_rows, h2 = rows_per_call(chunked.autoencoder.vae.decoder)
    with torch.inference_mode():
        ours = chunked.decode(noise(7), texts=PROMPTS, num_inference_steps=2, guidance_scale=2.0)
        ref = whole.decode(noise(7), texts=PROMPTS, num_inference_steps=2, guidance_scale=2.0)
    h1.remove(), h2.remove()
    assert max(unet_rows) == 6 and sum(unet_rows) == 2 * 2 * 7  # 3 latents doubled by guidance; 2 steps
    assert vae_rows == [2, 1, 2, 1, 1]  # chunks of 3 (the UNet's), each decoded 2 at a time
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_slicing_tiling_and_attention_slicing_reach_the_models_and_keep_the_images(sd_dir):
    plain = load_backend(sd_dir)
    run = RunOptions(vae_slicing=True, attention_slicing="max")
    sliced = load_backend(sd_dir, run=run)
    assert sliced.autoencoder.vae.use_slicing and not plain.autoencoder.vae.use_slicing
    rows, handle = rows_per_call(sliced.autoencoder.vae.decoder)
    with torch.inference_mode():
        ours = sliced.decode(noise(3), texts=PROMPTS[:3], num_inference_steps=2)
        ref = plain.decode(noise(3), texts=PROMPTS[:3], num_inference_steps=2)
    handle.remove()
    assert rows == [1, 1, 1]  # diffusers' slicing: one image at a time
    torch.testing.assert_close(ours, ref, atol=1e-3, rtol=0)
    tiled = load_backend(sd_dir, run=RunOptions(vae_tiling=True))
    assert tiled.autoencoder.vae.use_tiling


def test_tiling_decodes_a_large_latent_in_tiles(tiny_autoencoder_kl):
    """A 64 px image from a VAE whose tiles are 16 px: decoded tile by tile (more decoder calls, each small)."""
    big = AutoencoderKLBackend(tiny_autoencoder_kl, image_size=64)
    RunOptions(vae_tiling=True).apply(big)
    rows, handle = rows_per_call(big.vae.decoder)
    shapes: list[tuple[int, ...]] = []
    h2 = big.vae.decoder.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape[-2:])))
    z = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = big.decode(z)
    handle.remove(), h2.remove()
    assert out.shape == (1, 3, 64, 64) and bool(torch.isfinite(out).all())
    assert len(rows) > 1 and max(s[0] for s in shapes) < 32


def test_bf16_leaves_the_unet_in_bf16_and_the_upcast_vae_in_fp32(sd_dir):
    backend = load_backend(sd_dir, run=RunOptions(dtype="bf16"))
    assert backend.unet.dtype == torch.bfloat16 and backend.autoencoder.vae.dtype == torch.float32
    with torch.inference_mode():
        images = backend.decode(noise(2), texts=PROMPTS[:2], num_inference_steps=2, guidance_scale=2.0)
    assert images.dtype == torch.float32 and bool(torch.isfinite(images).all())


def test_negative_prompts_match_the_diffusers_pipeline(tiny_sd_pipeline):
    ldm = LatentDiffusionBackend.from_pipeline(tiny_sd_pipeline, num_inference_steps=4)
    pipe = tiny_sd_pipeline
    pipe.set_progress_bar_config(disable=True)
    z = noise(2)
    negatives = ["blurry", "a blue circle"]
    ref = pipe(prompt=PROMPTS[:2], negative_prompt=negatives, latents=z.clone(), num_inference_steps=4,
               guidance_scale=3.0, output_type="pt", height=16, width=16).images  # fmt: skip
    with torch.inference_mode():
        ours = ldm.decode(z, texts=PROMPTS[:2], guidance_scale=3.0, negative_prompt=negatives)
        one = ldm.decode(z, texts=PROMPTS[:2], guidance_scale=3.0, negative_prompt="blurry")
        plain = ldm.decode(z, texts=PROMPTS[:2], guidance_scale=3.0)
    torch.testing.assert_close((ours + 1) / 2, ref.clamp(0, 1), atol=1e-4, rtol=0)
    torch.testing.assert_close(one[0], ours[0], atol=1e-6, rtol=0)
    assert float((plain - ours).abs().max()) > 1e-3
    with torch.inference_mode():  # the same negative prompt takes an inversion back
        x = ldm.decode(z, texts=PROMPTS[:2], guidance_scale=3.0)
        z_back = ldm.encode(x, texts=PROMPTS[:2], guidance_scale=3.0, negative_prompt="blurry")
    assert z_back.shape == z.shape and bool(torch.isfinite(z_back).all())
    with pytest.raises(ValueError, match=r"negative_prompt: give one for all items or one per item \(2\), got 3"):
        ldm.decode(z, texts=PROMPTS[:2], guidance_scale=3.0, negative_prompt=["a", "b", "c"])
    with pytest.raises(ValueError, match="negative_prompt needs guidance_scale > 1"):
        ldm.call_options(guidance_scale=1.0, negative_prompt="blurry")


def test_euler_sampling_matches_the_diffusers_pipeline(tiny_sd_pipeline):
    ldm = LatentDiffusionBackend.from_pipeline(tiny_sd_pipeline, num_inference_steps=4)
    pipe = tiny_sd_pipeline
    pipe.scheduler = EulerDiscreteScheduler.from_config(ldm.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    z = noise(2)
    ref = pipe(prompt=PROMPTS[:2], latents=z.clone(), num_inference_steps=4,  # the pipeline scales them by σ_max
               guidance_scale=2.0, output_type="pt", height=16, width=16).images  # fmt: skip
    with torch.inference_mode():
        ours = ldm.decode(z, texts=PROMPTS[:2], guidance_scale=2.0, sampler="euler")
    torch.testing.assert_close((ours + 1) / 2, ref.clamp(0, 1), atol=1e-4, rtol=0)


def test_bad_run_settings_are_one_line_errors_before_loading(sd_dir, tmp_path, capsys):
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device: cuda is not available on this machine"):
            load_backend(sd_dir, run=RunOptions(device="cuda"))
    with pytest.raises(ValueError, match="unet_batch_size applies to diffusion backends"):
        load_backend("digits-vae", run=RunOptions(unet_batch_size=4))
    with pytest.raises(ValueError, match="vae_slicing applies to diffusers autoencoders .*ConvVAE"):
        load_backend("digits-ldm", run=RunOptions(vae_slicing=True))
    with pytest.raises(ValueError, match="dtype must be one of fp32, fp16, bf16"):
        RunOptions(dtype="fp8")
    with pytest.raises(ValueError, match="attention_slicing must be auto, max or a positive number"):
        RunOptions(attention_slicing="half")
    from latentmix.cli import main

    for flags, message in [
        (["--device", "cuda"], "device: cuda is not available"),
        (["--dtype", "fp8"], "invalid choice"),
        (["--variant", "fp16"], "no fp16 variant"),
        (["--unet-batch-size", "0"], "unet_batch_size must be a positive int"),
    ]:
        if flags[1] == "cuda" and torch.cuda.is_available():
            continue
        out = tmp_path / f"grid{len(flags[1])}.png"
        argv = ["grid", "--backend", str(sd_dir), "--prompts", "a", "b", "--steps", "3", "--num-inference-steps", "2",
                "--out", str(out), *flags]  # fmt: skip
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own refusals
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2, err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()


def test_the_cli_runs_a_grid_in_bf16_with_chunks_and_slicing(sd_dir, tmp_path):
    out = tmp_path / "grid.png"
    command = [sys.executable, "-m", "latentmix", "--quiet", "grid", "--backend", str(sd_dir), "--prompts", "a red",
               "a blue", "--steps", "3", "--num-inference-steps", "2", "--guidance-scale", "2", "--negative-prompt",
               "blurry", "--dtype", "bf16", "--unet-batch-size", "2", "--vae-batch-size", "1", "--vae-slicing",
               "--attention-slicing", "2", "--out", str(out)]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert out.is_file()


def test_the_gpu_check_runs_at_toy_size_on_the_cpu():
    """benchmarks/gpu_check.py stays ready for a lent GPU: its whole code path runs here at toy size."""
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
    run = subprocess.run([sys.executable, str(script), "--smoke"], capture_output=True, text=True, cwd=script.parent)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 9 and '"speedup"' in rows[0] and '"samples_per_s"' in rows[4] and "cpu_offload" in rows[5]
    assert '"lora_over_full"' in rows[7] and '"trainable_share_percent"' in rows[7]


def test_a_set_written_before_the_run_settings_existed_still_resumes(tmp_path):
    """A run file without the newer settings (dtype, variant, ...) counts them as their defaults."""
    import json
    from dataclasses import replace

    from latentmix.data.synthetic import RUN_FILE
    from latentmix.jobs.synthesize import SynthesisConfig, synthesize

    config = SynthesisConfig(backend="digits-vae", n=6, shard_size=3, out=str(tmp_path / "set"))
    synthesize(replace(config, n=3), quiet=True)
    run = tmp_path / "set" / RUN_FILE
    newer = ("dtype", "variant", "vae_tiling", "negative_prompt")
    run.write_text(json.dumps({k: v for k, v in json.loads(run.read_text()).items() if k not in newer}))
    synthesize(config, quiet=True)
    assert sum(1 for _ in (tmp_path / "set" / "images").rglob("*.png")) == 6
    with pytest.raises(ValueError, match="holds a different run's set .*dtype"):
        synthesize(replace(config, n=9, dtype="bf16"), quiet=True)


def test_cpu_offload_hooks_every_network_and_keeps_the_images(tiny_sd_pipeline, monkeypatch):
    """The hooks run for the text encoder and UNet (forward) and the VAE (encode / decode, through diffusers'
    apply_forward_hook), and the images are those of the resident backend. (On this CPU the execution device is
    the CPU itself; benchmarks/gpu_check.py measures the memory on a GPU.)"""
    from latentmix.backends.offload import ExclusiveOffload, disable_cpu_offload, enable_cpu_offload

    ldm = LatentDiffusionBackend.from_pipeline(tiny_sd_pipeline, num_inference_steps=3)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        want_z = ldm.encode(images, texts=PROMPTS[:2], guidance_scale=2.0)
        want = ldm.decode(noise(2), texts=PROMPTS[2:4], guidance_scale=2.0)
    ran: list[str] = []
    names = {id(m): n for n, m in ldm.modules().items()}
    real = ExclusiveOffload.pre_forward

    def logged(self, module, *args, **kwargs):
        ran.append(names[id(module)])
        return real(self, module, *args, **kwargs)

    monkeypatch.setattr(ExclusiveOffload, "pre_forward", logged)
    enable_cpu_offload(ldm, "cpu")  # (the text cache is cleared: every prompt is encoded again)
    assert all(isinstance(m._hf_hook, ExclusiveOffload) for m in ldm.modules().values())
    assert ldm.device == torch.device("cpu") and ldm.autoencoder.execution_device == torch.device("cpu")
    with torch.inference_mode():
        torch.testing.assert_close(ldm.encode(images, texts=PROMPTS[:2], guidance_scale=2.0), want_z)
        assert set(ran) == {"text_encoder", "unet", "autoencoder.vae"}  # inversion: every network through its hook
        ran.clear()
        torch.testing.assert_close(ldm.decode(noise(2), texts=PROMPTS[2:4], guidance_scale=2.0), want)
    assert ran[0] == "text_encoder" and ran[-1] == "autoencoder.vae" and ran.count("unet") == 3
    disable_cpu_offload(ldm)
    assert not any(hasattr(m, "_hf_hook") for m in ldm.modules().values()) and ldm.execution_device is None


def test_cpu_offload_on_the_cpu_and_on_a_single_network_is_refused(sd_dir, capsys):
    with pytest.raises(ValueError, match="cpu_offload keeps the networks on the CPU .* drop --cpu-offload"):
        load_backend(sd_dir, run=RunOptions(device="cpu", cpu_offload=True))
    with pytest.raises(ValueError, match="cpu_offload applies to backends of several networks"):
        RunOptions(cpu_offload=True).apply(load_backend("digits-vae"), torch.device("cpu"))
    from latentmix.cli import main

    assert main(["grid", "--backend", str(sd_dir), "--prompts", "a", "b", "--cpu-offload", "--device", "cpu", "--out",
                 str(sd_dir.parent / "g.png")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "drop --cpu-offload" in err[0] and not (sd_dir.parent / "g.png").exists()
