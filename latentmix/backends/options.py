"""The options of a backend's encode and decode calls, as one typed object that the backend validates.

Jobs do not ask which kind of backend they hold before passing it settings: they build a :class:`CallOptions`
from their settings (:meth:`CallOptions.from_settings`) and hand it to the backend, which checks it once
(:meth:`~latentmix.backends.base.LatentBackend.call_options`): an option the backend does not take is an error
that names it (``refine_steps applies to inversion backends (GANs); 'vae' encodes with amortized encoding``),
the defaults a job should use are filled in (a GAN refines its inversion by default), and values are checked
against the backend's own rules (a partial-inversion ``strength`` must keep a DDIM step). The result goes to
``encode(..., options=)`` and ``decode(..., options=)``, each of which takes the options that apply to it.

A backend names the options it takes in ``option_names``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

#: the options :meth:`LatentBackend.encode` takes, and those :meth:`LatentBackend.decode` takes
ENCODE_OPTIONS = (
    "refine_steps", "num_inference_steps", "guidance_scale", "strength", "inversion", "inversion_iterations",
    "negative_prompt",
)  # fmt: skip
DECODE_OPTIONS = ("num_inference_steps", "guidance_scale", "strength", "sampler", "negative_prompt")
#: options that may hold one value per item (a list), sliced with the items into the backend's batches
PER_ITEM_OPTIONS = ("negative_prompt",)


def check_per_item(name: str, values: Any, n: int) -> None:
    """A per-item option given as a list must hold one value per item."""
    if isinstance(values, (list, tuple)) and len(values) != n:
        raise ValueError(f"{name}: give one for all items or one per item ({n}), got {len(values)}")


#: values that mean "the default" to every backend, so a job may always pass them
NEUTRAL = {"refine_steps": 0, "inversion": "ddim", "sampler": "ddim"}
#: where an option's value lives in a job's settings when the name differs there
SETTING_NAMES = {"strength": "inversion_strength"}
#: who takes each option, and what the message says of a backend that does not
APPLIES_TO = {
    "refine_steps": ("inversion backends (GANs)", "encoding"),
    "num_inference_steps": ("diffusion backends", "sampler"),
    "guidance_scale": ("diffusion backends", "sampler"),
    "strength": ("diffusion backends", "sampler"),
    "sampler": ("diffusion backends", "sampler"),
    "inversion": ("diffusion backends", "encoding"),
    "inversion_iterations": ("diffusion backends", "encoding"),
    "negative_prompt": ("diffusion backends", "sampler"),
}


@dataclass(frozen=True)
class CallOptions:
    """Options of encode / decode calls; None keeps the backend's default.

    Attributes:
        refine_steps: inversion backends (GANs): optimisation steps refining the encoder's guess.
        num_inference_steps: diffusion backends: sampler (and inversion) steps.
        guidance_scale: diffusion backends: classifier-free guidance, >= 1 (1 is off).
        strength: diffusion backends: invert (and sample back) only this fraction of the steps, in (0, 1].
        inversion: diffusion backends: ``"ddim"``, ``"fixed-point"`` or ``"exact"``.
        inversion_iterations: fixed-point / exact inversion: UNet calls per step beyond the first.
        sampler: diffusion backends: ``"ddim"``, or ``"dpm-solver"`` / ``"euler"`` (prior latents only).
        negative_prompt: diffusion backends: the text guidance steers away from (default ``""``), or one per item.
        names: how the caller calls each option, for messages (``{"strength": "path_strength"}``).
    """

    refine_steps: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    strength: float | None = None
    inversion: str | None = None
    inversion_iterations: int | None = None
    sampler: str | None = None
    negative_prompt: str | list[str] | None = None
    names: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> CallOptions:
        """The options a job's settings carry in fields of the same names (``inversion_strength`` for
        ``strength``); ``overrides`` win. Messages name the settings' fields."""
        values = {}
        for name in _OPTION_FIELDS:
            values[name] = getattr(settings, SETTING_NAMES.get(name, name), None)
        values.update(overrides)
        names = {k: v for k, v in SETTING_NAMES.items() if hasattr(settings, v)}
        return cls(**values, names=names)

    def given(self) -> dict[str, Any]:
        """The options that are set (not None), by name."""
        return {name: getattr(self, name) for name in _OPTION_FIELDS if getattr(self, name) is not None}

    def replace(self, **changes: Any) -> CallOptions:
        return dataclasses.replace(self, **changes)

    def name(self, option: str) -> str:
        """How the caller calls ``option`` (for messages)."""
        return self.names.get(option, option)

    def encode_kwargs(self) -> dict[str, Any]:
        """The set options that encode takes."""
        return {k: v for k, v in self.given().items() if k in ENCODE_OPTIONS}

    def decode_kwargs(self) -> dict[str, Any]:
        """The set options that decode takes."""
        return {k: v for k, v in self.given().items() if k in DECODE_OPTIONS}


_OPTION_FIELDS = tuple(f.name for f in dataclasses.fields(CallOptions) if f.name != "names")


def refuse_unsupported(options: CallOptions, supported: frozenset[str], backend: Any) -> CallOptions:
    """``options`` without the neutral values of options the backend does not take; any other such option is a
    ValueError naming it, who takes it, and what the backend does instead."""
    given = options.given()
    dropped = {k: None for k, v in given.items() if k not in supported and NEUTRAL.get(k, object()) == v}
    options = options.replace(**dropped)
    unsupported = [k for k in options.given() if k not in supported]
    if not unsupported:
        return options
    who, what = APPLIES_TO[unsupported[0]]
    names = [options.name(k) for k in unsupported if APPLIES_TO[k][0] == who]
    verb = "applies" if len(names) == 1 else "apply"
    instead = f"encodes with {backend.encoder_kind} encoding" if what == "encoding" else "has no sampler"
    raise ValueError(f"{' and '.join(names)} {verb} to {who}; {backend.backend_name!r} {instead}")
