"""``latentmix explore``: a local web page for walking a backend's latent space (optional extra
``latentmix[explore]``, built on Gradio).

:class:`Explorer` (:mod:`latentmix.explore.engine`) is everything the page does, as library calls;
:func:`launch` (:mod:`latentmix.explore.app`, imports Gradio) serves it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from latentmix.explore.engine import DEFAULT_MAX_UPLOAD_PIXELS, Endpoint, Explorer, display_image

if TYPE_CHECKING:
    from latentmix.configs import ExploreConfig

#: The data set of each embedded backend family, shown when ``--data`` is not given.
_OWN_DATA = {"digits-": "digits", "shapes-": "shapes"}


def explorer_for(config: ExploreConfig) -> Explorer:
    """Load ``config``'s backend and data set (refused when the data's shape differs from the model's, unless
    ``resize``) and make the :class:`Explorer` the page serves."""
    from latentmix.backends import CallOptions, RunOptions, load_backend
    from latentmix.configs import DEFAULT_BACKEND, backend_for
    from latentmix.data import load_matching

    config.validate()
    spec = backend_for(config.backend, config.data) if config.data is not None else (config.backend or DEFAULT_BACKEND)
    data = config.data
    if data is None:
        data = next((d for prefix, d in _OWN_DATA.items() if str(spec).startswith(prefix)), None)
    backend = load_backend(spec, run=RunOptions.from_settings(config))
    dataset = None
    if data is not None:
        who = f"backend {spec!r}"
        dataset = load_matching(data, config.split, backend.image_size, backend.image_channels, who=who,
                                fix="pass the backend's own --data", resize=config.resize)  # fmt: skip
    options = backend.call_options(CallOptions.from_settings(config))
    return Explorer(backend, dataset, out_dir=config.out, backend_spec=str(spec), data_spec=data, split=config.split,
                    max_upload_pixels=config.max_upload_pixels, max_export=config.max_export,
                    options=options)  # fmt: skip


def launch(*args, **kwargs):
    """:func:`latentmix.explore.app.launch` (imports Gradio on first use)."""
    from latentmix.explore.app import launch as _launch

    return _launch(*args, **kwargs)


__all__ = ["DEFAULT_MAX_UPLOAD_PIXELS", "Endpoint", "Explorer", "display_image", "explorer_for", "launch"]
