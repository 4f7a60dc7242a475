"""Backend classes by name: ``register_backend`` and the lookups ``load_backend`` uses.

A registered class is found two ways: by the name a saved ``config.json`` stores
(``"latentmix_backend": "vae"``), and by asking every class whether it *claims* a directory that is not
a latentmix save (a diffusers ``AutoencoderKL`` folder, a Stable Diffusion pipeline): see
:meth:`~latentmix.backends.base.LatentBackend.claims`. Loading never imports a backend class by name,
so a new backend only has to register itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from latentmix.backends.base import LatentBackend

_REGISTRY: dict[str, type[LatentBackend]] = {}
B = TypeVar("B", bound="type[LatentBackend]")


def register_backend(name: str):
    """Class decorator: make a backend loadable by ``name`` (stored in its config.json)."""

    def wrap(cls: B) -> B:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"a backend named {name!r} is already registered ({_REGISTRY[name].__name__})")
        cls.backend_name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def registered_backends() -> dict[str, type[LatentBackend]]:
    return dict(_REGISTRY)


def get_backend_class(name: str) -> type[LatentBackend]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend class {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def claiming_backend(directory: Path) -> type[LatentBackend] | None:
    """The registered class that claims ``directory`` (the first, in registration order), or None."""
    for cls in _REGISTRY.values():
        if cls.claims(directory):
            return cls
    return None
