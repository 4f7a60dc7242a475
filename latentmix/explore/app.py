"""The explore page: Gradio widgets wired to :class:`~latentmix.explore.engine.Explorer`.

Each page (browser tab) keeps its own endpoints in a ``gr.State``; the explorer and its cache of encodings
are shared. Every handler turns a ``ValueError`` / ``TypeError`` from the library into a visible message
(the status line and a toast) and leaves the page as it was, so a bad upload never stops the app.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline machine

import gradio as gr
import torch

from latentmix.explore.engine import MAX_SHEET, MAX_STRIP, Endpoint, Explorer, display_image
from latentmix.utils.viz import grid_image

SLOTS = ("A", "B", "C", "D")
ALL = "(all classes)"
#: system fonts only: the default theme would ask Google Fonts, which an offline machine cannot reach
THEME_FONTS = {"font": ["ui-sans-serif", "system-ui", "sans-serif"], "font_mono": ["ui-monospace", "monospace"]}


class _Shown(Exception):
    """A message already turned into page output."""


def _safe(n_outputs: int, status_at: int | None = None) -> Callable:
    """Run a handler; on a ValueError / TypeError leave its outputs unchanged, write the message to the output
    at ``status_at`` (or none) and raise a toast."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except (ValueError, TypeError) as exc:
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                gr.Warning(message)
                out: list[Any] = [gr.update() for _ in range(n_outputs)]
                if status_at is not None:
                    out[status_at] = f"**error:** {message}"
                return out[0] if n_outputs == 1 else tuple(out)

        return run

    return wrap


def _need(state: dict, *slots: str) -> list[Endpoint]:
    missing = [s for s in slots if s not in state]
    if missing:
        raise ValueError(f"pick endpoint{'s' if len(missing) > 1 else ''} {' and '.join(missing)} first")
    return [state[s] for s in slots]


def _blend_markdown(info: dict) -> str:
    lines = [f"λ (weight of A) = **{info['lam']:.2f}**"]
    if "caption" in info:
        lines.append(f"blended caption: *{info['caption']}*")
    if "soft_label" in info:
        lines.append("soft label: " + ", ".join(f"{k} {v:.2f}" for k, v in info["soft_label"].items()))
    return "  \n".join(lines)


def _paths(paths: dict[str, Any]) -> str:
    return "  \n".join(f"wrote {kind}: `{path}`" for kind, path in paths.items())


def build_app(explorer: Explorer) -> gr.Blocks:
    """The page for ``explorer`` (not yet launched)."""
    backend = explorer.backend
    text_conditioned = backend.supports_text_condition
    # Gradio keeps every image it served in its cache; files older than an hour go, checked every 30 minutes
    with gr.Blocks(title="latentmix explore", delete_cache=(1800, 3600)) as app:
        state = gr.State({})
        data = f", data: {explorer.data_spec} ({explorer.split})" if explorer.dataset is not None else ""
        gr.Markdown(
            f"### latentmix explore — backend `{explorer.backend_spec or backend.backend_name}` "
            f"({backend.image_channels}-channel {backend.image_size}×{backend.image_size}{data})"
        )
        with gr.Row():
            with gr.Column(scale=2):
                slot = gr.Radio(list(SLOTS), value="A", label="pick endpoint for", elem_id="slot")
                with gr.Tab("data set", visible=explorer.dataset is not None):
                    cls = gr.Dropdown([ALL, *explorer.class_names], value=ALL, label="class", elem_id="class")
                    thumbs = gr.Gallery(explorer.thumbnails(None), columns=6, height=320, object_fit="contain",
                                        allow_preview=False, label="click a thumbnail", elem_id="thumbs",
                                        interactive=False)  # fmt: skip
                    with gr.Row():
                        index = gr.Number(label="index", precision=0, minimum=0, elem_id="index")
                        use_index = gr.Button("use index", elem_id="use-index")
                with gr.Tab("upload"):
                    upload = gr.File(label="an image file (converted to the model's size)", type="filepath",
                                     elem_id="upload")  # fmt: skip
                with gr.Tab("prompt", visible=text_conditioned):
                    prompt = gr.Textbox(label="prompt", elem_id="prompt")
                    seed = gr.Number(value=0, precision=0, label="seed of the noise", elem_id="seed")
                    use_prompt = gr.Button("use prompt", elem_id="use-prompt")
                status = gr.Markdown(elem_id="status")
                chosen = gr.Image(type="pil", format="png", label="endpoints", elem_id="endpoints",
                                  interactive=False, height=150)  # fmt: skip
            with gr.Column(scale=3):
                with gr.Tab("walk A → B"):
                    method = gr.Radio(["slerp", "lerp"], value=backend.default_method, label="interpolator",
                                      elem_id="method")  # fmt: skip
                    t = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="t (0: A, 1: B)", elem_id="t")
                    frame = gr.Image(type="pil", format="png", label="decoded at t", elem_id="frame",
                                     interactive=False, height=300)  # fmt: skip
                    blend = gr.Markdown(elem_id="blend")
                    with gr.Row():
                        frames = gr.Slider(2, MAX_STRIP, value=9, step=1, label="strip frames", elem_id="frames")
                        strip_button = gr.Button("decode strip", elem_id="strip-button")
                    strip = gr.Image(type="pil", format="png", label="strip", elem_id="strip", interactive=False)
                    with gr.Row():
                        save_frame = gr.Button("save frame (PNG)", elem_id="save-frame")
                        save_strip = gr.Button("save strip (PNG, GIF, MP4)", elem_id="save-strip")
                    with gr.Row():
                        synth_n = gr.Number(value=64, precision=0, minimum=1, label="samples", elem_id="synth-n")
                        synth = gr.Button("synthesize a paired set like this", elem_id="synthesize")
                    exported = gr.Markdown(elem_id="exported")
                with gr.Tab("sheet A B / C D"):
                    with gr.Row():
                        rows = gr.Slider(2, MAX_SHEET, value=5, step=1, label="rows", elem_id="sheet-rows")
                        cols = gr.Slider(2, MAX_SHEET, value=5, step=1, label="columns", elem_id="sheet-cols")
                    sheet_button = gr.Button("decode sheet", elem_id="sheet-button")
                    sheet = gr.Image(type="pil", format="png", label="sheet", elem_id="sheet", interactive=False)
                    sheet_status = gr.Markdown(elem_id="sheet-status")
                with gr.Tab("keyframe walk"):
                    keys = gr.Textbox(value="A, B", label="keyframes: endpoints (A-D) and data set indices, in order",
                                      elem_id="keys")  # fmt: skip
                    with gr.Row():
                        key_frames = gr.Slider(2, 60, value=12, step=1, label="frames per segment")
                        key_method = gr.Radio(["spline", "slerp", "lerp"], value="spline", label="path")
                        spacing = gr.Radio(["uniform", "even"], value="uniform", label="frame timing")
                        closed = gr.Checkbox(False, label="loop")
                    walk_button = gr.Button("walk", elem_id="walk-button")
                    walk_gif = gr.Image(label="walk", elem_id="walk", interactive=False)
                    walk_status = gr.Markdown(elem_id="walk-status")
                factors = explorer.factors()
                with gr.Tab("attribute arithmetic", visible=bool(factors)):
                    first = next(iter(factors), None)
                    values = factors.get(first, []) if first else []
                    factor = gr.Dropdown(list(factors), value=first, label="factor")
                    with gr.Row():
                        source = gr.Dropdown(values, value=values[0] if values else None, label="from")
                        target = gr.Dropdown(values, value=values[1] if len(values) > 1 else None, label="to")
                        strength = gr.Slider(-2.0, 3.0, value=1.0, step=0.1, label="strength")
                    edit_button = gr.Button("edit A", elem_id="edit-button")
                    edited = gr.Image(type="pil", format="png", label="A reconstructed | edited", elem_id="edited",
                                      interactive=False)  # fmt: skip
                    edit_status = gr.Markdown(elem_id="edit-status")

        # -- picking endpoints ----------------------------------------------------------------------
        def endpoints_view(st: dict):
            """The chosen endpoints side by side, named (prompts by their decode)."""
            names = [s for s in SLOTS if s in st]
            images = [explorer.image(st[s]) if st[s].kind != "prompt" else explorer.frame(st[s], st[s], 0.0)
                      for s in names]  # fmt: skip
            labels = [f"{s}: {st[s].name}"[:24] for s in names]
            return grid_image(torch.stack(images)[None], col_labels=labels)

        def assign(st: dict, which: str, endpoint: Endpoint) -> tuple:
            st = {**st, which: endpoint}
            explorer.latent(endpoint)  # encode now, so the slider only decodes
            nxt = SLOTS[(SLOTS.index(which) + 1) % len(SLOTS)]
            return st, f"{which} = {endpoint.name}", endpoints_view(st), nxt

        pick_outputs = [state, status, chosen, slot]

        @_safe(4, status_at=1)
        def pick_thumb(st: dict, which: str, cls_name: str, evt: gr.SelectData) -> tuple:
            shown = explorer.indices(None if cls_name == ALL else cls_name)
            return assign(st, which, explorer.from_index(shown[evt.index]))

        @_safe(4, status_at=1)
        def pick_index(st: dict, which: str, i: float | None) -> tuple:
            if i is None:
                raise ValueError("index: type a data set index")
            return assign(st, which, explorer.from_index(i))  # 1.5 is refused there, not rounded here

        @_safe(4, status_at=1)
        def pick_upload(st: dict, which: str, path: str | None) -> tuple:
            if not path:
                raise ValueError("upload: no file")
            return assign(st, which, explorer.from_upload(path, os.path.basename(path)))

        @_safe(4, status_at=1)
        def pick_prompt(st: dict, which: str, text: str, s: float | None) -> tuple:
            return assign(st, which, explorer.from_prompt(text or "", 0 if s is None else s))

        @_safe(1)
        def filter_class(cls_name: str) -> list:
            return explorer.thumbnails(None if cls_name == ALL else cls_name)

        @_safe(2, status_at=1)
        def show_frame(st: dict, position: float, how: str) -> tuple:
            if "A" not in st or "B" not in st:
                return gr.update(), "pick A and B to walk between them"
            a, b = st["A"], st["B"]
            image = explorer.frame(a, b, position, how)
            return display_image(image), _blend_markdown(explorer.blend_info(a, b, position))

        cls.change(filter_class, cls, thumbs, show_progress="hidden")
        uploaded = upload.upload(pick_upload, [state, slot, upload], pick_outputs, show_progress="hidden")
        uploaded.then(lambda: None, None, upload, show_progress="hidden")  # the box takes the next file
        for event in (
            thumbs.select(pick_thumb, [state, slot, cls], pick_outputs, show_progress="hidden"),
            uploaded,
            use_index.click(pick_index, [state, slot, index], pick_outputs, show_progress="hidden"),
            use_prompt.click(pick_prompt, [state, slot, prompt, seed], pick_outputs, show_progress="minimal"),
        ):
            event.then(show_frame, [state, t, method], [frame, blend], show_progress="hidden")
        slow = "minimal" if backend.encoder_kind == "ddim-inversion" else "hidden"  # diffusion: seconds per frame
        t.input(show_frame, [state, t, method], [frame, blend], trigger_mode="always_last", show_progress=slow)
        t.release(show_frame, [state, t, method], [frame, blend], trigger_mode="always_last", show_progress=slow)
        method.change(show_frame, [state, t, method], [frame, blend], show_progress="hidden")

        # -- strip, exports, synthesis --------------------------------------------------------------
        @_safe(2, status_at=1)
        def decode_strip(st: dict, n: float, how: str, progress=gr.Progress(track_tqdm=True)) -> tuple:  # noqa: B008
            a, b = _need(st, "A", "B")
            with backend.progress(True):
                images = explorer.strip(a, b, int(n), how)
            return grid_image(images[None]), f"decoded {len(images)} frames ({how})"

        @_safe(1, status_at=0)
        def export_frame(st: dict, position: float, how: str) -> str:
            a, b = _need(st, "A", "B")
            return _paths({"frame": explorer.save_frame(explorer.frame(a, b, position, how))})

        @_safe(1, status_at=0)
        def export_strip(st: dict, n: float, how: str, progress=gr.Progress(track_tqdm=True)) -> str:  # noqa: B008
            a, b = _need(st, "A", "B")
            with backend.progress(True):
                images = explorer.strip(a, b, int(n), how)
            return _paths(explorer.save_strip(images))

        @_safe(1, status_at=0)
        def synthesize(st: dict, position: float, how: str, n: float | None,
                       progress=gr.Progress(track_tqdm=True)) -> str:  # noqa: B008  # fmt: skip
            a, b = _need(st, "A", "B")
            result = explorer.synthesize_like(a, b, position, how, int(n or 0), quiet=False)
            return f"wrote {result.num_samples} paired samples to `{result.out}` (λ = {1 - position:.2f}, {how})"

        strip_button.click(decode_strip, [state, frames, method], [strip, exported])
        save_frame.click(export_frame, [state, t, method], exported)
        save_strip.click(export_strip, [state, frames, method], exported)
        synth.click(synthesize, [state, t, method, synth_n], exported)

        # -- sheet, keyframe walk, attribute arithmetic --------------------------------------------
        @_safe(2, status_at=1)
        def decode_sheet(st: dict, r: float, c: float, how: str, progress=gr.Progress(track_tqdm=True)) -> tuple:  # noqa: B008
            corners = _need(st, *SLOTS)
            with backend.progress(True):
                cells = explorer.sheet(corners, int(r), int(c), how)
            path = explorer.save_sheet(cells)
            return grid_image(cells), f"wrote sheet: `{path}`"

        @_safe(2, status_at=1)
        def run_walk(st: dict, spec: str, n: float, how: str, timing: str, loop: bool,
                     progress=gr.Progress(track_tqdm=True)) -> tuple:  # noqa: B008  # fmt: skip
            tokens = [tok.strip() for tok in (spec or "").replace(";", ",").split(",") if tok.strip()]
            chosen_keys = []
            for tok in tokens:
                if tok.upper() in SLOTS:
                    chosen_keys.append(_need(st, tok.upper())[0])
                elif tok.isascii() and tok.isdigit():  # "²" is a digit to Python, not an index
                    chosen_keys.append(explorer.from_index(int(tok)))
                else:
                    raise ValueError(f"keyframes: {tok!r} is neither an endpoint (A-D) nor a data set index")
            with backend.progress(True):
                result = explorer.keyframe_walk(chosen_keys, int(n), how, timing, loop)
            paths = {"gif": result.gif, **({"video": result.video} if result.video else {})}
            paths["frames"] = result.out / "frames"
            return str(result.gif), _paths(paths)

        @_safe(3)
        def factor_values(name: str) -> tuple:
            values = factors.get(name, [])
            return (gr.update(choices=values, value=values[0] if values else None),
                    gr.update(choices=values, value=values[1] if len(values) > 1 else None), "")  # fmt: skip

        @_safe(2, status_at=1)
        def run_edit(st: dict, name: str, src: str, dst: str, k: float, progress=gr.Progress(track_tqdm=True)) -> tuple:  # noqa: B008
            (a,) = _need(st, "A")
            with backend.progress(True):
                pair = explorer.edit(a, name, src, dst, float(k))
            return grid_image(pair[None]), f"{a.name}: {name} {src} → {dst} × {k:g}"

        sheet_button.click(decode_sheet, [state, rows, cols, method], [sheet, sheet_status])
        walk_button.click(run_walk, [state, keys, key_frames, key_method, spacing, closed], [walk_gif, walk_status])
        factor.change(factor_values, factor, [source, target, edit_status], show_progress="hidden")
        edit_button.click(run_edit, [state, factor, source, target, strength], [edited, edit_status])
    return app


def launch(explorer: Explorer, *, host: str = "127.0.0.1", port: int | None = None, block: bool = True,
           max_file_size: str = "25mb", quiet: bool = True,
           auth: tuple[str, str] | None = None) -> gr.Blocks:  # fmt: skip
    """Serve the page for ``explorer`` on ``host:port`` (a free port when None); ``app.local_url`` is its address.
    ``auth`` (user, password) puts Gradio's login page in front of it. ``block=False`` returns at once (tests); call
    ``app.close()`` to stop it."""
    app = build_app(explorer)
    app.queue(default_concurrency_limit=1)
    app.launch(
        server_name=host, server_port=port, prevent_thread_lock=True, quiet=quiet, max_file_size=max_file_size,
        ssr_mode=False, show_error=True, theme=gr.themes.Default(**THEME_FONTS), auth=auth,  # type: ignore[arg-type]
    )  # fmt: skip
    if block:
        try:
            app.block_thread()
        finally:
            app.close()
    return app


__all__ = ["build_app", "launch"]
