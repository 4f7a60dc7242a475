"""Fitting on a user's own folder (issue 17): default fits on 1,000 RGB 32 x 32 captioned photo patches.

    python benchmarks/fit_user_data.py --work /tmp/user-data          # everything (about an hour on 2 cores)
    python benchmarks/fit_user_data.py --work /tmp/user-data --parts measure study

Parts (each reuses what earlier parts left in --work):

* ``data``: ``benchmarks/photo_patches.py`` writes the data set (6 classes, 1,000 train / 300 test);
* ``reference``: ``fit_reference_classifier`` on its train split (the judge; its test accuracy is reported);
* ``fits``: ``fit vae``, ``fit gan`` and ``fit ldm --autoencoder <the VAE>`` with their default settings,
  each timed on this machine (target: within 15 minutes each on 2 cores);
* ``measure``: on the 300 test images, the share of reconstructions the reference classifies as the true
  class (VAE, GAN refined, LDM round trip) and, for the LDM, the share of samples prompted with each class's
  captions (test-split captions, 30 per class) that it classifies as that class; a picture for the README;
* ``study``: ``latentmix compare`` at 5 labels per class, seeds 0-4: ERM, intra-class blends from
  ``--study-backend`` (default: the LDM) and the same blends filtered by the seed's ERM classifier — paired
  differences with intervals.

``--fits vae`` fits only the VAE (``--study-backend vae`` then needs nothing else).

Results go to --work/results.json and are printed as Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from photo_patches import CLASSES, write_photo_patches

from latentmix.backends import load_backend
from latentmix.classifiers.reference import load_reference_classifier
from latentmix.configs import CompareConfig, GANFitConfig, LDMFitConfig, ReferenceFitConfig, TrainConfig, VAEFitConfig
from latentmix.data import load_dataset
from latentmix.train.fit_reference import fit_reference_classifier

PROMPTS_PER_CLASS = 30


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, round(time.perf_counter() - start, 1)


def part_fits(work: Path, data: Path, results: dict, which: list[str]) -> None:
    from latentmix.train.fit_gan import fit_gan
    from latentmix.train.fit_ldm import fit_ldm
    from latentmix.train.fit_vae import fit_vae

    fits = results.setdefault("fits", {})
    for name, run in (
        ("vae", lambda: fit_vae(VAEFitConfig(data=str(data)), work / "vae", quiet=True)),
        ("gan", lambda: fit_gan(GANFitConfig(data=str(data)), work / "gan", quiet=True)),
        ("ldm", lambda: fit_ldm(LDMFitConfig(data=str(data), autoencoder=str(work / "vae")), work / "ldm", quiet=True)),
    ):
        if name not in which or (work / name / "config.json").is_file():
            continue
        result, seconds = timed(run)
        fits[name] = {"wall_seconds": seconds, **{k: v for k, v in result.metrics.items() if not isinstance(v, dict)}}
        print(f"fit {name}: {seconds:.0f} s", flush=True)
        save(work, results)


def _classify(clf, images: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([clf(images[i : i + 256].float()).argmax(1) for i in range(0, len(images), 256)])


def part_measure(work: Path, data: Path, results: dict) -> None:
    clf = load_reference_classifier(work / "reference")
    test = load_dataset(data, split="test")
    x, y = test.images(range(len(test))), test.labels
    measured: dict = {"reference_test_accuracy": float((_classify(clf, x) == y).float().mean())}
    vae, gan, ldm = (load_backend(work / n) for n in ("vae", "gan", "ldm"))
    with torch.inference_mode():
        recon = {"vae": vae.decode(vae.encode(x))}
    recon["gan"] = gan.decode(gan.encode(x, refine_steps=100).detach())
    with torch.inference_mode():
        recon["ldm"] = ldm.reconstruct(x, texts=test.texts, num_inference_steps=50)
        for name, images in recon.items():
            measured[f"{name}_reconstruction_accuracy"] = float((_classify(clf, images) == y).float().mean())
            measured[f"{name}_reconstruction_mse"] = float((images.float() - x).pow(2).mean())
        gen = torch.Generator().manual_seed(0)
        prompts, labels = [], []
        for c in range(len(test.class_names)):
            captions = [t for t, label in zip(test.texts, y.tolist(), strict=True) if label == c]
            prompts += [captions[i % len(captions)] for i in range(PROMPTS_PER_CLASS)]
            labels += [c] * PROMPTS_PER_CLASS
        noise = ldm.sample(len(prompts), generator=gen)
        for guidance in (1.0, 3.0):
            samples = ldm.decode(noise, texts=prompts, guidance_scale=guidance)
            hits = (_classify(clf, samples) == torch.tensor(labels)).float()
            measured[f"ldm_prompted_accuracy_guidance_{guidance:g}"] = float(hits.mean())
            if guidance == 3.0:
                prompted = samples
    results["measure"] = measured
    _picture(work, x, recon, prompted, test.class_names)
    save(work, results)
    print(json.dumps(measured, indent=2), flush=True)


def _picture(work: Path, x, recon, prompted, class_names) -> None:
    """Real test patches over their VAE / GAN / LDM reconstructions, and LDM samples prompted per class."""
    from latentmix.utils.viz import grid_image, save_png

    pick = torch.tensor([next(i for i in range(len(x)) if i % len(class_names) == c) + 6 * j
                         for j in range(2) for c in range(len(class_names))])  # fmt: skip
    rows = [x[pick], recon["vae"][pick], recon["gan"][pick], recon["ldm"][pick]]
    per_class = prompted.reshape(len(class_names), PROMPTS_PER_CLASS, *prompted.shape[1:])[:, :2]
    rows.append(per_class.transpose(0, 1).flatten(0, 1))
    labels = ["real", "VAE", "GAN", "LDM round trip", "LDM prompted"]
    save_png(grid_image(torch.stack(rows), row_labels=labels), work / "user_data_fits.png")


def part_study(work: Path, data: Path, results: dict, seeds: list[int], backend: str) -> None:
    from latentmix.jobs.compare import format_table, run_compare

    base = TrainConfig(data=str(data), labels_per_class=5)
    config = CompareConfig(recipes=("erm", "blends-intra", "blends-intra+filter"), seeds=tuple(seeds),
                           backend=str(work / backend), synthetic_n=1000,
                           workdir=str(work / f"compare-{backend}"))  # fmt: skip
    study = run_compare(replace(config, train=base), quiet=True)
    results.setdefault("study", {})[backend] = study.to_dict()
    save(work, results)
    print(format_table(study), flush=True)


def save(work: Path, results: dict) -> None:
    results["machine"] = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True)
    parser.add_argument("--parts", nargs="+", default=["data", "reference", "fits", "measure", "study"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--fits", nargs="+", default=["vae", "gan", "ldm"], choices=["vae", "gan", "ldm"])
    parser.add_argument(
        "--study-backend",
        default="ldm",
        choices=["vae", "gan", "ldm"],
        help="the model whose intra-class blends the study trains on",
    )
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = json.loads((work / "results.json").read_text()) if (work / "results.json").is_file() else {}
    data = work / "photo-patches"
    if "data" in args.parts and not data.is_dir():
        write_photo_patches(data)
    if "reference" in args.parts and not (work / "reference").is_dir():
        fit = fit_reference_classifier(ReferenceFitConfig(data=str(data)), work / "reference", quiet=True)
        results["reference"] = fit.metrics
        save(work, results)
        print("reference:", fit.metrics, flush=True)
    if "fits" in args.parts:
        part_fits(work, data, results, args.fits)
    if "measure" in args.parts:
        part_measure(work, data, results)
    if "study" in args.parts:
        part_study(work, data, results, args.seeds, args.study_backend)
    print(f"classes: {', '.join(CLASSES)}; results in {work / 'results.json'}")


if __name__ == "__main__":
    main()
