"""The streaming input pipeline: synthetic images decoded per batch by loader workers, the same batches whatever
the number of workers, and an exact resume with workers running ahead."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
import torch

from latentmix.jobs.synthesize import SynthesisConfig, synthesize
from latentmix.train.classifier import TrainConfig, train_classifier
from latentmix.train.classifier_data import LazyImages, load_synthetic

FAST = TrainConfig(labels_per_class=5, steps=40, eval_every=20, batch_size=32)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn") / "set"
    synthesize(SynthesisConfig(n=96, strategy="intra-class", labels_per_class=5, shard_size=32, out=out), quiet=True)
    return str(out)


def test_the_synthetic_set_is_read_lazily(synthetic):
    split = load_synthetic(replace(FAST, synthetic=synthetic), [str(i) for i in range(10)], (1, 8, 8))
    assert split is not None and isinstance(split.x, LazyImages) and len(split.x) == 96
    assert split.x.shape == (96, 1, 8, 8) and split.x[torch.tensor([3, 5])].shape == (2, 1, 8, 8)
    assert torch.equal(split.x[2:4], split.x[torch.tensor([2, 3])])


def test_workers_give_the_same_run_as_the_main_process(synthetic):
    config = replace(FAST, synthetic=synthetic, mixup="input")
    alone = train_classifier(config, quiet=True)
    with_workers = train_classifier(replace(config, workers=2), quiet=True)
    assert torch.equal(alone.test_logits, with_workers.test_logits) and alone.synthetic_examples == 96


def test_the_decode_cache_gives_the_same_run_and_decodes_each_image_once(synthetic, monkeypatch):
    from latentmix.data.synthetic import SyntheticDataset

    decoded: list[int] = []
    real = SyntheticDataset.load_image
    monkeypatch.setattr(SyntheticDataset, "load_image", lambda self, i: decoded.append(int(i)) or real(self, i))
    config = replace(FAST, synthetic=synthetic, synthetic_ratio=0.5)
    cached = train_classifier(config, quiet=True)
    once = list(decoded)
    decoded.clear()
    uncached = train_classifier(replace(config, decode_cache_mb=0), quiet=True)
    assert torch.equal(cached.test_logits, uncached.test_logits)
    # without the cache every draw is decoded (about 16 a step, 40 steps); with it, each image once by the stream
    # (and once more by the trainer's one pass over the set after training)
    assert len(decoded) > 5 * 96 and len(once) == 2 * 96 and set(Counter(once).values()) == {2}


def test_a_streamed_run_resumes_exactly_although_the_loader_ran_ahead(synthetic, tmp_path, monkeypatch, crash_on_call):
    import latentmix.train.classifier as tc

    config = replace(FAST, synthetic=synthetic, workers=2, synthetic_ratio=0.7)
    full = train_classifier(replace(config, checkpoint_dir=str(tmp_path / "a")), quiet=True)
    real = crash_on_call(tc, "soft_cross_entropy", 30)  # after the checkpoint at step 20, the loader ahead of it
    with pytest.raises(KeyboardInterrupt):
        train_classifier(replace(config, checkpoint_dir=str(tmp_path / "b")), quiet=True)
    monkeypatch.setattr(tc, "soft_cross_entropy", real)
    resumed = train_classifier(replace(config, checkpoint_dir=str(tmp_path / "b")), quiet=True)
    assert torch.equal(resumed.test_logits, full.test_logits)


def test_compare_runs_recipes_on_the_users_model(tmp_path):
    from transformers import ResNetConfig, ResNetForImageClassification

    from latentmix.configs import CompareConfig
    from latentmix.jobs.compare import format_table, run_compare

    torch.manual_seed(0)
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=10)
    ResNetForImageClassification(config).save_pretrained(tmp_path / "resnet")
    base = replace(FAST, model=str(tmp_path / "resnet"), steps=20)
    result = run_compare(CompareConfig(recipes=("erm", "cutmix"), seeds=(0, 1), train=base), quiet=True)
    table = format_table(result)
    assert "cutmix" in table and "ece" in table.lower() and "fgsm" in table
