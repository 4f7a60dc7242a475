"""Latent diffusion: batched interpolation walks vs one pipeline call per frame; DDIM round trip.

Run: python benchmarks/bench_ldm.py [--device cuda] [--dtype bf16|fp16]
Targets (issue 6):
* 8 paths x 8 frames x 20 DDIM steps: the batched walk >= 3x faster than one pipeline call per
  frame with the same components. Measured twice: on the embedded digits-ldm (per-frame = our own
  decode of one frame, the same sampler diffusers' pipeline runs — tests check they agree), and on
  a Stable-Diffusion-shaped pipeline of random components (4x16x16 latents, BERT-like text encoder,
  guidance 7.5), where the per-frame baseline is diffusers' StableDiffusionPipeline called once per
  frame, as its community walk pipelines and stable-diffusion-videos do.
* DDIM inversion then sampling (50 steps) of test digits: error within 2x of the autoencoder's
  own; the sweep over inversion steps and guidance scale shows where the drift comes from.
"""

from __future__ import annotations

import argparse
import time

import torch
from _timing import report

from latentmix import load_backend
from latentmix.backends import LatentDiffusionBackend
from latentmix.data import DigitsDataset
from latentmix.jobs.grid import decode_walk

PATHS, FRAMES, STEPS = 8, 8, 20


def _time(fn, repeat: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def walk_rows(backend: LatentDiffusionBackend, name: str, guidance: float, per_frame) -> dict:
    gen = torch.Generator().manual_seed(0)
    za, zb = backend.sample(PATHS, generator=gen), backend.sample(PATHS, generator=gen)
    ca = backend.encode_text([f"a handwritten digit {i % 10}" for i in range(PATHS)])
    cb = backend.encode_text([f"a handwritten digit {(i + 3) % 10}" for i in range(PATHS)])
    kwargs = {"num_inference_steps": STEPS, "guidance_scale": guidance}

    def batched():
        with torch.inference_mode():
            return decode_walk(backend, za, zb, FRAMES, "slerp", cond_a=ca, cond_b=cb, **kwargs)

    _images, path = batched()
    cond = torch.lerp(
        ca[:, None], cb[:, None], torch.linspace(0, 1, FRAMES, device=ca.device, dtype=ca.dtype)[None, :, None, None]
    )
    frames = list(zip(path.flatten(0, 1), cond.flatten(0, 1), strict=True))
    t_batched = _time(batched)
    t_single = _time(lambda: per_frame(frames, kwargs), repeat=1)
    return {
        "case": f"{name}: {PATHS} paths x {FRAMES} frames x {STEPS} DDIM steps, guidance {guidance:g}",
        "batched_s": t_batched,
        "per_frame_s": t_single,
        "result": f"{t_single / t_batched:.1f}x faster",
        "target": ">= 3x",
    }


def digits_per_frame(backend):
    def run(frames, kwargs):
        with torch.inference_mode():
            return [backend.decode(z[None], cond=c[None], **kwargs) for z, c in frames]

    return run


def sd_shaped_pipeline(device, dtype, sample_size: int = 16):
    """A Stable-Diffusion-shaped pipeline of random components (small enough for a CPU); ``sample_size``: the
    latent side (64 is Stable Diffusion 1.5's, at 512 px)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import AutoTokenizer, BertConfig, BertModel

    from latentmix.data.text import default_text_encoder_path

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=2 * sample_size,
    )
    tokenizer = AutoTokenizer.from_pretrained(str(default_text_encoder_path()))
    tokenizer.model_max_length = 16
    text_encoder = BertModel(
        BertConfig(
            vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
        )
    )
    scheduler = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        unet=unet,
        scheduler=scheduler,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device, dtype)
    return pipe


def pipeline_per_frame(pipe, backend):
    uncond = backend.encode_text([""])

    def run(frames, kwargs):
        with torch.inference_mode():
            return [
                pipe(
                    prompt_embeds=c[None],
                    negative_prompt_embeds=uncond,
                    latents=z[None].to(pipe.unet.dtype),
                    output_type="pt",
                    height=backend.image_size,
                    width=backend.image_size,
                    **kwargs,
                ).images
                for z, c in frames
            ]

    return run


def roundtrip_rows(backend: LatentDiffusionBackend, n: int = 360) -> list[dict]:
    test = DigitsDataset("test")
    x, texts = test.images(range(n)), test.texts[:n]
    with torch.inference_mode():
        ae = float(backend.autoencoder.reconstruction_error(x).mean())
        rows = [{"case": "autoencoder encode -> decode (baseline)", "mse": ae, "vs_autoencoder": "1x", "target": "-"}]
        for steps, guidance in [(10, 1.0), (20, 1.0), (50, 1.0), (100, 1.0), (50, 1.5), (50, 2.0), (50, 3.0)]:
            mse = float(
                backend.reconstruction_error(x, texts=texts, num_inference_steps=steps, guidance_scale=guidance).mean()
            )
            rows.append(
                {
                    "case": f"DDIM inversion + sampling, {steps} steps, guidance {guidance:g}",
                    "mse": mse,
                    "vs_autoencoder": f"{mse / ae:.2f}x",
                    "target": "<= 2x" if (steps, guidance) == (50, 1.0) else "-",
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    args = parser.parse_args()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    digits = load_backend("digits-ldm").to(args.device, dtype)
    rows = [walk_rows(digits, "digits-ldm", 1.0, digits_per_frame(digits))]
    pipe = sd_shaped_pipeline(args.device, dtype)
    sd = LatentDiffusionBackend.from_pipeline(pipe)
    rows.append(walk_rows(sd, "SD-shaped pipeline (diffusers per frame)", 7.5, pipeline_per_frame(pipe, sd)))
    suffix = "" if (args.device, args.dtype) == ("cpu", "fp32") else f"_{args.device}_{args.dtype}"
    report("ldm_walk" + suffix, rows)
    if args.dtype == "fp32":
        report("ldm_roundtrip" + suffix, roundtrip_rows(digits))
    else:  # low precision: the round trip must stay finite
        x = DigitsDataset("test").images(range(64)).to(args.device, dtype)
        with torch.inference_mode():
            out = digits.reconstruct(x, texts=DigitsDataset("test").texts[:64])
        print(
            f"{args.dtype} round trip finite: {bool(torch.isfinite(out.float()).all())}, "
            f"mse {float((out.float() - x.float()).pow(2).mean()):.4f}"
        )


if __name__ == "__main__":
    main()
