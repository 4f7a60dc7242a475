"""Check a backend against the contract — latentmix's ``check_estimator``.

Anyone who writes a backend (a subclass of :class:`~latentmix.backends.LatentBackend`, registered with
``@register_backend("name")``) runs this in their tests::

    from latentmix.testing import check_backend

    def test_my_backend_follows_the_contract(tmp_path):
        check_backend(MyBackend(...), tmp_dir=tmp_path)

Each check raises ``AssertionError`` naming itself and what failed (:data:`BACKEND_CHECKS` lists them, to
run or parametrize one at a time). latentmix runs every check over a tiny instance of every registered
backend class (``tests/test_testing.py``). The checks:

* ``capabilities``: the capability attributes are of the documented kinds, and the class is registered;
* ``shapes``: encode / decode / reconstruction_error return the documented shapes, finite, in range;
* ``dtype_and_device``: inputs of another float dtype are accepted; outputs are in the backend's dtype and
  device, and follow ``backend.to(dtype=...)``;
* ``prior``: ``sample`` honours an explicit generator (same seed, same latents) where ``latent_prior`` says
  there is a prior, and refuses where it says there is none;
* ``text_condition``: ``supports_text_condition`` / ``requires_text`` match what encode, decode and
  ``condition`` do;
* ``determinism``: the same call twice gives the same result;
* ``batched_equals_per_item``: a batch gives what its items give one at a time (and chunking by
  ``batch_size`` changes nothing);
* ``posterior``: ``encode_distribution`` returns the posterior's mean (what ``encode`` returns for an
  amortized encoder) and a non-negative std or None;
* ``save_load_round_trip``: ``save_pretrained`` then ``load_backend`` gives the same class and the same outputs;
* ``refuses_pickles`` and ``loads_whole_or_not_at_all``: a save whose weights are pickles, or lack a tensor,
  is refused with ``ValueError``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from latentmix.backends import CallOptions, LatentBackend, is_backend, load_backend, registered_backends
from latentmix.backends.base import ENCODER_KINDS
from latentmix.latent.choices import METHODS

__all__ = ["BACKEND_CHECKS", "Probe", "check_backend"]


@dataclass
class Probe:
    """What the checks feed a backend: a few images, their texts, and keyword arguments for every call
    (e.g. ``{"num_inference_steps": 2}`` to keep a diffusion backend fast)."""

    images: Tensor
    texts: list[str] | None
    call_kwargs: dict[str, Any] = field(default_factory=dict)
    tmp_dir: Path | None = None  # where the save checks write; check_backend makes (and removes) one if None

    @property
    def cond(self) -> dict[str, Any]:
        return {"texts": self.texts} if self.texts is not None else {}


def _fail(check: str, message: str) -> AssertionError:
    return AssertionError(f"check_backend[{check}]: {message}")


def _expect(ok: bool, check: str, message: str) -> None:
    if not ok:
        raise _fail(check, message)


def _raises(fn: Callable[[], Any], check: str, what: str) -> None:
    try:
        fn()
    except (ValueError, TypeError):
        return
    raise _fail(check, f"{what} did not raise ValueError/TypeError")


def _close(a: Tensor, b: Tensor, check: str, what: str, atol: float = 1e-4) -> None:
    if a.shape != b.shape or not torch.allclose(a.float(), b.float(), atol=atol, rtol=1e-4):
        diff = float((a.float() - b.float()).abs().max()) if a.shape == b.shape else "shape"
        raise _fail(check, f"{what} differ (max abs difference {diff})")


def _encode(
    backend: LatentBackend, probe: Probe, images: Tensor | None = None, texts: list[str] | None = None
) -> Tensor:
    images = probe.images if images is None else images
    cond: dict[str, Any] = {"texts": texts if texts is not None else probe.texts} if probe.texts is not None else {}
    with torch.inference_mode():
        return backend.encode(images, **cond, **probe.call_kwargs)


def _decode(backend: LatentBackend, probe: Probe, latents: Tensor, texts: list[str] | None = None) -> Tensor:
    cond: dict[str, Any] = {"texts": texts if texts is not None else probe.texts} if probe.texts is not None else {}
    with torch.inference_mode():
        return backend.decode(latents, **cond, **probe.call_kwargs)


# -- the checks ---------------------------------------------------------------------------------------------


def check_capabilities(backend: LatentBackend, probe: Probe) -> None:
    c = "capabilities"
    _expect(backend.latent_prior in (None, "gaussian"), c, f"latent_prior is {backend.latent_prior!r}")
    _expect(backend.default_method in METHODS, c, f"default_method is {backend.default_method!r}")
    _expect(backend.encoder_kind in ENCODER_KINDS, c, f"encoder_kind is {backend.encoder_kind!r}")
    _expect(not backend.requires_text or backend.supports_text_condition, c, "requires_text without text support")
    size, channels, shape = backend.image_size, backend.image_channels, tuple(backend.latent_shape)
    _expect(isinstance(size, int) and size > 0, c, f"image_size is {size!r}")
    _expect(channels in (1, 3), c, f"image_channels is {channels!r}")
    _expect(len(shape) > 0 and all(isinstance(d, int) and d > 0 for d in shape), c, f"latent_shape is {shape!r}")
    registered = registered_backends()
    _expect(registered.get(backend.backend_name) is type(backend), c, f"{type(backend).__name__} is not registered")
    _expect(backend.first_stage is None or is_backend(backend.first_stage), c, "first_stage kind")
    modules = backend.modules()
    _expect(bool(modules) and all(isinstance(m, torch.nn.Module) for m in modules.values()), c, "modules()")


#: a value of each call option that no backend treats as its default
_NON_NEUTRAL = {
    "refine_steps": 3, "num_inference_steps": 2, "guidance_scale": 2.0, "strength": 0.5, "inversion": "fixed-point",
    "inversion_iterations": 1, "sampler": "dpm-solver", "negative_prompt": "blurry",
}  # fmt: skip


def check_call_options(backend: LatentBackend, probe: Probe) -> None:
    """``call_options`` resolves the job defaults, refuses every option outside ``option_names``, and the
    resolved options drive encode and decode exactly as the same keyword arguments do."""
    c = "call_options"
    _expect(set(backend.option_names) <= set(_NON_NEUTRAL), c, f"unknown option_names {set(backend.option_names)}")
    resolved = backend.call_options()
    _expect(isinstance(resolved, CallOptions), c, f"call_options() gave {type(resolved).__name__}")
    _expect(set(resolved.given()) <= set(backend.option_names), c, f"defaults outside option_names: {resolved}")
    for name, value in _NON_NEUTRAL.items():
        if name not in backend.option_names:
            _raises(partial(backend.call_options, **{name: value}), c, f"call_options({name}={value!r})")
    given = {"refine_steps": 0, **{k: v for k, v in probe.call_kwargs.items() if k in _NON_NEUTRAL}}  # 0: as encode
    options = backend.call_options(CallOptions(**given))
    with torch.inference_mode():
        z = backend.encode(probe.images, **probe.cond, options=options)
        _close(z, _encode(backend, probe), c, "encode(options=) and encode(**kwargs) latents")
        _close(backend.decode(z, **probe.cond, options=options), _decode(backend, probe, z), c, "decodes")


def check_shapes(backend: LatentBackend, probe: Probe) -> None:
    c, n = "shapes", probe.images.shape[0]
    z = _encode(backend, probe)
    _expect(tuple(z.shape) == (n, *backend.latent_shape), c, f"encode gave {tuple(z.shape)}")
    _expect(z.is_floating_point() and bool(torch.isfinite(z).all()), c, "encode gave non-finite latents")
    x = _decode(backend, probe, z)
    expected = (n, backend.image_channels, backend.image_size, backend.image_size)
    _expect(tuple(x.shape) == expected, c, f"decode gave {tuple(x.shape)}, expected {expected}")
    _expect(bool(torch.isfinite(x).all()), c, "decode gave non-finite images")
    _expect(float(x.min()) >= -1 - 1e-4 and float(x.max()) <= 1 + 1e-4, c, "decode left [-1, 1]")
    with torch.inference_mode():
        err = backend.reconstruction_error(probe.images, **probe.cond, **probe.call_kwargs)
    _expect(tuple(err.shape) == (n,) and bool((err >= 0).all()), c, f"reconstruction_error gave {tuple(err.shape)}")


def check_dtype_and_device(backend: LatentBackend, probe: Probe) -> None:
    c = "dtype_and_device"
    z = _encode(backend, probe, probe.images.double())  # another dtype in: converted, not refused
    _expect(z.dtype == backend.dtype and z.device == backend.device, c, f"encode gave {z.dtype} on {z.device}")
    x = _decode(backend, probe, z.double())
    _expect(x.dtype == backend.dtype and x.device == backend.device, c, f"decode gave {x.dtype} on {x.device}")
    before = backend.dtype
    backend.to(dtype=torch.float64)
    try:
        z64 = _encode(backend, probe)
        _expect(z64.dtype == torch.float64, c, f"after to(float64) encode gave {z64.dtype}")
        _expect(_decode(backend, probe, z64).dtype == torch.float64, c, "after to(float64) decode is not float64")
    finally:
        backend.to(dtype=before)


def check_prior(backend: LatentBackend, probe: Probe) -> None:
    c = "prior"
    if backend.latent_prior is None:
        _raises(lambda: backend.sample(2), c, "sample() without a prior")
        return
    z1 = backend.sample(3, generator=torch.Generator().manual_seed(7))
    z2 = backend.sample(3, generator=torch.Generator().manual_seed(7))
    z3 = backend.sample(3, generator=torch.Generator().manual_seed(8))
    _expect(tuple(z1.shape) == (3, *backend.latent_shape), c, f"sample gave {tuple(z1.shape)}")
    _expect(torch.equal(z1, z2) and not torch.equal(z1, z3), c, "sample does not follow its generator")
    _raises(lambda: backend.sample(0), c, "sample(0)")


def check_text_condition(backend: LatentBackend, probe: Probe) -> None:
    c, n = "text_condition", probe.images.shape[0]
    texts = [f"text {i}" for i in range(n)]
    if not backend.supports_text_condition:
        _expect(backend.condition(texts) is None, c, "condition() of an unconditioned backend is not None")
        _raises(lambda: backend.encode(probe.images, texts=texts), c, "encode(texts=) of an unconditioned backend")
        return
    cond = backend.condition(texts)
    _expect(cond is not None and cond.shape[0] == n, c, "condition() gave no conditioning per text")
    assert cond is not None
    _expect(backend.encode_text(["a", "a much longer text"]).shape[1:] == cond.shape[1:], c, "text shapes differ")
    if backend.requires_text:
        z = _encode(backend, probe)
        _raises(lambda: backend.decode(z, **probe.call_kwargs), c, "decode without texts")
    with torch.inference_mode():  # cond= and texts= are the same thing
        z = backend.encode(probe.images, cond=cond, **probe.call_kwargs)
    _close(z, _encode(backend, probe, texts=texts), c, "encode(cond=condition(texts)) and encode(texts=texts)")


def check_determinism(backend: LatentBackend, probe: Probe) -> None:
    c = "determinism"
    z = _encode(backend, probe)
    _expect(torch.equal(z, _encode(backend, probe)), c, "encode twice gave different latents")
    _expect(torch.equal(_decode(backend, probe, z), _decode(backend, probe, z)), c, "decode twice differs")


def check_batched_equals_per_item(backend: LatentBackend, probe: Probe) -> None:
    c = "batched_equals_per_item"
    texts = probe.texts
    z = _encode(backend, probe)
    one = [
        _encode(backend, probe, probe.images[i : i + 1], None if texts is None else texts[i : i + 1])
        for i in range(len(probe.images))
    ]
    _close(z, torch.cat(one), c, "batched and per-item encodes")
    x = _decode(backend, probe, z)
    per = [_decode(backend, probe, z[i : i + 1], None if texts is None else texts[i : i + 1]) for i in range(len(z))]
    _close(x, torch.cat(per), c, "batched and per-item decodes")
    before = backend.batch_size
    backend.batch_size = 2
    try:
        _close(_decode(backend, probe, z), x, c, "decodes chunked by batch_size and in one call")
    finally:
        backend.batch_size = before


def check_posterior(backend: LatentBackend, probe: Probe) -> None:
    c = "posterior"
    with torch.inference_mode():
        mean, std = backend.encode_distribution(probe.images, **probe.cond, **probe.call_kwargs)
    _expect(tuple(mean.shape) == (probe.images.shape[0], *backend.latent_shape), c, f"mean {tuple(mean.shape)}")
    _expect(std is None or (std.shape == mean.shape and bool((std >= 0).all())), c, "std shape or sign")
    if backend.encoder_kind == "amortized":
        _close(mean, _encode(backend, probe), c, "encode_distribution's mean and encode")


def _round_trip_dir(backend: LatentBackend, probe: Probe, name: str) -> Path:
    if probe.tmp_dir is None:
        raise ValueError("tmp_dir: the save checks need a directory to write in; give make_probe a tmp_dir")
    target = probe.tmp_dir / f"{backend.backend_name}-{name}"
    backend.save_pretrained(target)
    return target


def check_save_load_round_trip(backend: LatentBackend, probe: Probe) -> None:
    c = "save_load_round_trip"
    loaded = load_backend(_round_trip_dir(backend, probe, "round-trip"))
    _expect(type(loaded) is type(backend), c, f"loaded a {type(loaded).__name__}")
    _expect(tuple(loaded.latent_shape) == tuple(backend.latent_shape), c, "latent_shape changed")
    z = _encode(backend, probe)
    _close(_encode(loaded, probe), z, c, "encodes before and after save/load", atol=1e-6)
    _close(_decode(loaded, probe, z), _decode(backend, probe, z), c, "decodes before and after save/load", atol=1e-6)


def check_refuses_pickles(backend: LatentBackend, probe: Probe) -> None:
    c = "refuses_pickles"
    target = _round_trip_dir(backend, probe, "pickled")
    for weights in target.rglob("*.safetensors"):
        weights.with_suffix(".bin").write_bytes(b"\x80\x04K\x01.")  # a pickle (of the number 1)
        weights.unlink()
    _raises(lambda: load_backend(target), c, "loading pickled weights")


def check_loads_whole_or_not_at_all(backend: LatentBackend, probe: Probe) -> None:
    from safetensors.torch import load_file, save_file

    c = "loads_whole_or_not_at_all"
    target = _round_trip_dir(backend, probe, "incomplete")
    weights = sorted(target.rglob("*.safetensors"))
    _expect(bool(weights), c, "save_pretrained wrote no safetensors")
    tensors = load_file(str(weights[0]))
    save_file(dict(list(tensors.items())[1:]), str(weights[0]))  # one tensor fewer
    _raises(lambda: load_backend(target), c, f"loading {weights[0].name} without the tensor {next(iter(tensors))!r}")


BACKEND_CHECKS: dict[str, Callable[[LatentBackend, Probe], None]] = {
    "capabilities": check_capabilities,
    "call_options": check_call_options,
    "shapes": check_shapes,
    "dtype_and_device": check_dtype_and_device,
    "prior": check_prior,
    "text_condition": check_text_condition,
    "determinism": check_determinism,
    "batched_equals_per_item": check_batched_equals_per_item,
    "posterior": check_posterior,
    "save_load_round_trip": check_save_load_round_trip,
    "refuses_pickles": check_refuses_pickles,
    "loads_whole_or_not_at_all": check_loads_whole_or_not_at_all,
}


def make_probe(
    backend: LatentBackend,
    *,
    images: Tensor | None = None,
    texts: list[str] | None = None,
    call_kwargs: dict[str, Any] | None = None,
    tmp_dir: str | Path | None = None,
) -> Probe:
    """The inputs of the checks: 3 random images in [-1, 1] (seed 0) unless given, and texts for
    text-conditioned backends."""
    if images is None:
        gen = torch.Generator().manual_seed(0)
        size = (3, backend.image_channels, backend.image_size, backend.image_size)
        images = torch.rand(size, generator=gen) * 2 - 1
    if texts is None and backend.supports_text_condition:
        texts = [f"an example {i}" for i in range(images.shape[0])]
    probe = Probe(images, texts, dict(call_kwargs or {}))
    if tmp_dir is not None:
        probe.tmp_dir = Path(tmp_dir)
        probe.tmp_dir.mkdir(parents=True, exist_ok=True)
    return probe


def check_backend(backend: LatentBackend, *, checks: list[str] | None = None, **probe_kwargs: Any) -> list[str]:
    """Run the contract checks (all, or those named) on ``backend``; return the names of the checks run.

    Keyword arguments go to :func:`make_probe` (``images``, ``texts``, ``call_kwargs``, ``tmp_dir``).
    Raises ``AssertionError`` at the first failed check, naming it.
    """
    if not is_backend(backend):
        raise TypeError(f"backend must be a LatentBackend, got {type(backend).__name__}")
    names = list(BACKEND_CHECKS) if checks is None else checks
    unknown = [n for n in names if n not in BACKEND_CHECKS]
    if unknown:
        raise ValueError(f"unknown check {unknown[0]!r}; checks: {', '.join(BACKEND_CHECKS)}")
    if probe_kwargs.get("tmp_dir") is not None:
        _run_checks(backend, names, make_probe(backend, **probe_kwargs))
        return names
    with tempfile.TemporaryDirectory(prefix="latentmix-check-") as tmp:  # removed with what the checks saved
        _run_checks(backend, names, make_probe(backend, **{**probe_kwargs, "tmp_dir": tmp}))
    return names


def _run_checks(backend: LatentBackend, names: list[str], probe: Probe) -> None:
    for name in names:
        BACKEND_CHECKS[name](backend, probe)
