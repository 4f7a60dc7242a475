"""Fitting on a user's own folder (issue 17): defaults from the data, no silent digits fallbacks, filtered blends."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace

import pytest
import torch
from PIL import Image

from latentmix.cli import main
from latentmix.configs import LDMFitConfig, SynthesisConfig, TrainConfig, VAEFitConfig
from latentmix.data import load_dataset
from latentmix.train.common import FitWarning, ema_decay, initial_weight_share


def test_the_data_gives_its_own_size_channels_and_labels(photo_patches, tmp_path):
    train = load_dataset(photo_patches, split="train")
    assert (train.image_size, train.channels, train.native_size, len(train)) == (16, 3, 16, 60)
    assert train.class_names == ["astronaut", "cat", "coffee", "face", "rocket", "stars"]
    both = load_dataset(photo_patches, split="all")  # train + test, labels from the metadata (not "train"/"test")
    assert len(both) == 84 and both.class_names == train.class_names
    assert both.ids[0].startswith("train/") and both.ids[-1].startswith("test/")
    assert sorted(set(both.labels.tolist())) == list(range(6))
    # integer labels take their names from class_names.json
    ints = tmp_path / "ints"
    ints.mkdir()
    for i in range(4):
        Image.new("L", (8, 8), 60 * i).save(ints / f"{i}.png")
    (ints / "metadata.jsonl").write_text(
        "".join(json.dumps({"file_name": f"{i}.png", "label": i % 2}) + "\n" for i in range(4))
    )
    (ints / "class_names.json").write_text('["zero", "one"]')
    ds = load_dataset(ints, split="all")
    assert ds.class_names == ["zero", "one"] and ds.labels.tolist() == [0, 1, 0, 1] and ds.channels == 1
    (ints / "class_names.json").write_text('["zero"]')
    with pytest.raises(ValueError, match=r"metadata.jsonl:2: label 1 is outside 0..0"):
        load_dataset(ints, split="all")


def test_a_backend_of_another_shape_is_refused_unless_resize_is_asked(photo_patches, tmp_path, capsys):
    args = ["grid", "--backend", "digits-vae", "--data", str(photo_patches), "--out", str(tmp_path / "g.png")]
    assert main(args) == 2  # digits-vae (1 x 8 x 8) on an RGB 16 x 16 folder
    err = capsys.readouterr().err
    assert "backend 'vae' makes 1-channel 8x8 images but data" in err and "3-channel 16x16" in err and "--resize" in err
    assert main([*args, "--resize"]) == 0 and (tmp_path / "g.png").is_file()
    from latentmix.jobs.synthesize import synthesize

    with pytest.raises(ValueError, match="pass --resize"):
        synthesize(SynthesisConfig(backend="digits-vae", data=str(photo_patches), n=4, out=tmp_path / "s"), quiet=True)
    assert not (tmp_path / "s").exists()


def test_fit_ldm_on_a_folder_needs_an_autoencoder_fitted_on_it(photo_patches, tmp_path):
    from latentmix.train.fit_ldm import fit_ldm

    with pytest.raises(ValueError, match=r"autoencoder: fit ldm --data .* needs an autoencoder fitted on that data"):
        fit_ldm(LDMFitConfig(data=str(photo_patches), steps=2), tmp_path / "ldm", quiet=True)
    with pytest.raises(ValueError, match=r"autoencoder 'digits-vae' makes 1-channel 8x8 images"):
        fit_ldm(LDMFitConfig(data=str(photo_patches), autoencoder="digits-vae", steps=2), tmp_path / "ldm", quiet=True)


def test_vae_defaults_follow_the_data_and_the_run_length():
    from latentmix.train.fit_vae import resolve

    digits = resolve(VAEFitConfig(), 1437, 8, 1)  # the embedded digits-vae's recipe, unchanged
    assert (digits.epochs, digits.kl_warmup_epochs, digits.latent_channels, digits.block_channels) == (
        300,
        20,
        0,
        (32, 64),
    )
    assert digits.layers_per_block == 2
    photos = resolve(VAEFitConfig(data="x"), 1000, 32, 3)  # spatial latents, a run sized for the CPU
    assert (photos.epochs, photos.kl_warmup_epochs, photos.latent_channels) == (100, 7, 4)
    assert photos.block_channels == (32, 64, 128) and photos.layers_per_block == 1
    short = resolve(VAEFitConfig(data="x", epochs=5), 1000, 32, 3)
    assert short.kl_warmup_epochs == 1  # the warm-up shrinks with the run (it was 20 epochs whatever the run)


def test_short_or_mis_set_runs_warn():
    from latentmix.configs import GANFitConfig
    from latentmix.train.fit_gan import convergence_warnings as gan_warnings
    from latentmix.train.fit_ldm import convergence_warnings as ldm_warnings
    from latentmix.train.fit_vae import convergence_warnings as vae_warnings
    from latentmix.train.fit_vae import resolve

    with pytest.warns(FitWarning, match="KL warm-up .* is as long as the run"):
        vae_warnings(replace(VAEFitConfig(), epochs=10, kl_warmup_epochs=10), 1437)
    with pytest.warns(FitWarning, match="few to fit a VAE"):
        vae_warnings(replace(VAEFitConfig(), epochs=5, kl_warmup_epochs=1), 1000)
    with pytest.warns(FitWarning, match="would still be 89 % its random initial weights"):
        gan_warnings(GANFitConfig(epochs=8, batch_size=64, ema_warmup=False), 1000)
    with pytest.warns(FitWarning, match="learning-rate warm-up"):
        ldm_warnings(replace(LDMFitConfig(), steps=100, batch_size=64), 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the defaults do not warn
        vae_warnings(resolve(VAEFitConfig(data="x"), 1000, 32, 3), 1000)
        gan_warnings(GANFitConfig(), 1000)


def test_ema_warm_up_forgets_the_initial_weights_at_once():
    assert ema_decay(0, 0.999) == 0.0 and ema_decay(1, 0.999) == pytest.approx(2 / 11)
    assert ema_decay(100_000, 0.999) == 0.999 and ema_decay(5, 0.999, warmup=False) == 0.999
    assert initial_weight_share(120, 0.999) == 0.0  # a copy at the first step
    assert initial_weight_share(120, 0.999, warmup=False) == pytest.approx(0.999**120)  # 89 %: the GAN


def test_a_users_folder_end_to_end_with_filtered_blends(photo_patches, tmp_path, capsys):
    """fit vae and fit ldm on the folder with its own shape; an ERM classifier saved by train filters blends."""
    from latentmix.backends import load_backend
    from latentmix.data import SyntheticDataset
    from latentmix.jobs.compare import run_compare

    data = str(photo_patches)
    tiny = ["--epochs", "2", "--block-channels", "8", "16", "32", "--latent-channels", "4"]
    assert main(["--quiet", "fit", "vae", "--data", data, *tiny, "--out", str(tmp_path / "vae")]) == 0
    vae = load_backend(tmp_path / "vae")
    assert (vae.image_channels, vae.image_size, vae.latent_shape) == (3, 16, (4, 4, 4))
    assert main(["--quiet", "fit", "ldm", "--data", data, "--autoencoder", str(tmp_path / "vae"), "--steps", "3",
                 "--block-channels", "16", "--cross-attention-dim", "16", "--num-inference-steps", "3",
                 "--out", str(tmp_path / "ldm")]) == 0  # fmt: skip
    assert "latentmix: warning: the learning-rate warm-up" in capsys.readouterr().err
    assert load_backend(tmp_path / "ldm").latent_shape == (4, 4, 4)  # the VAE's spatial map, not a reshaped vector
    base = TrainConfig(data=data, labels_per_class=3, steps=30, eval_every=10)
    assert main(["--quiet", "train", "--data", data, "--labels-per-class", "3", "--steps", "30", "--save-model",
                 str(tmp_path / "erm")]) == 0  # fmt: skip
    config = SynthesisConfig(backend=str(tmp_path / "vae"), data=data, n=24, shard_size=8, labels_per_class=3,
                             filter_classifier=str(tmp_path / "erm"), filter_threshold=0.3)  # fmt: skip
    from latentmix.jobs.synthesize import synthesize

    result = synthesize(replace(config, out=tmp_path / "kept"), quiet=True)
    manifest = json.loads((tmp_path / "kept" / "manifest.json").read_text())
    assert manifest["generated"] == 24 and manifest["filter"]["kept"] == result.num_samples == len(
        SyntheticDataset(tmp_path / "kept")
    )
    assert manifest["filter"]["kept_fraction"] == pytest.approx(result.num_samples / 24, abs=1e-6)
    unfiltered = synthesize(replace(config, filter_classifier=None), quiet=True).samples
    from latentmix.classifiers.networks import load_classifier

    erm = load_classifier(tmp_path / "erm")
    with torch.inference_mode():
        probs = (erm(unfiltered.images.float() / 127.5 - 1) / erm.config.temperature).softmax(1)
    agrees = probs[torch.arange(24), unfiltered.soft_labels.argmax(1)] >= 0.3
    assert [s for s, a in zip(unfiltered.ids, agrees.tolist(), strict=True) if a] == SyntheticDataset(
        tmp_path / "kept"
    ).ids
    recipes = ["erm", "blends-intra", "blends-intra+filter"]
    results = run_compare(train=base, recipes=recipes, seeds=[0], backend=str(tmp_path / "vae"), synthetic_n=16,
                          workdir=str(tmp_path / "cmp"), quiet=True).to_dict()  # fmt: skip
    agreement = results["recipes"]["blends-intra"]["per_seed"][0]["erm_agreement"]
    assert 0 <= agreement <= 1 and set(results["verdicts"]) == {"blends-intra", "blends-intra+filter"}
    assert all(v.startswith(r) for r, v in results["verdicts"].items())
