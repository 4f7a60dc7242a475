"""`fit lora` trains only the adapter: its trainable share of the UNet and its step time vs a full fine-tuning step.

Run: python benchmarks/bench_lora.py [--backend shapes-ldm] [--data shapes] [--batch 16] [--rounds 20] [--width W]
Target (issue 31): trainable parameters <= 5 % of the UNet's, and a LoRA step <= 0.8x the time of a full
fine-tuning step of the same UNet. Both steps are the same code (``fit_adapter``'s step: the class tokens learn in
both, the text encoder runs with gradients for them); the full step also makes every UNet weight trainable and adds
it to AdamW. Interleaved medians, one process, CPU. ``--width W`` swaps the embedded UNet for a wider one of the
same layout (channels W, 2W; two layers per block; random weights, seed 0) over the same autoencoder and text
encoder: a step that is compute-bound rather than overhead-bound, as a real Stable Diffusion UNet's is.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from _timing import interleaved, report

from latentmix import load_backend
from latentmix.configs import LoRAFitConfig, TextualInversionFitConfig
from latentmix.train.common import split_batch_accelerator
from latentmix.train.fit_adapter import AdapterRun, adapter_dataset


def build(config, full: bool) -> AdapterRun:
    backend = load_backend(config.backend)
    accelerator = split_batch_accelerator(config.batch_size, config.seed, cpu=True)
    run = AdapterRun(config, backend, adapter_dataset(config, backend), accelerator, quiet=True)
    if full:  # full fine-tuning: every UNet weight learns (the tokens too, as in the LoRA run)
        run.unet.requires_grad_(True)
        run.optimizer.add_param_group({"params": list(run.unet.parameters()), "lr": 1e-5, "weight_decay": 1e-2})
        run.unet_run = run.unet.train()
    return run


def wider(backend_name: str, width: int, out: str) -> str:
    """A copy of ``backend_name`` whose UNet has channels (width, 2·width), two layers per block (random weights)."""
    from diffusers import UNet2DConditionModel

    from latentmix.backends import LatentDiffusionBackend

    base = load_backend(backend_name)
    config = dict(base.unet.config)
    config.update(block_out_channels=(width, 2 * width), layers_per_block=2, cross_attention_dim=width,
                  norm_num_groups=32)  # fmt: skip
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(config)
    LatentDiffusionBackend(base.autoencoder, unet, base.scheduler, base.text_encoder,
                           text_max_length=base.text_max_length).save_pretrained(out)  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="shapes-ldm")
    parser.add_argument("--data", default="shapes")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--width", type=int, default=None)
    args = parser.parse_args()
    name = args.backend
    if args.width is not None:
        args.backend = wider(args.backend, args.width, tempfile.mkdtemp(prefix="bench-lora-") + "/ldm")
        name = f"{name}, UNet widened to ({args.width}, {2 * args.width}) x 2 layers"
    common = dict(backend=args.backend, data=args.data, labels_per_class=5, batch_size=args.batch)
    lora = build(LoRAFitConfig(**common, rank=args.rank), full=False)
    full = build(TextualInversionFitConfig(**common), full=True)
    idx = torch.arange(args.batch)
    step = {"lora": 0, "full": 0}

    def one(run: AdapterRun, name: str):
        def go():
            run.train_step(idx, step[name])
            step[name] += 1

        return go

    times = interleaved({"lora": one(lora, "lora"), "full": one(full, "full")}, rounds=args.rounds, warmup=2)
    trainable_full = sum(p.numel() for p in full.unet.parameters())
    rows = [{
        "backend": name, "data": f"{args.data} (5 per class)", "batch": args.batch, "rank": args.rank,
        "unet_parameters": lora.unet_base, "lora_parameters": lora.trainable_lora,
        "trainable_share_percent": round(100 * lora.trainable_lora / lora.unet_base, 3),
        "full_trainable": trainable_full,
        "lora_step_ms": round(1000 * times["lora"], 1), "full_step_ms": round(1000 * times["full"], 1),
        "lora_over_full": round(times["lora"] / times["full"], 3),
    }]  # fmt: skip
    report("bench_lora", rows)


if __name__ == "__main__":
    main()
