"""The GPU check (issue 30): one short script to run whenever a GPU machine is lent; about 5 minutes on one GPU.

    pip install torch==2.13.0 -e .            # or the GPU build of torch the machine has
    python benchmarks/gpu_check.py --out gpu_check.json
    python benchmarks/gpu_check.py --smoke    # the same code path at toy size on the CPU (what CI can run)

Builds a Stable Diffusion 1.5-shaped UNet and VAE from their published configs with random weights (nothing is
downloaded; the text encoder is a 12-layer CLIP text model of SD 1.5's width over the offline MiniLM tokenizer) and
measures, each against its baseline in the same run:

1. the batched walk (8 paths x 8 frames, 20 DDIM steps, guidance 7.5, 512 px) vs one ``StableDiffusionPipeline``
   call per frame with the same components;
2. that walk in fp16 vs fp32;
3. peak GPU memory of decoding 16 latents at 512 px: plain, ``vae_slicing``, ``vae_tiling``;
4. paired synthesis throughput (invert two sources, slerp with one lambda, decode), samples/s, fp16;
5. peak GPU memory of decoding 4 prompts (20 steps, 512 px, fp16) with ``cpu_offload`` vs without, and its time;
6. a ``fit lora`` training step (rank 4 on the UNet's attention, batch 4 at 512 px, fp16 autocast) vs a full
   fine-tuning step of the same fp32 UNet (every weight, AdamW): time and peak memory (issue 31's target: the
   LoRA step <= 0.8x the full step's time, trainable parameters <= 5 %).

Record the printed table in BENCHMARKS.md with the device name it prints.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

SD15_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280), "cross_attention_dim": 768, "attention_head_dim": 8,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
}  # fmt: skip
SD15_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "sample_size": 512, "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4, "scaling_factor": 0.18215, "force_upcast": True,
}  # fmt: skip
SD15_TEXT = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
             "max_position_embeddings": 77}  # fmt: skip
SMOKE = {
    "unet": {**SD15_UNET, "sample_size": 8, "block_out_channels": (32, 32, 64, 64), "layers_per_block": 1,
             "cross_attention_dim": 32, "norm_num_groups": 8},
    "vae": {**SD15_VAE, "sample_size": 64, "block_out_channels": (8, 8, 16, 16), "layers_per_block": 1,
            "norm_num_groups": 8},
    "text": {**SD15_TEXT, "hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
             "num_hidden_layers": 2},
}  # fmt: skip


def pipeline(smoke: bool, device: torch.device, dtype: torch.dtype):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel

    from latentmix.data.text import default_text_encoder_path

    configs = SMOKE if smoke else {"unet": SD15_UNET, "vae": SD15_VAE, "text": SD15_TEXT}
    tokenizer = AutoTokenizer.from_pretrained(str(default_text_encoder_path()))
    tokenizer.model_max_length = 77
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**configs["unet"])
    torch.manual_seed(0)
    vae = AutoencoderKL(**configs["vae"])
    torch.manual_seed(0)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                        **configs["text"]))  # fmt: skip
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)  # fmt: skip
    pipe = StableDiffusionPipeline(vae=vae, unet=unet, scheduler=scheduler, text_encoder=text, tokenizer=tokenizer,
                                   safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


def backend_of(pipe, dtype_name: str, device: torch.device, **run):
    from latentmix.backends import LatentDiffusionBackend, RunOptions

    backend = LatentDiffusionBackend.from_pipeline(pipe, text_attention_mask=False)
    return RunOptions(dtype=dtype_name, **run).apply(backend, device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def walk_case(pipe, backend, device, paths: int, frames: int, steps: int) -> dict:
    from latentmix.jobs.grid import decode_walk

    gen = torch.Generator().manual_seed(0)
    za, zb = backend.sample(paths, generator=gen), backend.sample(paths, generator=gen)
    ca = backend.encode_text([f"a photo of a subject {i}" for i in range(paths)])
    cb = backend.encode_text([f"a painting of a subject {i}" for i in range(paths)])
    kwargs = {"num_inference_steps": steps, "guidance_scale": 7.5}
    with torch.inference_mode():
        decode_walk(backend, za[:1], zb[:1], 2, "slerp", cond_a=ca[:1], cond_b=cb[:1], **kwargs)  # warm-up
        result: dict = {}
        batched = timed(lambda: result.update(out=decode_walk(backend, za, zb, frames, "slerp", cond_a=ca, cond_b=cb,
                                                              **kwargs)), device)  # fmt: skip
        path = result["out"][1]
        lam = torch.linspace(0, 1, frames, device=ca.device, dtype=ca.dtype)[None, :, None, None]
        cond = torch.lerp(ca[:, None], cb[:, None], lam).flatten(0, 1)
        uncond = backend.encode_text([""])
        side = backend.image_size

        vae = pipe.vae  # the backend keeps a force_upcast VAE in fp32; the baseline decodes with the same one

        def per_frame():
            for z, c in zip(path.flatten(0, 1), cond, strict=True):
                latent = pipe(prompt_embeds=c[None], negative_prompt_embeds=uncond, latents=z[None].to(pipe.unet.dtype),
                              output_type="latent", height=side, width=side, **kwargs).images  # fmt: skip
                vae.decode(latent.to(vae.dtype) / vae.config.scaling_factor)

        single = timed(per_frame, device)
    return {"batched_s": batched, "per_frame_s": single, "speedup": single / batched}


def memory_case(backend, device, n: int, **features) -> float:
    from latentmix.backends import RunOptions

    vae = backend.autoencoder.vae
    vae.disable_slicing(), vae.disable_tiling()
    RunOptions(**features).apply(backend.autoencoder)
    z = torch.randn(n, *backend.autoencoder.latent_shape, device=device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        backend.autoencoder.decode(z)
    sync(device)
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")


def synthesis_case(backend, device, n: int, steps: int) -> float:
    from latentmix.latent.interpolate import interpolate

    gen = torch.Generator().manual_seed(0)
    side = backend.image_size
    x = (torch.rand(2 * n, 3, side, side, generator=gen) * 2 - 1).to(device)
    texts = [f"a photo of a subject {i}" for i in range(2 * n)]
    lam = torch.rand(n, generator=gen).to(device)

    def run():
        with torch.inference_mode():
            z = backend.encode(x, texts=texts, num_inference_steps=steps)
            cond = backend.encode_text(texts)
            mixed = interpolate(z[:n].float(), z[n:].float(), lam, method="slerp")
            c = torch.lerp(cond[:n], cond[n:], lam[:, None, None].to(cond.dtype))
            backend.decode(mixed.to(backend.dtype), cond=c, num_inference_steps=steps)

    return n / timed(run, device)


def offload_case(backend, device, steps: int) -> dict:
    """Peak memory and time of one guided decode of 4 prompts, the networks resident vs offloaded to the CPU."""
    from latentmix.backends.offload import disable_cpu_offload, enable_cpu_offload

    z = backend.sample(4, generator=torch.Generator().manual_seed(0))
    texts = [f"a photo of a subject {i}" for i in range(4)]
    result = {}
    for label in ("resident", "offload"):
        if label == "offload":
            enable_cpu_offload(backend, device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode():
            result[f"{label}_s"] = timed(lambda: backend.decode(z, texts=texts, num_inference_steps=steps,
                                                                guidance_scale=7.5), device)  # fmt: skip
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
        result[f"{label}_peak_gpu_mb"] = peak
    disable_cpu_offload(backend)
    backend.to(device)
    result["memory_ratio"] = result["offload_peak_gpu_mb"] / result["resident_peak_gpu_mb"]
    return result


class _Photos:
    """Random images of two classes (what ``AdapterRun`` reads of a dataset): the step's cost, not what it learns."""

    def __init__(self, n: int, side: int):
        self.x = torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1
        self.labels, self.class_names = torch.arange(n) % 2, ["cat", "dog"]

    def __len__(self) -> int:
        return len(self.x)

    def images(self, indices) -> torch.Tensor:
        return self.x[list(indices)]


def lora_case(backend, device, batch: int, rounds: int) -> dict:
    """Median step time and peak memory: a full fine-tuning step of the UNet (fp32 weights, every one trainable,
    AdamW, fp16 autocast), then ``fit lora``'s own step (``AdapterRun.train_step``, rank 4, no tokens)."""
    from latentmix.configs import LoRAFitConfig
    from latentmix.train.common import split_batch_accelerator
    from latentmix.train.fit_adapter import AdapterRun

    cuda = device.type == "cuda"
    unet, data = backend.unet, _Photos(2 * batch, backend.image_size)
    with torch.no_grad():
        z = backend.first_stage.encode(data.images(range(batch)).to(device)).float()
        cond = backend.encode_text(["a photo of a cat"] * batch).float()
    t = torch.randint(0, 1000, (batch,), generator=torch.Generator().manual_seed(0)).to(device)
    result = {}

    def measure(step) -> tuple[float, float]:
        for _ in range(2):
            step()
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        times = sorted(timed(step, device) for _ in range(rounds))
        return times[len(times) // 2], torch.cuda.max_memory_allocated(device) / 2**20 if cuda else float("nan")

    unet.requires_grad_(True).train()
    full = {"optimizer": torch.optim.AdamW(unet.parameters(), lr=1e-5), "scaler": torch.amp.GradScaler(enabled=cuda)}

    def full_step():
        with torch.autocast(device.type, dtype=torch.float16, enabled=cuda):
            loss = (unet(z, t, encoder_hidden_states=cond).sample.float() - z).pow(2).mean()
        full["optimizer"].zero_grad(set_to_none=True)
        full["scaler"].scale(loss).backward()
        full["scaler"].step(full["optimizer"])
        full["scaler"].update()

    result["full_step_s"], result["full_peak_gpu_mb"] = measure(full_step)
    full.clear()  # the AdamW state of every weight: freed before the LoRA run
    unet.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.empty_cache()
    precision = "fp16" if cuda else "no"
    config = LoRAFitConfig(backend="gpu-check", batch_size=batch, tokens=False, mixed_precision=precision, cpu=not cuda)
    run = AdapterRun(config, backend, data, split_batch_accelerator(batch, 0, not cuda, precision), True)
    idx, counter = torch.arange(batch), iter(range(10**6))
    result["lora_step_s"], result["lora_peak_gpu_mb"] = measure(lambda: run.train_step(idx, next(counter)))
    result["lora_over_full"] = result["lora_step_s"] / result["full_step_s"]
    result["trainable_share_percent"] = 100 * run.trainable_lora / run.unet_base
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="toy sizes on the CPU: checks the script runs")
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    paths, frames, steps = (2, 2, 2) if args.smoke else (8, 8, 20)
    rows = []
    for dtype_name, dtype in (("fp16", torch.float16), ("fp32", torch.float32)):
        pipe = pipeline(args.smoke, device, dtype)
        backend = backend_of(pipe, dtype_name, device, unet_batch_size=16)
        walk = walk_case(pipe, backend, device, paths, frames, steps)
        rows.append({"check": f"walk {paths}x{frames} frames, {steps} steps, {backend.image_size} px, {dtype_name}",
                     **walk, "target": ">= 3x (batched vs per frame)"})  # fmt: skip
        if dtype_name == "fp16":
            n = 2 if args.smoke else 16
            for label, features in (("plain", {}), ("vae_slicing", {"vae_slicing": True}),
                                    ("vae_tiling", {"vae_tiling": True})):  # fmt: skip
                rows.append({"check": f"decode {n} latents at {backend.image_size} px, {label}",
                             "peak_gpu_mb": memory_case(backend, device, n, **features)})  # fmt: skip
            rows.append({"check": f"paired synthesis, fp16, {steps} steps",
                         "samples_per_s": synthesis_case(backend, device, 2 if args.smoke else 8, steps)})  # fmt: skip
            rows.append({"check": f"decode 4 prompts, {steps} steps, {backend.image_size} px, fp16: cpu_offload",
                         **offload_case(backend, device, steps)})  # fmt: skip
        else:  # fp32 weights, as training keeps them
            batch = 2 if args.smoke else 4
            rows.append({"check": f"fit lora step vs full fine-tuning, batch {batch}, {backend.image_size} px",
                         **lora_case(backend, device, batch, 3 if args.smoke else 10),
                         "target": "<= 0.8x the full step, <= 5 % trainable"})  # fmt: skip
        del pipe, backend
        if device.type == "cuda":
            torch.cuda.empty_cache()
    walks = [r for r in rows if "speedup" in r]
    rows.append({"check": "fp16 vs fp32 walk", "fp16_speedup": walks[1]["batched_s"] / walks[0]["batched_s"]})
    print(f"device: {name}, torch {torch.__version__}")
    for row in rows:
        print(json.dumps(row))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
