"""The trainer's input pipeline and recipes on the user's model (issue 29), each a ratio measured in one run.

Run: python benchmarks/bench_train_pipeline.py [--skip-rss]
Targets:
* batched augmentation (kornia, one call per transform for the batch) >= 5x faster than the same transforms applied
  image by image in a loop (batch 128, 32 px RGB: crop, hflip, color-jitter, erasing; and TrivialAugment);
* step time on a transformers ResNet-shaped model (ResNetForImageClassification, 3 basic stages of 32/64/128
  channels, 32 px, batch 128) behind latentmix's input conversion: input mixup <= 1.10x, CutMix <= 1.10x, manifold
  mixup (the default layers: input and the first two stages) <= 1.15x a plain step;
* the streaming loader (2,000 synthetic digits decoded per batch by 2 workers, synthetic ratio 0.5) keeps a
  training step of the ResNet-shaped model within 1.2x of the same steps on in-memory tensors (measured as the
  marginal step time; the default SmallCNN, whose step costs less than decoding its images, is a second row) —
  with each process's decode cache (``--decode-cache-mb``, the default 512) and without it (every draw decoded);
* peak RSS of ``latentmix train`` with a 20,000-sample synthetic set <= 1.15x the peak with 2,000 (the sets are made
  by ``latentmix synthesize`` with the embedded digits VAE; 100 steps each, in fresh processes).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _timing import best_of, interleaved, report

from latentmix.classifiers.pretrained import ImageClassifier
from latentmix.configs import TrainConfig
from latentmix.data.batch_augment import BatchAugment
from latentmix.train.classifier import _make_step
from latentmix.train.mixup import soft_targets


def augmentation_rows() -> list[dict]:
    x = torch.rand(128, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    rows = []
    for names in (("crop", "hflip", "color-jitter", "erasing"), ("trivialaugment",)):
        aug = BatchAugment(names, (32, 32))
        batched = best_of(lambda aug=aug: aug(x, torch.Generator().manual_seed(0)), repeat=5)
        looped = best_of(lambda aug=aug: aug.one_by_one(x, torch.Generator().manual_seed(0)), repeat=2)
        rows.append({"transforms": " + ".join(names), "batched_ms": 1e3 * batched, "per_image_loop_ms": 1e3 * looped,
                     "speedup": looped / batched, "target": ">= 5x"})  # fmt: skip
    return rows


def resnet() -> ImageClassifier:
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(num_channels=3, embedding_size=32, hidden_sizes=[32, 64, 128], depths=[1, 1, 1],
                          layer_type="basic", num_labels=10)  # fmt: skip
    return ImageClassifier(ResNetForImageClassification(config))


def step_rows() -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(128, 3, 32, 32, generator=gen) * 2 - 1
    y = soft_targets(torch.randint(0, 10, (128,), generator=gen), 10)  # the trainer's batches carry soft targets
    steps = {}
    for mixup in ("none", "input", "cutmix", "manifold"):
        model = resnet()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        loss_of = _make_step(TrainConfig(mixup=mixup), model, model, 10, torch.Generator().manual_seed(0))

        def step(loss_of=loss_of, model=model, opt=opt):
            opt.zero_grad(set_to_none=True)
            loss_of(x, y, None).backward()
            opt.step()

        steps[mixup] = step
    times = interleaved(steps, rounds=40, warmup=3)  # one step of each in turn: the machine's drift falls on all
    targets = {"input": 1.10, "cutmix": 1.10, "manifold": 1.15}
    return [{"mixup": m, "step_ms": 1e3 * times[m], "vs_plain": times[m] / times["none"],
             "target": f"<= {targets[m]:.2f}x" if m in targets else "-"} for m in times]  # fmt: skip


def _synthetic_set(out: Path, n: int) -> str:
    command = [sys.executable, "-m", "latentmix", "--quiet", "synthesize", "--backend", "digits-vae", "-n", str(n),
               "--out", str(out)]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return str(out)


LOADER_MODELS = {
    "ResNet-shaped (benchmarks/transfer/resnet-tiny, 32 px RGB)": {
        "model": str(Path(__file__).parent / "transfer" / "resnet-tiny"), "init": "scratch"},
    "SmallCNN (the default, 8 px)": {},
}  # fmt: skip


def loader_rows(synthetic: str, steps: int = 200, blocks: int = 3, workers: int = 2) -> list[dict]:
    """The trainer's step (its batch drawn, then forward, backward, update) with the synthetic set streamed by
    a ``BatchStream`` of 2 workers vs drawn from the same set as in-memory tensors. Both streams stay open: blocks
    of ``steps`` steps alternate between them, after a warm-up block each, and the median block is kept, so the
    workers' start-up is not counted (it is a one-off cost, reported on its own). Once with the workers' decode
    cache at the trainer's default (after the warm-up block most images were decoded once already) and once
    without (every draw decoded: a set far larger than the cache)."""
    from latentmix.train.batches import Batches, BatchStream
    from latentmix.train.classifier import _build_model
    from latentmix.train.classifier_data import Split, load_data, load_synthetic

    rows = []
    for (name, model), cache_mb in ((m, c) for m in LOADER_MODELS.items() for c in (TrainConfig.decode_cache_mb, 0)):
        config = TrainConfig(labels_per_class=5, batch_size=64, synthetic=synthetic, **model)
        data = load_data(config)
        syn = load_synthetic(config, data.class_names, tuple(data.train.x.shape[1:]))
        assert syn is not None
        held = Split(syn.x[0 : len(syn.x)], syn.y, syn.t)
        torch.manual_seed(0)
        net = _build_model(config, data)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        loss_of = _make_step(config, net, net, data.num_classes, torch.Generator().manual_seed(0))

        def step(batch, loss_of=loss_of, opt=opt):
            x, y, t = batch
            opt.zero_grad(set_to_none=True)
            loss_of(x, y, t).backward()
            opt.step()

        memory = Batches(config, data.train, held, data.num_classes, torch.Generator().manual_seed(0))
        start = time.perf_counter()
        stream = BatchStream(Batches(config, data.train, syn, data.num_classes, torch.Generator().manual_seed(0)),
                             (blocks + 1) * steps, workers=workers, cache_bytes=cache_mb * 2**20)  # fmt: skip
        step(stream())
        startup = time.perf_counter() - start
        draw = {"memory": memory, "streamed": stream}
        times: dict[str, list[float]] = {"memory": [], "streamed": []}
        for block in range(blocks + 1):
            for mode, next_batch in draw.items():
                start = time.perf_counter()
                for _ in range(steps - (mode == "streamed" and block == 0)):
                    step(next_batch())
                if block:  # the first block of each warms up
                    times[mode].append((time.perf_counter() - start) / steps)
        stream.close()
        mem, streamed = (sorted(times[m])[len(times[m]) // 2] for m in ("memory", "streamed"))
        rows.append({"model": name, "synthetic": "2,000 digits, ratio 0.5, batch 64", "decode_cache_mb": cache_mb,
                     "step_in_memory_ms": 1e3 * mem, "step_streamed_ms": 1e3 * streamed,
                     "ratio": streamed / mem, "workers_startup_s": startup, "target": "<= 1.2x"})  # fmt: skip
    return rows


def _peak_rss_mb(synthetic: str) -> float:
    code = ("import resource, sys; from latentmix.cli import main; "
            "main(['--quiet', 'train', '--steps', '100', '--eval-every', '100', '--labels-per-class', '5', "
            f"'--synthetic', {synthetic!r}]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1]) / 1024


def rss_rows(small: str, large: str) -> list[dict]:
    a, b = _peak_rss_mb(small), _peak_rss_mb(large)
    return [{"train --synthetic": "2,000 vs 20,000 samples", "peak_rss_2k_mb": a, "peak_rss_20k_mb": b,
             "ratio": b / a, "target": "<= 1.15x"}]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-rss", action="store_true", help="skip the 20,000-sample set (a few minutes)")
    args = parser.parse_args()
    report("train_augment", augmentation_rows())
    report("train_step", step_rows())
    with tempfile.TemporaryDirectory() as tmp:
        small = _synthetic_set(Path(tmp) / "syn2k", 2000)
        report("train_loader", loader_rows(small))
        if not args.skip_rss:
            report("train_rss", rss_rows(small, _synthetic_set(Path(tmp) / "syn20k", 20000)))


if __name__ == "__main__":
    main()
