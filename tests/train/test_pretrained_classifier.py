"""The user's own classifier in the trainer: transformers models from a directory (tiny ResNet and ViT built from
config), a plain nn.Module from Python, the recipes (SGD, warm-up, accumulation, clipping, EMA), batched kornia
augmentation, and the bad inputs that must stop before any training step."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import nn

from latentmix.cli import main
from latentmix.train.classifier import TrainConfig, train_classifier

FAST = TrainConfig(labels_per_class=5, steps=40, eval_every=20, batch_size=32)


@pytest.fixture(scope="module")
def resnet_dir(tmp_path_factory):
    """A tiny transformers ResNet at 32 px with a 4-class head (the digits have 10: the head is re-sized)."""
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16, 16], depths=[1, 1, 1], num_labels=4)
    out = tmp_path_factory.mktemp("resnet")
    ResNetForImageClassification(config).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    """A tiny ViT at 32 px with its image processor (size 32, mean/std 0.5), 10 classes."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=32, num_labels=10)  # fmt: skip
    out = tmp_path_factory.mktemp("vit")
    ViTForImageClassification(config).save_pretrained(out)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(out)
    return str(out)


def test_a_transformers_resnet_fine_tunes_with_its_head_resized_and_saves_for_from_pretrained(resnet_dir, tmp_path):
    from transformers import AutoModelForImageClassification

    from latentmix.classifiers.networks import load_classifier

    out = tmp_path / "saved"
    report = train_classifier(replace(FAST, model=resnet_dir, image_size=16, save_model=str(out)), quiet=True)
    assert report.test["accuracy"] > 0.2  # chance is 0.1: the digits, upscaled to 16 px RGB, are learnt
    model = report.model.eval()
    assert model.net.config.num_labels == 10 and model.spec.channels == 3
    saved = json.loads((out / "config.json").read_text())
    assert saved["id2label"]["3"] == "3" and saved["latentmix"]["temperature"] == pytest.approx(report.temperature)
    x = torch.rand(5, 1, 16, 16) * 2 - 1  # latentmix images: the digits at --image-size 16, grey
    reloaded = AutoModelForImageClassification.from_pretrained(out).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(model.prepare(x)).logits, model(x), atol=1e-5)
        again = load_classifier(out)
        assert torch.allclose(again(x), model(x), atol=1e-5)
    assert again.config["class_names"] == [str(i) for i in range(10)]
    from latentmix.jobs.sources import BlendFilter  # it judges blends (synthesize --filter-classifier DIR)

    judge = BlendFilter(str(out), 0.0, [str(i) for i in range(10)], (1, 8), "digits")
    assert judge.temperature == pytest.approx(report.temperature) and bool(judge.keep(x, torch.eye(10)[:5]).all())
    assert (
        "latentmix train" in (out / "MODEL_CARD.md").read_text()
        or "train_classifier" in (out / "MODEL_CARD.md").read_text()
    )


def test_the_image_processor_sets_size_and_normalisation_and_every_mixing_mode_takes_named_layers(vit_dir):
    from latentmix.classifiers.pretrained import default_layers, load_hf_classifier

    model = load_hf_classifier(vit_dir, [str(i) for i in range(10)])
    assert model.spec.size == 32 and model.spec.mean == (0.5, 0.5, 0.5)
    assert default_layers(model.net) == ["input", "vit.layers.0"]  # found from the module tree
    runs = {
        "none": {},
        "input": {},
        "cutmix": {},
        "manifold": {"manifold_layers": ("input", "vit.layers.1")},
        "adversarial-manifold": {"manifold_layers": ("vit.layers.0",)},
        "saliency": {"saliency_layer": "vit.layers.0"},  # patch tokens as the saliency map
    }
    for mixup, extra in runs.items():
        report = train_classifier(replace(FAST, model=vit_dir, mixup=mixup, steps=20, **extra), quiet=True)
        assert report.steps_run == 20 and torch.isfinite(report.test_logits).all(), mixup
    curriculum = replace(FAST, model=vit_dir, mixup="manifold", depth_curriculum="linear", steps=20)
    assert train_classifier(curriculum, quiet=True).steps_run == 20


def test_resnet_stages_are_the_default_layers(resnet_dir):
    from latentmix.classifiers.pretrained import default_layers, load_hf_classifier

    model = load_hf_classifier(resnet_dir, ["a", "b"])
    assert default_layers(model.net) == ["input", "resnet.encoder.stages.0", "resnet.encoder.stages.1"]
    assert model.manifold_layers[1] == "net.resnet.encoder.stages.0"


def test_a_run_with_every_recipe_resumes_bit_exactly_after_a_kill(resnet_dir, tmp_path, monkeypatch, crash_on_call):
    import latentmix.train.classifier as tc

    config = replace(FAST, model=resnet_dir, optimizer="sgd", lr=0.05, nesterov=True, warmup_steps=5, grad_accum=2,
                     clip_grad=1.0, ema=0.9, image_augment=("crop", "hflip", "erasing"), mixup="manifold")  # fmt: skip
    full = train_classifier(replace(config, checkpoint_dir=str(tmp_path / "a")), quiet=True)
    real = crash_on_call(tc, "soft_cross_entropy", 55)  # step 28 of 40, after the checkpoint at step 20
    with pytest.raises(KeyboardInterrupt):
        train_classifier(replace(config, checkpoint_dir=str(tmp_path / "b")), quiet=True)
    monkeypatch.setattr(tc, "soft_cross_entropy", real)
    resumed = train_classifier(replace(config, checkpoint_dir=str(tmp_path / "b")), quiet=True)
    assert torch.equal(resumed.test_logits, full.test_logits)
    assert train_classifier(replace(config, seed=1), quiet=True).test != full.test


def test_freeze_backbone_trains_the_head_only(resnet_dir):
    from latentmix.classifiers.pretrained import load_hf_classifier

    before = load_hf_classifier(resnet_dir, [str(i) for i in range(10)]).net.state_dict()
    report = train_classifier(replace(FAST, model=resnet_dir, freeze="backbone", steps=20), quiet=True)
    after = report.model.net.state_dict()
    changed = {k for k in after if "num_batches" not in k and not torch.equal(after[k], before[k])}
    assert changed and all(k.startswith("classifier.") or "normalization.running" in k for k in changed)


def test_a_plain_module_trains_from_python_with_its_normalisation():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                        nn.Linear(32, 10))  # fmt: skip
    config = replace(FAST, normalize=(0.5, 0.25), mixup="manifold", manifold_layers=("1",), steps=60)
    report = train_classifier(config, model=net, quiet=True)
    assert report.model.net is net and report.test["accuracy"] > 0.15
    with pytest.raises(ValueError, match="save format"):
        train_classifier(replace(FAST, save_model="unused"), model=nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))


def test_batch_augmentation_is_seeded_batched_and_keeps_the_range():
    from latentmix.data.batch_augment import AUGMENTS, BatchAugment

    x = torch.rand(6, 3, 16, 16) * 2 - 1
    aug = BatchAugment(AUGMENTS, (16, 16))
    a, b = aug(x, torch.Generator().manual_seed(0)), aug(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(a, aug(x, torch.Generator().manual_seed(1)))
    assert a.shape == x.shape and a.min() >= -1 and a.max() <= 1 and not torch.equal(a, x)
    state = torch.get_rng_state()
    grey = BatchAugment(("color-jitter", "crop"), (16, 16))(x[:, :1], torch.Generator().manual_seed(0))
    assert grey.shape == (6, 1, 16, 16) and torch.equal(torch.get_rng_state(), state)  # the global stream untouched


def test_warmup_then_cosine():
    from latentmix.train.recipes import lr_factor

    assert [lr_factor(s, 10, 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 10, 4) == 1.0 and lr_factor(7, 10, 4) == pytest.approx(0.5) and lr_factor(10, 10, 4) == 0.0


def test_synthetic_sets_are_resized_to_the_data_and_must_name_its_classes(tmp_path):
    from latentmix.data.synthetic import SyntheticDataset
    from latentmix.jobs.synthesize import SynthesisConfig, synthesize
    from latentmix.train.classifier_data import load_synthetic

    synthesize(SynthesisConfig(n=16, labels_per_class=5, shard_size=16, out=tmp_path / "syn"), quiet=True)
    names = [str(i) for i in range(10)]
    split = load_synthetic(replace(FAST, synthetic=str(tmp_path / "syn")), names, (3, 20, 20))
    assert split is not None and tuple(split.x.shape) == (16, 3, 20, 20)
    assert SyntheticDataset(tmp_path / "syn").class_names == names
    with pytest.raises(ValueError, match="names class 0 '0', the data 'zero'"):
        load_synthetic(replace(FAST, synthetic=str(tmp_path / "syn")), ["zero", *names[1:]], (1, 8, 8))


def test_the_cli_trains_a_directory_model(resnet_dir, tmp_path, capsys):
    out = tmp_path / "report.json"
    flags = ["--model", resnet_dir, "--labels-per-class", "5", "--steps", "20", "--eval-every", "10"]
    code = main(["--quiet", "train", *flags, "--image-augment", "hflip", "--mixup", "cutmix", "--json", str(out)])
    assert code == 0 and json.loads(out.read_text())["config"]["model"] == resnet_dir


@pytest.fixture(scope="module")
def text_model_dir(tmp_path_factory):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("bert")
    config = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    BertModel(config).save_pretrained(out)
    return str(out)


def test_bad_models_are_one_line_and_exit_2_before_training(resnet_dir, text_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    save = tmp_path / "never"
    misnamed = ["--manifold-layers", "resnet.encoder.stage.1"]
    cases = {
        "no image-classification model": ["--model", text_model_dir],
        "hub cannot be reached": ["--model", "someone/not-cached-model"],
        "nearest: resnet.encoder.stages.1": [*["--model", resnet_dir, "--mixup", "manifold"], *misnamed],
        "no config.json there": ["--model", str(tmp_path)],
    }
    for message, flags in cases.items():
        capsys.readouterr()
        code = main(["--quiet", "train", "--labels-per-class", "5", "--steps", "5", "--save-model", str(save), *flags])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and "\n" not in err, (message, err)
        assert not save.exists()


def test_a_model_that_refuses_the_images_or_returns_the_wrong_shape_stops_before_training():
    wrong_channels = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    with pytest.raises(ValueError, match=r"does not take the data's \(1, 8, 8\) images"):
        train_classifier(FAST, model=wrong_channels, quiet=True)
    with pytest.raises(ValueError, match=r"returns \(2, 7\).*\(2, 10\)"):
        train_classifier(FAST, model=nn.Sequential(nn.Flatten(), nn.Linear(64, 7)), quiet=True)
    with pytest.raises(ValueError, match="normalize applies to a model of your own"):
        train_classifier(replace(FAST, normalize=(0.5, 0.5)), quiet=True)
