"""Keyframe walks: batched decoding vs one call per frame, exactness at keyframes, and frame spacing.

Run: python benchmarks/bench_walk.py [--quick]
Targets (issue 13):
* a spline walk through 8 keyframes x 60 frames per segment decodes >= 5x faster in batched calls than one
  decoder call per frame on the embedded VAE; frames pass through the keyframes (error <= 1e-5 in latent space);
* even spacing: coefficient of variation of the per-step feature distance <= 0.15 on embedded backends
  (uniform t's value beside it), features of the reference classifier of the backend's data.
"""

from __future__ import annotations

import argparse

import torch
from _timing import best_of, report

from latentmix import load_backend
from latentmix.classifiers.reference import load_reference_classifier
from latentmix.data import load_dataset
from latentmix.jobs.keyframe_walk import decode_keyframe_walk, reference_features
from latentmix.latent.keyframes import keyframe_path

BACKENDS = [  # (backend, data, decode settings)
    ("digits-vae", "digits", {}),
    ("digits-gan", "digits", {}),
    ("digits-ldm", "digits", {"num_inference_steps": 20}),
    ("shapes-vae", "shapes", {}),
    ("shapes-ldm", "shapes", {"num_inference_steps": 20}),
]


def batched_vs_per_frame() -> dict:
    backend = load_backend("digits-vae")
    test = load_dataset("digits", split="test")
    with torch.inference_mode():
        keyframes = backend.encode(test.images(range(8)))[None]  # one path, 8 keyframes
    path = keyframe_path(keyframes, 60, "spline")[0]  # 421 frames
    error = float((path[::60] - keyframes[0]).abs().max())

    def batched():
        return decode_keyframe_walk(backend, keyframes, 60, "spline").images

    def per_frame():
        with torch.inference_mode():
            return torch.cat([backend.decode(keyframe_path(keyframes, 60, "spline")[0, i : i + 1]) for i in range(421)])

    torch.testing.assert_close(batched()[0], per_frame(), atol=1e-5, rtol=0)
    fast, slow = best_of(batched, repeat=10), best_of(per_frame, repeat=3)
    return {
        "case": "spline walk, 8 keyframes x 60 frames (421 frames), digits-vae",
        "batched_s": fast,
        "per_frame_s": slow,
        "result": f"{slow / fast:.1f}x faster; keyframe error {error:.1e}",
        "target": ">= 5x; error <= 1e-5",
    }


def spacing_rows(pairs: int, frames: int, quick: bool) -> list[dict]:
    rows = []
    for name, data, settings in BACKENDS:
        if quick and "ldm" in name:
            continue
        backend = load_backend(name)
        test = load_dataset(data, split="test")
        features = reference_features(load_reference_classifier(f"{data}-classifier"))
        g = torch.Generator().manual_seed(0)
        idx = torch.randint(0, len(test), (2 * pairs,), generator=g).tolist()
        x = test.images(idx)
        cond = backend.condition([test.texts[i] for i in idx])
        with torch.inference_mode():
            z = backend.encode(x, cond=cond, options=backend.call_options(**settings))
        keyframes = z.reshape(2, pairs, *z.shape[1:]).transpose(0, 1)
        conds = None if cond is None else cond.reshape(2, pairs, *cond.shape[1:]).transpose(0, 1)
        for method in ("spline", "lerp") if backend.default_method == "slerp" else ("lerp",):
            walk = decode_keyframe_walk(
                backend, keyframes, frames - 1, method, conds=conds, spacing="even", features=features, **settings
            )
            assert walk.cv is not None and walk.cv_uniform is not None
            rows.append(
                {
                    "backend": name,
                    "path": method if method == "lerp" else "slerp (2 keyframes)",
                    "walks": pairs,
                    "frames": frames,
                    "cv_uniform_mean": float(walk.cv_uniform.mean()),
                    "cv_even_mean": float(walk.cv.mean()),
                    "cv_even_median": float(walk.cv.median()),
                    "cv_even_max": float(walk.cv.max()),
                }
            )
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the latent-diffusion backends")
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--frames", type=int, default=16)
    args = parser.parse_args()
    report("walk_batched", [batched_vs_per_frame()])
    report("walk_spacing", spacing_rows(args.pairs, args.frames, args.quick))


if __name__ == "__main__":
    main()
