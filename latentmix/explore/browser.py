"""Drive the explore page from a real headless Chromium (Debian's ``chromium``) through Playwright: what the
browser tests and ``benchmarks/bench_explore.py`` share. Playwright's own browser downloads are never used.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image

#: Flags for a sandboxed, offline machine: no background calls to Google's hosts, no GPU.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip


def chromium_path() -> str | None:
    """The system Chromium (``LATENTMIX_CHROMIUM`` or ``chromium`` on PATH), or None."""
    return os.environ.get("LATENTMIX_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def headless_chromium() -> Iterator[Any]:
    """A Playwright browser on the system Chromium; raises RuntimeError when there is none."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        raise RuntimeError("no system Chromium: apt-get install chromium (or set LATENTMIX_CHROMIUM)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Any, url: str) -> Any:
    """A new page (its own session) on ``url``, once the data set thumbnails have loaded."""
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.goto(url)
    page.wait_for_selector("#thumbs img", timeout=30_000)
    return page


def image_src(page: Any, elem_id: str) -> str | None:
    img = page.locator(f"#{elem_id} img")
    return img.first.get_attribute("src") if img.count() else None


def wait_new_image(page: Any, elem_id: str, old: str | None, timeout_ms: int = 30_000) -> str:
    """Wait until the image of ``elem_id`` has a source other than ``old`` and has loaded; return its source."""
    page.wait_for_function(
        """([id, old]) => { const img = document.querySelector(`#${id} img`);
             return img && img.getAttribute('src') && img.getAttribute('src') !== old && img.complete
                    && img.naturalWidth > 0; }""",
        arg=[elem_id, old],
        timeout=timeout_ms,
    )
    src = image_src(page, elem_id)
    assert src is not None
    return src


def shown_image(page: Any, elem_id: str) -> np.ndarray:
    """The pixels (H, W, 3) uint8 of the image that ``elem_id`` shows, fetched by the page's own URL."""
    src = image_src(page, elem_id)
    if src is None:
        raise AssertionError(f"#{elem_id} shows no image")
    body = page.request.get(src).body()
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def pick_thumbnail(page: Any, slot: str, position: int) -> None:
    """Choose the ``position``-th thumbnail of the data set gallery as endpoint ``slot`` (A-D)."""
    page.locator(f"#slot [data-testid={slot}-radio-label]").click()
    page.locator("#thumbs .thumbnail-item").nth(position).click()
    page.wait_for_function(
        "([want]) => document.querySelector('#status').innerText.includes(want)",
        arg=[f"{slot} = #{position}"],
        timeout=30_000,
    )


def slide(page: Any, value: float) -> float:
    """Move the t slider to ``value``, as dragging it does; return the seconds until the new frame is shown."""
    old = image_src(page, "frame")
    start = time.perf_counter()
    page.locator("#t input[type=range]").fill(f"{value:g}")
    wait_new_image(page, "frame", old)
    return time.perf_counter() - start
