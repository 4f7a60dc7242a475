"""The trainer's input pipeline and recipes on the user's model (issue 29), each a ratio measured in one run.

Run: python benchmarks/bench_train_pipeline.py [--skip-rss]
Targets:
* batched augmentation (kornia, one call per transform for the batch) >= 5x faster than the same transforms applied
  image by image in a loop (batch 128, 32 px RGB: crop, hflip, color-jitter, erasing; and TrivialAugment);
* step time on a transformers ResNet-shaped model (ResNetForImageClassification, 3 basic stages of 32/64/128
  channels, 32 px, batch 128) behind latentmix's input conversion: input mixup <= 1.10x, CutMix <= 1.10x, manifold
  mixup (the default layers: input and the first two stages) <= 1.15x a plain step;
* the streaming loader (2,000 synthetic digits decoded per batch by 2 workers, synthetic ratio 0.5) keeps a
  training step within 1.2x of the same steps on in-memory tensors;
* peak RSS of ``latentmix train`` with a 20,000-sample synthetic set <= 1.15x the peak with 2,000 (the sets are made
  by ``latentmix synthesize`` with the embedded digits VAE; 100 steps each, in fresh processes).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from _timing import best_of, report

from latentmix.classifiers.pretrained import ImageClassifier
from latentmix.configs import TrainConfig
from latentmix.data.batch_augment import BatchAugment
from latentmix.train.classifier import _make_step


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
    x, y = torch.rand(128, 3, 32, 32, generator=gen) * 2 - 1, torch.randint(0, 10, (128,), generator=gen)
    times = {}
    for mixup in ("none", "input", "cutmix", "manifold"):
        model = resnet()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        loss_of = _make_step(TrainConfig(mixup=mixup), model, model, 10, torch.Generator().manual_seed(0))

        def step(loss_of=loss_of, model=model, opt=opt):
            opt.zero_grad(set_to_none=True)
            loss_of(x, y, None).backward()
            opt.step()

        times[mixup] = best_of(step, repeat=15, warmup=3)
    targets = {"input": 1.10, "cutmix": 1.10, "manifold": 1.15}
    return [{"mixup": m, "step_ms": 1e3 * times[m], "vs_plain": times[m] / times["none"],
             "target": f"<= {targets[m]:.2f}x" if m in targets else "-"} for m in times]  # fmt: skip


def _synthetic_set(out: Path, n: int) -> str:
    command = [sys.executable, "-m", "latentmix", "--quiet", "synthesize", "--backend", "digits-vae", "-n", str(n),
               "--out", str(out)]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return str(out)


def loader_rows(synthetic: str) -> list[dict]:
    """Training steps with the synthetic set streamed (2 workers) vs the same set as in-memory tensors."""
    from latentmix.train import classifier as tc
    from latentmix.train.classifier_data import LazyImages

    base = TrainConfig(labels_per_class=5, steps=300, eval_every=300, batch_size=64, synthetic=synthetic,
                       patience=100)  # fmt: skip
    real_load = tc.load_synthetic

    def in_memory(*args, **kwargs):
        split = real_load(*args, **kwargs)
        if split is not None and isinstance(split.x, LazyImages):
            split.x = split.x[0 : len(split.x)]
        return split

    def run(config, loader) -> float:
        tc.load_synthetic = loader
        try:
            start = time.perf_counter()
            tc.train_classifier(config, quiet=True)
            return time.perf_counter() - start
        finally:
            tc.load_synthetic = real_load

    memory = min(run(base, in_memory) for _ in range(2))
    streamed = min(run(replace(base, workers=2), real_load) for _ in range(2))
    return [{"synthetic": "2,000 digits, ratio 0.5", "in_memory_s": memory, "streamed_2_workers_s": streamed,
             "ratio": streamed / memory, "target": "<= 1.2x"}]  # fmt: skip


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
