"""What the explore page does, without the page: endpoints, cached encodings, one-latent decodes, strips,
sheets, blends, edits and exports. :mod:`latentmix.explore.app` only wires these to widgets, so every
number the page shows is a library call that tests can repeat.

* An :class:`Endpoint` is a data set item (by index), an uploaded image (converted like the data loader
  converts files) or, for text-conditioned backends, a prompt with a seed (a prior draw conditioned on it).
* Encodings are cached by endpoint (LRU, shared by every page): moving the slider decodes one latent.
* ``t`` is the position on the walk, 0 at A and 1 at B; λ, the weight of A in a blend, is ``1 - t``.
* Exports land in ``out_dir`` under new names, written atomically; each call returns the paths.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from latentmix.backends import CallOptions, LatentBackend
from latentmix.backends.base import mix_conditions
from latentmix.data import ImageTextDataset
from latentmix.data.images import ImageInfo, ImageTooLarge, image_info, open_image, pil_to_tensor
from latentmix.latent.blend import compose_caption, soft_labels
from latentmix.latent.interpolate import check_method, interpolate, interpolation_grid_2d, interpolation_path
from latentmix.utils import validation
from latentmix.utils.validation import int_at_least, positive_int
from latentmix.utils.viz import grid_image, save_gif, save_png, to_pil, to_uint8

#: Largest upload, in pixels, that the page opens (larger ones are refused with a message).
DEFAULT_MAX_UPLOAD_PIXELS = 16_000_000
#: Frames of a strip, cells of a sheet side, and samples of a "synthesize like this" set: the page's bounds.
MAX_STRIP = 64
MAX_SHEET = 16
MAX_SYNTHESIZE = 5000
DEFAULT_MAX_EXPORT = 10_000  # images a page writes under --out in all (--max-export)
_UNREAD = object()  # a cache not filled yet (None is a value: no reference)
#: Side, in pixels, that shown images are upscaled to at least (nearest neighbour, whole multiples).
DISPLAY_SIDE = 256


@dataclass(frozen=True)
class Endpoint:
    """One end of a walk. ``key`` identifies its encoding in the cache."""

    kind: str  # "data", "upload" or "prompt"
    key: str
    name: str  # what the page shows: "#12 (3)", "photo.png", "seed 0: a red circle"
    label: int | None = None  # class index (data set items)
    text: str = ""  # caption (data), prompt (prompt), "" (upload)
    index: int | None = None  # data set index
    file: Path | None = None  # the converted upload, at the model's size
    seed: int | None = None


def display_scale(size: int, side: int = DISPLAY_SIDE) -> int:
    """Whole-number upscale of a ``size``-pixel image to at least ``side`` pixels."""
    return max(1, -(-side // size))


def display_image(image: Tensor, side: int = DISPLAY_SIDE) -> Image.Image:
    """One (C, H, W) image in [-1, 1] as an RGB PIL image, upscaled by :func:`display_scale` (nearest), so each
    shown pixel block is exactly the decoded pixel."""
    pil = to_pil(to_uint8(image[None])[0]).convert("RGB")
    scale = display_scale(image.shape[-1], side)
    return pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST) if scale > 1 else pil


class Explorer:
    """A backend (and optionally a data set) ready for interactive walks; safe to share between pages.

    Args:
        backend: any loaded backend.
        dataset: endpoints by index come from it (converted to the backend's shape), or None.
        out_dir: where exports are written.
        backend_spec / data_spec: the names ``synthesize`` and ``walk`` load them by (embedded name or path).
        max_upload_pixels: uploads larger than this are refused.
        max_export: the most images (frames, strip and sheet cells, walk frames, synthetic samples, uploads) the
            page writes under ``out_dir`` in all; an export past it is refused, naming ``--max-export``.
        cache_size: encodings kept.
        options: the backend's call options (:class:`~latentmix.backends.CallOptions`: a diffusion backend's
            steps and guidance, a GAN's refinement steps; default: the backend's job defaults).
    """

    def __init__(
        self,
        backend: LatentBackend,
        dataset: ImageTextDataset | None = None,
        *,
        out_dir: str | os.PathLike = "explore-out",
        backend_spec: str | None = None,
        data_spec: str | None = None,
        split: str = "test",
        max_upload_pixels: int = DEFAULT_MAX_UPLOAD_PIXELS,
        max_export: int = DEFAULT_MAX_EXPORT,
        cache_size: int = 256,
        options: CallOptions | None = None,
    ):
        self.backend = backend.eval()
        self.dataset = dataset
        self.out_dir = Path(out_dir)
        self.backend_spec = backend_spec
        self.data_spec = data_spec
        self.split = split
        self.max_upload_pixels = positive_int(max_upload_pixels, "max_upload_pixels")
        self.cache_size = positive_int(cache_size, "cache_size")
        self.max_export = positive_int(max_export, "max_export")
        self.exported = 0  # images written under out_dir so far, by every visitor
        self.options = backend.call_options(options)
        #: the sampler settings the page's walks and synthetic sets inherit
        self.sampling = {
            k: v for k, v in self.options.given().items() if k in ("num_inference_steps", "guidance_scale")
        }
        self._cache: OrderedDict[str, tuple[Tensor, Tensor | None]] = OrderedDict()
        self._train: tuple[Tensor, ImageTextDataset] | None = None  # what attribute edits average over
        self._judge: Any = _UNREAD  # the reference that reads an image's factors for its matched direction
        self._lock = threading.Lock()
        self._counter = itertools.count()
        self.encodes = 0  # encoder calls made (cache misses), for tests and the latency report
        self.decodes = 0  # latents decoded

    # -- endpoints ---------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return list(self.dataset.class_names) if self.dataset is not None else []

    def indices(self, class_name: str | None = None, limit: int = 48) -> list[int]:
        """Data set indices to show as thumbnails: the first ``limit`` of a class (or of the whole set)."""
        if self.dataset is None:
            return []
        if class_name:
            return [int(i) for i in self.dataset.indices_of_class(class_name)[:limit]]
        return list(range(min(limit, len(self.dataset))))

    def thumbnails(self, class_name: str | None = None, limit: int = 48) -> list[tuple[Image.Image, str]]:
        """(small image, "#index") for :meth:`indices`."""
        shown = self.indices(class_name, limit)
        if self.dataset is None or not shown:
            return []
        return [(display_image(x, side=64), f"#{i}") for i, x in zip(shown, self.dataset.images(shown), strict=True)]

    def from_index(self, index: int | float) -> Endpoint:
        if self.dataset is None:
            raise ValueError("index: this page has no data set (start it with --data)")
        index = _whole(index, "index")
        if not 0 <= index < len(self.dataset):
            raise ValueError(f"index {index} is out of range: the {self.split} split has {len(self.dataset)} items")
        label = int(self.dataset.labels[index])
        named = label >= 0 and self.dataset.class_names
        name = f"#{index}" + (f" ({self.dataset.class_names[label]})" if named else "")
        return Endpoint("data", f"data:{self.split}:{index}", name, label if label >= 0 else None,
                        self.dataset.texts[index], index=index)  # fmt: skip

    def from_upload(self, path: str | os.PathLike, name: str | None = None) -> Endpoint:
        """An uploaded image, converted to the backend's size and channels like the data loader converts files
        (centre square crop, resize); refused above ``max_upload_pixels`` or when it is not an image."""
        path = Path(path)
        shown = name or path.name
        try:
            info = image_info(path)
        except ImageTooLarge as bomb:  # its header claims more than latentmix opens at all
            info = ImageInfo(bomb.width, bomb.height, "")
        except ValueError:
            raise ValueError(f"upload: {shown} is not an image latentmix can read") from None
        if info.width * info.height > self.max_upload_pixels:
            raise ValueError(
                f"upload: {shown} is {info.width} x {info.height} = {info.width * info.height:,} pixels, above the "
                f"page's limit of {self.max_upload_pixels:,} (--max-upload-pixels; a decompression bomb?)"
            )
        try:
            with open_image(path) as image:
                x = pil_to_tensor(image, self.backend.image_size, self.backend.image_channels)
        except ValueError:
            raise ValueError(f"upload: {shown} is not an image latentmix can read") from None
        pixels = to_uint8(x[None])[0]
        digest = hashlib.sha256(pixels.tobytes()).hexdigest()[:16]
        file = self.out_dir / "uploads" / f"{digest}.png"
        if not file.is_file():
            self._spend(1, "upload")
            save_png(to_pil(pixels), file)
        return Endpoint("upload", f"upload:{digest}", shown, file=file)

    def from_prompt(self, prompt: str, seed: int | float = 0) -> Endpoint:
        """A prior draw (``seed``) conditioned on ``prompt``: text-conditioned backends only."""
        if not self.backend.supports_text_condition:
            raise ValueError(f"prompt: backend {self.backend.backend_name!r} is not text-conditioned")
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be text, got {type(prompt).__name__}")
        seed = validation.seed(_whole(seed, "seed"))
        return Endpoint("prompt", f"prompt:{seed}:{prompt}", f"seed {seed}: {prompt or '(no prompt)'}",
                        text=prompt, seed=seed)  # fmt: skip

    def image(self, endpoint: Endpoint) -> Tensor:
        """The endpoint's own image (C, H, W): the data item or the converted upload; prompts have none."""
        if endpoint.kind == "data":
            assert self.dataset is not None and endpoint.index is not None
            return self.dataset.images([endpoint.index])[0]
        if endpoint.kind == "upload":
            assert endpoint.file is not None
            with open_image(endpoint.file) as image:
                return pil_to_tensor(image, self.backend.image_size, self.backend.image_channels)
        raise ValueError(f"{endpoint.name} is a prompt: it has no image of its own")

    # -- encodings ----------------------------------------------------------------------------
    def condition(self, endpoint: Endpoint) -> Tensor | None:
        return self.backend.condition([endpoint.text]) if self.backend.supports_text_condition else None

    def latent(self, endpoint: Endpoint) -> tuple[Tensor, Tensor | None]:
        """(latent (1, *latent_shape), conditioning or None) of an endpoint, from the cache when it is there."""
        with self._lock:
            if endpoint.key in self._cache:
                self._cache.move_to_end(endpoint.key)
                return self._cache[endpoint.key]
        cond = self.condition(endpoint)
        if endpoint.kind == "prompt":
            z = self.backend.sample(1, generator=torch.Generator().manual_seed(int(endpoint.seed or 0)))
        else:
            x = self.image(endpoint)[None]
            with torch.inference_mode(self.backend.encoder_kind != "inversion"):
                z = self.backend.encode(x, cond=cond, options=self.options).detach()
            self.encodes += 1
        with self._lock:
            self._cache[endpoint.key] = (z, cond)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return z, cond

    def _decode(self, z: Tensor, cond: Tensor | None) -> Tensor:
        with torch.inference_mode():
            images = self.backend.decode(z, cond=cond, options=self.options).float().cpu()
        self.decodes += len(z)
        return images

    # -- walks --------------------------------------------------------------------------------
    def frame(self, a: Endpoint, b: Endpoint, t: float, method: str = "slerp") -> Tensor:
        """The decoded point at ``t`` (0: A, 1: B) of the walk from A to B: one latent decoded, (C, H, W)."""
        check_method(method)
        t = _position(t)
        (za, ca), (zb, cb) = self.latent(a), self.latent(b)
        z = interpolate(za, zb, t, method)
        return self._decode(z, mix_conditions(ca, cb, t, "lerp"))[0]

    def strip(self, a: Endpoint, b: Endpoint, frames: int, method: str = "slerp") -> Tensor:
        """``frames`` evenly spaced points of the walk, decoded in one batched call: (frames, C, H, W)."""
        check_method(method)
        frames = _bounded(frames, "frames", 2, MAX_STRIP)
        (za, ca), (zb, cb) = self.latent(a), self.latent(b)
        z = interpolation_path(za, zb, frames, method)[0]
        cond = None if ca is None or cb is None else interpolation_path(ca, cb, frames, "lerp")[0]
        return self._decode(z, cond)

    def sheet(self, corners: list[Endpoint], rows: int, cols: int, method: str = "slerp") -> Tensor:
        """A 2-D sheet between four corners (top left, top right, bottom left, bottom right): (rows, cols, C, H, W)."""
        check_method(method)
        if len(corners) != 4:
            raise ValueError(f"corners: a sheet needs four endpoints (A, B, C, D), got {len(corners)}")
        rows, cols = _bounded(rows, "rows", 2, MAX_SHEET), _bounded(cols, "cols", 2, MAX_SHEET)
        encoded = [self.latent(c) for c in corners]
        (z_tl, _), (z_tr, _), (z_bl, _), (z_br, _) = encoded
        z = interpolation_grid_2d(z_tl, z_tr, z_bl, z_br, rows, cols, method)[0]
        conds = [e[1] for e in encoded]
        cond = None
        if all(c is not None for c in conds):
            tl, tr, bl, br = (c for c in conds if c is not None)
            cond = interpolation_grid_2d(tl, tr, bl, br, rows, cols, "lerp")[0].flatten(0, 1)
        images = self._decode(z.flatten(0, 1), cond)
        return images.reshape(rows, cols, *images.shape[1:])

    def blend_info(self, a: Endpoint, b: Endpoint, t: float) -> dict[str, Any]:
        """What a paired blend at ``t`` carries: λ (weight of A), the blended caption and the soft label."""
        lam = 1.0 - _position(t)
        info: dict[str, Any] = {"lam": lam}
        if a.text or b.text:
            info["caption"] = compose_caption(a.text or a.name, b.text or b.name, lam)
        if a.label is not None and b.label is not None and self.class_names:
            k = len(self.class_names)
            one = torch.eye(k)
            soft = soft_labels(one[[a.label]], one[[b.label]], torch.tensor([lam]))[0]
            info["soft_label"] = {self.class_names[i]: round(float(p), 4) for i, p in enumerate(soft) if p > 0}
        return info

    # -- attribute arithmetic ----------------------------------------------------------------------
    def factors(self) -> dict[str, list[str]]:
        """Factors an edit can move (the class, and the data's known factors) with their values."""
        if self.dataset is None:
            return {}
        out = {"label": self.class_names}
        out.update(self.dataset.factor_values or {})
        return out

    def edit(self, endpoint: Endpoint, factor: str, source: str, target: str, strength: float = 1.0) -> Tensor:
        """Move the endpoint along ``factor: source → target`` as ``latentmix edit`` does: along its matched direction
        (between the train latents of each value nearest to it among those sharing the other factors the reference
        reads off it), or the mean difference over the train latents where the data has no reference; returns
        (2, C, H, W): its reconstruction and the edit."""
        from latentmix.configs import EDIT_NEIGHBOURS
        from latentmix.jobs.attributes import attribute_direction, edit_images, matched_directions, predict_factors

        if endpoint.kind == "prompt":
            raise ValueError("edit: pick an image endpoint (data set item or upload) as A")
        if self.dataset is None or self.data_spec is None:
            raise ValueError("edit: attribute arithmetic needs the data set (start the page with --data)")
        if source == target:
            raise ValueError(f"edit: the target is the source value ({source}); pick another")
        z, labelled = self._train_latents()
        direction = attribute_direction(z, labelled, factor, source, target)
        image = self.image(endpoint)[None]
        move: Any = direction
        reference = self._reference()
        if reference is not None:
            read = predict_factors(reference, image, list(labelled.factor_values or {}))

            def move(latents: Tensor) -> list:
                return matched_directions(z, labelled, factor, source, target, read, latents, EDIT_NEIGHBOURS)

        recon, edited = edit_images(self.backend, image, move, float(strength), options=self.options)
        return torch.cat([recon, edited]).float().cpu()

    def _train_latents(self) -> tuple[Tensor, ImageTextDataset]:
        """Latents of train items the directions average over, encoded once per page: as many as ``latentmix edit``
        takes (10,000) for one-pass encoders, 500 where encoding inverts (a GAN's refinement, DDIM inversion)."""
        from latentmix.configs import EditConfig
        from latentmix.data import load_dataset
        from latentmix.jobs.attributes import labelled_latents

        if self._train is None:
            assert self.data_spec is not None
            train = load_dataset(self.data_spec, split="train", image_size=self.backend.image_size,
                                 channels=self.backend.image_channels)  # fmt: skip
            count = EditConfig.direction_samples if self.backend.encoder_kind == "amortized" else 500
            latents = labelled_latents(self.backend, train, count, options=self.options)
            with self._lock:
                self._train = self._train or latents
        return self._train

    def _reference(self) -> Any:
        """The data's embedded reference classifier, which reads an image's factors for its matched direction
        (None for data without one: the mean difference is used)."""
        from latentmix.classifiers.reference import DEFAULT_REFERENCES, load_reference_classifier

        if self._judge is _UNREAD:
            name = DEFAULT_REFERENCES.get(str(self.data_spec))
            reference = load_reference_classifier(name) if name is not None else None
            if reference is not None and not getattr(reference, "factors", None):
                reference = None  # a class head only: nothing to match the other factors on
            self._judge = reference
        return self._judge

    # -- exports ----------------------------------------------------------------------------------
    def _new_path(self, stem: str, suffix: str) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        while True:
            path = self.out_dir / f"{stem}-{stamp}-{next(self._counter):03d}{suffix}"
            if not path.exists():
                return path

    def _spend(self, images: int, what: str) -> None:
        """Count ``images`` against the page's export quota, or refuse the export (nothing is written)."""
        with self._lock:
            if self.exported + images > self.max_export:
                left = self.max_export - self.exported
                raise ValueError(
                    f"{what}: {images:,} more images would pass this page's export quota of {self.max_export:,} "
                    f"(--max-export; {left:,} left)"
                )
            self.exported += images

    def save_frame(self, image: Tensor) -> Path:
        """The current frame as a PNG at the model's resolution."""
        self._spend(1, "frame")
        return save_png(to_pil(to_uint8(image[None])[0]), self._new_path("frame", ".png"))

    def save_strip(self, frames: Tensor, *, fps: float = 12.0, video: str | None = "mp4") -> dict[str, Path]:
        """A strip (T, C, H, W) as a PNG row, a ping-pong GIF and (``video``: mp4 / webm, None: none) a video."""
        self._spend(len(frames), "strip")
        stem = self._new_path("strip", "")
        out = {"png": save_png(grid_image(frames[None]), stem.with_suffix(".png"))}
        out["gif"] = save_gif(frames[:, None], stem.with_suffix(".gif"), duration_ms=round(1000 / fps))
        if video:
            from latentmix.utils.video import save_video

            out[video] = save_video(to_uint8(frames), stem.with_suffix(f".{video}"), fps=fps)
        return out

    def save_sheet(self, sheet: Tensor) -> Path:
        self._spend(int(sheet.shape[0] * sheet.shape[1]), "sheet")
        return save_png(grid_image(sheet), self._new_path("sheet", ".png"))

    def synthesize_like(self, a: Endpoint, b: Endpoint, t: float, method: str, n: int = 64, *, quiet: bool = True):
        """A paired set like the current blend: ``n`` samples of the classes of A and B (intra-class when they
        share one, else inter-class between the two), λ fixed at the current weight of A, the current
        interpolator. Returns the :class:`~latentmix.jobs.synthesize.SynthesisResult`."""
        from latentmix.configs import SynthesisConfig
        from latentmix.jobs.synthesize import synthesize

        if a.label is None or b.label is None or self.data_spec is None:
            raise ValueError("synthesize: pick A and B from the data set, so the set knows which classes to blend")
        n = _bounded(n, "n", 1, MAX_SYNTHESIZE)
        self._spend(n, "synthesize")
        config = SynthesisConfig(backend=self.backend_spec, data=self.data_spec, split="train", n=n,
                                 lam=round(1.0 - _position(t), 6), method=check_method(method),
                                 strategy="intra-class" if a.label == b.label else "inter-class",
                                 class_pairs=None if a.label == b.label else ((a.label, b.label),))  # fmt: skip
        config = replace(config, out=str(self._new_path("synthetic", "")), **self.sampling)
        return synthesize(config, quiet=quiet)

    def keyframe_walk(self, endpoints: list[Endpoint], frames: int, method: str, spacing: str, closed: bool = False):
        """``latentmix walk`` through data set items and uploads, written (frames, GIF, MP4, manifest) to a new
        folder; returns the :class:`~latentmix.jobs.walk.WalkResult`."""
        from latentmix.configs import WalkConfig
        from latentmix.jobs.walk import walk

        if len(endpoints) < 2:
            raise ValueError("keyframes: a walk needs at least two keyframes")
        specs = []
        for e in endpoints:
            if e.kind == "prompt":
                raise ValueError(f"keyframes: {e.name} is a prompt; keyframe walks go through images")
            specs.append(str(e.index) if e.kind == "data" else str(e.file))
        features = "reference" if self.data_spec in ("digits", "shapes") else "pixels"
        data = self.data_spec or "digits"  # only read for data set indices, which need a data set
        frames = _bounded(frames, "frames", 1, 120)
        self._spend((len(specs) if closed else len(specs) - 1) * frames + 1, "keyframe walk")
        config = WalkConfig(backend=self.backend, keyframes=tuple(specs), frames=frames, method=method,
                            spacing=spacing, closed=bool(closed), data=data, split=self.split,
                            features=features, fps=12.0, out=str(self._new_path("walk", "")),
                            **self.sampling)  # fmt: skip
        return walk(config)


def _position(t: Any) -> float:
    try:
        t = float(t)
    except (TypeError, ValueError):
        raise TypeError(f"t must be a number, got {t!r}") from None
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must be in [0, 1] (0: A, 1: B), got {t:g}")
    return t


def _whole(value: Any, name: str) -> int:
    """A page's number field as an int: a whole int or float (the page sends 3.0), never rounded from 1.5."""
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _bounded(value: Any, name: str, low: int, high: int) -> int:
    value = int_at_least(int(value) if isinstance(value, float) and value.is_integer() else value, name, low)
    if value > high:
        raise ValueError(f"{name} must be at most {high}, got {value}")
    return value


__all__ = ["DEFAULT_MAX_UPLOAD_PIXELS", "Endpoint", "Explorer", "display_image", "display_scale"]
