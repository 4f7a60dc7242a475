"""The explore page in a real headless Chromium: pick, slide, compare with the library's decode, uploads, two
pages at once, a long job beside the slider. Marked ``browser`` (``pytest -m browser``; ``.ci/run`` runs them
once after the default suite). Skipped where Gradio, Playwright or a system Chromium is missing, except under
LATENTMIX_REQUIRE_BROWSER=1 (``.ci/run`` sets it and installs Chromium), where that is a failure."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from latentmix.explore.browser import chromium_path

pytestmark = pytest.mark.browser
REQUIRED = os.environ.get("LATENTMIX_REQUIRE_BROWSER") == "1"
#: the README's picture; the test rewrites it under LATENTMIX_UPDATE_SCREENSHOT=1 (else into its tmp_path)
README_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "explore.png"


def _missing() -> str | None:
    try:
        import gradio  # noqa: F401
        import playwright  # noqa: F401
    except ImportError as exc:
        return f"explore extra not installed ({exc.name})"
    if chromium_path() is None:
        return "no system Chromium (apt-get install chromium)"
    return None


_why = _missing()
if _why is not None:
    if REQUIRED:
        raise RuntimeError(f"browser tests required (LATENTMIX_REQUIRE_BROWSER=1): {_why}")
    pytest.skip(_why, allow_module_level=True)

from latentmix.backends import CallOptions, load_backend  # noqa: E402
from latentmix.data import load_dataset  # noqa: E402
from latentmix.data.images import pil_to_tensor  # noqa: E402
from latentmix.explore import Explorer, launch  # noqa: E402
from latentmix.explore.browser import (  # noqa: E402
    headless_chromium,
    image_src,
    open_page,
    pick_thumbnail,
    shown_image,
    slide,
    wait_new_image,
)
from latentmix.latent.interpolate import interpolate  # noqa: E402
from latentmix.utils.viz import to_uint8  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    torch.manual_seed(0)
    backend = load_backend("digits-vae")
    dataset = load_dataset("digits", split="test")
    out = tmp_path_factory.mktemp("explore-out")
    explorer = Explorer(backend, dataset, out_dir=out, backend_spec="digits-vae", data_spec="digits",
                        max_upload_pixels=100 * 100)  # fmt: skip
    app = launch(explorer, port=None, block=False)
    try:
        yield explorer, app.local_url
    finally:
        app.close()


@pytest.fixture(scope="module")
def browser():
    with headless_chromium() as b:
        yield b


def _expected(explorer: Explorer, ia: int, ib: int, t: float, method: str = "slerp") -> np.ndarray:
    """The library's own decode of the walk from item ia to item ib at t, computed here from scratch."""
    backend = explorer.backend
    with torch.inference_mode():
        za, zb = (backend.encode(explorer.dataset.images([i])) for i in (ia, ib))
        return to_uint8(backend.decode(interpolate(za, zb, t, method)))[0]


def _pixels(shown: np.ndarray, size: int) -> np.ndarray:
    """Undo the page's whole-number nearest upscale: one value per decoded pixel."""
    scale = shown.shape[0] // size
    assert shown.shape[:2] == (size * scale, size * scale)
    return shown[::scale, ::scale, :1]


def test_slider_shows_the_library_decode(served, browser, tmp_path):
    explorer, url = served
    page = open_page(browser, url)
    pick_thumbnail(page, "A", 0)
    pick_thumbnail(page, "B", 5)
    assert "B = #5" in page.locator("#status").inner_text()
    wait_new_image(page, "frame", None)
    first = shown_image(page, "frame")
    encodes = explorer.encodes
    seen = []
    for t in (0.2, 0.75, 0.9):
        slide(page, t)
        shown = shown_image(page, "frame")
        seen.append(shown)
        np.testing.assert_array_equal(_pixels(shown, 8), _expected(explorer, 0, 5, t))
    assert not np.array_equal(seen[0], first) and not np.array_equal(seen[0], seen[1])
    assert explorer.encodes == encodes  # moving the slider decodes; the endpoints stay encoded
    assert "λ (weight of A) = 0.10" in page.locator("#blend").inner_text()
    assert "soft label" in page.locator("#blend").inner_text()
    old = image_src(page, "frame")
    page.locator("#method [data-testid=lerp-radio-label]").click()
    wait_new_image(page, "frame", old)
    np.testing.assert_array_equal(_pixels(shown_image(page, "frame"), 8), _expected(explorer, 0, 5, 0.9, "lerp"))
    page.locator("#strip-button").click()
    wait_new_image(page, "strip", None)
    page.locator("#save-frame").click()
    page.wait_for_function("() => document.querySelector('#exported').innerText.includes('wrote frame')")
    written = page.locator("#exported").inner_text().split("wrote frame:")[1].strip()
    assert Path(written).is_file() and Path(written).parent == explorer.out_dir
    update = os.environ.get("LATENTMIX_UPDATE_SCREENSHOT") == "1"
    screenshot = README_SCREENSHOT if update else tmp_path / "explore.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    page.locator("button[role=tab]", has_text="keyframe walk").click()
    page.locator("#keys textarea").fill("A, 9, B")
    page.locator("#walk-button").click()
    wait_new_image(page, "walk", None)
    assert "wrote gif" in page.locator("#walk-status").inner_text()
    page.locator("button[role=tab]", has_text="attribute arithmetic").click()
    page.locator("#edit-button").click()
    wait_new_image(page, "edited", None)
    assert "label 0 → 1" in page.locator("#edit-status").inner_text()
    page.close()


def _upload(page, path: Path, expect: str) -> str:
    """Upload ``path``; wait until the status line says ``expect``."""
    page.locator("#upload input[type=file]").set_input_files(str(path))
    page.wait_for_function(
        "([want]) => document.querySelector('#status').innerText.includes(want)", arg=[expect], timeout=30_000
    )
    return page.locator("#status").inner_text()


def test_uploads_good_broken_and_oversized(served, browser, tmp_path):
    from PIL import Image

    explorer, url = served
    page = open_page(browser, url)
    page.locator("button[role=tab]", has_text="upload").click()
    page.locator("#slot [data-testid=A-radio-label]").click()
    good = tmp_path / "three.png"
    Image.fromarray((np.arange(64 * 64 * 3) % 251).reshape(64, 64, 3).astype(np.uint8)).save(good)
    _upload(page, good, "A = three.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    message = _upload(page, broken, "broken.png")
    assert message.startswith("error:") and "broken.png is not an image latentmix can read" in message
    large = tmp_path / "large.png"
    Image.new("RGB", (200, 120), (10, 200, 30)).save(large)
    message = _upload(page, large, "large.png")
    assert message.startswith("error:") and "24,000 pixels, above the page's limit of 10,000" in message
    # the app keeps serving: the good upload is still A, and a data set item becomes B
    page.locator("button[role=tab]", has_text="data set").click()
    pick_thumbnail(page, "B", 3)
    wait_new_image(page, "frame", None)
    backend = explorer.backend
    with Image.open(good) as image:
        converted = pil_to_tensor(image, 8, 1)  # as the data loader converts files
    with torch.inference_mode():
        za, zb = backend.encode(converted[None]), backend.encode(explorer.dataset.images([3]))
        expected = to_uint8(backend.decode(interpolate(za, zb, 0.5, "slerp")))[0]
    np.testing.assert_array_equal(_pixels(shown_image(page, "frame"), 8), expected)
    page.close()


def test_two_pages_keep_their_own_endpoints(served, browser):
    explorer, url = served
    one, two = open_page(browser, url), open_page(browser, url)
    for page, (a, b) in ((one, (1, 2)), (two, (7, 9))):
        pick_thumbnail(page, "A", a)
        pick_thumbnail(page, "B", b)
        wait_new_image(page, "frame", None)
    old = (image_src(one, "frame"), image_src(two, "frame"))
    one.locator("#t input[type=range]").fill("0.3")  # both pages move before either answer is awaited
    two.locator("#t input[type=range]").fill("0.6")
    wait_new_image(one, "frame", old[0])
    wait_new_image(two, "frame", old[1])
    np.testing.assert_array_equal(_pixels(shown_image(one, "frame"), 8), _expected(explorer, 1, 2, 0.3))
    np.testing.assert_array_equal(_pixels(shown_image(two, "frame"), 8), _expected(explorer, 7, 9, 0.6))
    one.close()
    two.close()


def test_long_jobs_show_progress_and_do_not_block_the_slider(browser, tmp_path):
    """Latent diffusion on CPU: a 16 x 16 sheet takes seconds; the slider keeps answering while it runs. (50 steps:
    at 20 a quiet machine could finish the 256-image sheet before the one-image frame came back.)"""
    torch.manual_seed(0)
    ldm, digits = load_backend("digits-ldm"), load_dataset("digits", split="test")
    explorer = Explorer(ldm, digits, out_dir=tmp_path, backend_spec="digits-ldm", data_spec="digits",
                        options=CallOptions(num_inference_steps=50))  # fmt: skip
    app = launch(explorer, port=None, block=False)
    try:
        page = open_page(browser, app.local_url)
        page.locator("button[role=tab]", has_text="prompt").click()
        page.locator("#prompt textarea").fill("a handwritten digit 3")
        page.locator("#use-prompt").click()
        page.wait_for_function("() => document.querySelector('#status').innerText.includes('A = seed 0')")
        for slot, position in (("B", 5), ("C", 1), ("D", 2)):
            page.locator("button[role=tab]", has_text="data set").click()
            pick_thumbnail(page, slot, position)
        wait_new_image(page, "frame", None, timeout_ms=60_000)
        page.locator("button[role=tab]", has_text="sheet").click()
        page.locator("#sheet-rows input[type=range]").fill("16")
        page.locator("#sheet-cols input[type=range]").fill("16")
        page.locator("#sheet-button").click()
        page.wait_for_function("() => /\\d+\\/\\d+ steps/.test(document.querySelector('#sheet').innerText)")
        progress = page.locator("#sheet").inner_text()  # the sampler's own progress, e.g. "7/20 steps | 1.2s"
        page.locator("button[role=tab]", has_text="walk A").click()
        slide(page, 0.8)
        assert not list(tmp_path.glob("sheet-*.png"))  # the frame came while the sheet was still decoding
        page.locator("button[role=tab]", has_text="sheet").click()
        wait_new_image(page, "sheet", None, timeout_ms=120_000)
        assert "wrote sheet" in page.locator("#sheet-status").inner_text() and list(tmp_path.glob("sheet-*.png"))
        assert "steps" in progress
        page.close()
    finally:
        app.close()
