"""Run settings of diffusion jobs (issue 30) on this CPU: chunked UNet calls, VAE slicing and tiling.

Run: python benchmarks/bench_sd_memory.py        # about 5 minutes on 2 cores
Targets:
* chunked UNet calls (``unet_batch_size=8``) give the same images as one call (within 1e-5), and the batched walk
  stays >= 3x faster than one ``StableDiffusionPipeline`` call per frame at the SD-shaped latent (4 x 64 x 64) with
  a tiny-channel UNet (guidance 7.5; the paths x frames x steps are in the row);
* peak memory of decoding 16 latents at 512 px with ``vae_slicing`` <= 0.5x without (images within 1e-3);
  ``vae_tiling`` decodes a 1024 px latent whose untiled decode needs >= 3x the memory (the largest difference
  between tiled and untiled images is reported: tiles are blended, so the images differ at the seams).

The VAE is the published Stable Diffusion VAE layout (4 blocks, scale factor 8, ``sample_size`` 512, so 512 px
tiles) with narrow channels (32/64/128/128) and random weights, so a CPU can run it; memory is the peak RSS of a
fresh process above its RSS just before the decode (``ru_maxrss``), each case in its own process.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from _timing import report

VAE_CHANNELS = (32, 64, 128, 128)


def sd_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=512, block_out_channels=VAE_CHANNELS,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1,
        norm_num_groups=32, scaling_factor=0.18215,
    )  # fmt: skip


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def decode_case(case: str) -> dict:
    """One decode in this process: its peak RSS above the RSS before it, and a checksum image."""
    from latentmix.backends import AutoencoderKLBackend, RunOptions

    n, side = (16, 512) if case in ("plain-16x512", "slicing-16x512") else (1, 1024)
    backend = AutoencoderKLBackend(sd_vae(), image_size=side)
    RunOptions(vae_slicing=case.startswith("slicing"), vae_tiling=case.startswith("tiling")).apply(backend)
    z = torch.randn(n, 4, side // 8, side // 8, generator=torch.Generator().manual_seed(0))
    torch.set_grad_enabled(False)
    before = _rss_mb()
    start = time.perf_counter()
    images = backend.decode(z)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.save(images[:2].clone(), f"/tmp/latentmix_bench_{case}.pt")
    return {"case": case, "decode_mb": peak - before, "peak_rss_mb": peak, "seconds": seconds}


def _in_process(case: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--case", case], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_rows() -> list[dict]:
    runs = {c: _in_process(c) for c in ("plain-16x512", "slicing-16x512", "plain-1x1024", "tiling-1x1024")}
    images = {c: torch.load(f"/tmp/latentmix_bench_{c}.pt") for c in runs}
    slicing_diff = float((images["slicing-16x512"] - images["plain-16x512"]).abs().max())
    tiling_diff = float((images["tiling-1x1024"] - images["plain-1x1024"]).abs().max())
    plain, sliced = runs["plain-16x512"], runs["slicing-16x512"]
    untiled, tiled = runs["plain-1x1024"], runs["tiling-1x1024"]
    return [
        {"case": "decode 16 latents at 512 px: vae_slicing vs not", "with_mb": sliced["decode_mb"],
         "without_mb": plain["decode_mb"], "ratio": sliced["decode_mb"] / plain["decode_mb"],
         "max_abs_diff": slicing_diff, "target": "<= 0.5x, diff <= 1e-3"},
        {"case": "decode 1 latent at 1024 px: vae_tiling vs not", "with_mb": tiled["decode_mb"],
         "without_mb": untiled["decode_mb"], "ratio": tiled["decode_mb"] / untiled["decode_mb"],
         "max_abs_diff": tiling_diff, "target": "untiled >= 3x tiled (ratio <= 0.33)"},
    ]  # fmt: skip


def walk_rows(paths: int, frames: int, steps: int) -> list[dict]:
    """The batched walk (chunks of 8 latents, then one call) vs one pipeline call per frame, SD-shaped latent."""
    from bench_ldm import pipeline_per_frame, sd_shaped_pipeline

    from latentmix.backends import LatentDiffusionBackend, RunOptions
    from latentmix.jobs.grid import decode_walk

    pipe = sd_shaped_pipeline("cpu", torch.float32, sample_size=64)
    backend = LatentDiffusionBackend.from_pipeline(pipe)
    gen = torch.Generator().manual_seed(0)
    za, zb = backend.sample(paths, generator=gen), backend.sample(paths, generator=gen)
    ca = backend.encode_text([f"a photo of a {c}" for c in ("cat", "dog", "car", "tree")[:paths]])
    cb = backend.encode_text([f"a painting of a {c}" for c in ("boat", "house", "bird", "lake")[:paths]])
    kwargs = {"num_inference_steps": steps, "guidance_scale": 7.5}

    def walk(batch_size: int):
        backend.batch_size = batch_size
        with torch.inference_mode():
            return decode_walk(backend, za, zb, frames, "slerp", cond_a=ca, cond_b=cb, **kwargs)

    RunOptions(unet_batch_size=8).apply(backend)
    start = time.perf_counter()
    chunked, path = walk(8)
    t_chunked = time.perf_counter() - start
    start = time.perf_counter()
    whole, _ = walk(paths * frames)
    t_whole = time.perf_counter() - start
    lam = torch.linspace(0, 1, frames)[None, :, None, None]
    cond = torch.lerp(ca[:, None], cb[:, None], lam)
    start = time.perf_counter()
    pipeline_per_frame(pipe, backend)(list(zip(path.flatten(0, 1), cond.flatten(0, 1), strict=True)), kwargs)
    t_frame = time.perf_counter() - start
    diff = float((chunked - whole).abs().max())
    case = f"SD-shaped latent 4x64x64, {paths} paths x {frames} frames x {steps} DDIM steps, guidance 7.5"
    return [{"case": case, "chunks_of_8_s": t_chunked, "one_call_s": t_whole, "per_frame_pipeline_s": t_frame,
             "speedup_vs_per_frame": t_frame / t_chunked, "chunked_vs_one_call_max_diff": diff,
             "target": ">= 3x, diff <= 1e-5"}]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--paths", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(decode_case(args.case)))
        return
    report("sd_vae_memory", memory_rows())
    report("sd_walk_chunks", walk_rows(args.paths, args.frames, args.steps))


if __name__ == "__main__":
    main()
