"""The Voila pages (autotx_lib/pages), served by `autotx dashboard`, in a real headless browser.

Debian's chromium is driven by Playwright (``executable_path``; Playwright's own browser
download is neither possible nor needed here). Every test starts the real command on
loopback, waits for the widgets, checks real content, clicks a control, and saves a
screenshot in its tmp dir.
"""

from __future__ import annotations

import shutil
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SAMPLEDATA

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PAGE_TIMEOUT_MS = 120_000
SAMPLE_STACK = SAMPLEDATA / "zstack" / "pycudadecon_psf_bead_LLS.tif"

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium, "
                "or run tools/setup_env.py --test as root) to test the pages in a browser",
                allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="the page tests need the playwright package")
pytest.importorskip("voila", reason="the page tests need voila (the viz extra)")

from playwright.sync_api import sync_playwright  # noqa: E402

from autotx_lib.config import Config, load_config  # noqa: E402
from autotx_lib.imaging.readers import open_image  # noqa: E402
from autotx_lib.transfer import control  # noqa: E402
from autotx_lib.transfer.agent import Agent  # noqa: E402

from .served import Served  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _open(browser, served: Served, ready_text: str):
    page = browser.new_page(viewport={"width": 1300, "height": 1200})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # no internet, as on many instrument PCs: anything not on loopback is refused
    page.offline_requests = []

    def loopback_only(route):
        if route.request.url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:")):
            return route.continue_()
        page.offline_requests.append(route.request.url)
        return route.abort()

    page.route("**/*", loopback_only)
    page.goto(served.url, timeout=PAGE_TIMEOUT_MS)
    page.wait_for_selector(".widget-label", state="attached", timeout=PAGE_TIMEOUT_MS)
    page.get_by_text(ready_text).first.wait_for(timeout=PAGE_TIMEOUT_MS)
    page.errors = errors
    return page


def _check_offline(page) -> None:
    """The page asked for nothing off loopback (every such request was refused, and fails here)."""
    assert not page.offline_requests, \
        f"the page tried to load from the internet: {page.offline_requests}"


def _serve(tmp_path: Path, *args: str) -> Served:
    return Served(list(args), tmp_path / "voila.log")


def test_transfer_monitor_page_shows_a_delivered_dataset_and_suspends(browser, tmp_path):
    storage = tmp_path / "storage"
    (storage / "alice").mkdir(parents=True)
    incoming = tmp_path / "pc" / "incoming"
    folder = incoming / "alice" / "HeLa_DAPI_zstack"
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f"plane_{i}.tif").write_bytes(bytes([i]) * 5000)
    config_file = tmp_path / "autotx.toml"
    config_file.write_text(
        f'incoming = "{incoming}"\nmanaged = "{tmp_path / "pc" / "managed"}"\n'
        f'destination = "{storage}"\nhost_alias = "browser-test-scope"\n'
        "[readiness]\nquiet_seconds = 0\n[gate]\nmax_cpu_percent = 100\n"
        "min_available_memory_mb = 0\n")
    config: Config = load_config(config_file)
    assert Agent(config).run(once=True).delivered
    served = _serve(tmp_path, "transfer-monitor", "-c", str(config_file))
    try:
        page = _open(browser, served, "HeLa_DAPI_zstack")
        body = page.locator("body").inner_text()
        assert "browser-test-scope" in body and "verified" in body
        assert "nothing queued, nothing waiting" in body
        page.get_by_placeholder("why (shown to others)").fill("laser alignment")
        page.get_by_role("button", name="Suspend transfers").click()
        page.get_by_text("transfers suspended: laser alignment").wait_for(timeout=30_000)
        held = control.suspension(config)
        assert held is not None and held.reason == "laser alignment"
        page.screenshot(path=str(tmp_path / "transfer_monitor.png"))
        assert not page.errors, page.errors
        _check_offline(page)
    finally:
        served.stop()


def test_stack_browser_page_shows_the_zstack_and_its_slider_works(browser, sampledata, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(SAMPLE_STACK, folder / "bead.tif")
    served = _serve(tmp_path, "stack-browser", "--path", str(folder))
    try:
        page = _open(browser, served, "T=1 C=1 Z=61 Y=128 X=128")
        page.locator(".bk-Canvas, canvas").first.wait_for(state="attached", timeout=60_000)
        assert page.locator("canvas").count() >= 1  # the bokeh view is drawn
        assert "z 31/61: plane 30" in page.locator("body").inner_text()
        with open_image(folder / "bead.tif") as image:
            sums = {z: int(image.plane(z=z).sum(dtype=np.int64)) for z in (30, 31)}
        assert page.evaluate(_IMAGE_SUM_JS) == sums[30]  # the pixels BokehJS holds
        handle = page.locator(".widget-slider .noUi-handle").first  # the z slider
        handle.focus()
        page.keyboard.press("ArrowRight")
        page.get_by_text("z 32/61: plane 31").wait_for(timeout=30_000)
        page.wait_for_function(f"({_IMAGE_SUM_JS})() === {sums[31]}", timeout=30_000)
        page.screenshot(path=str(tmp_path / "stack_browser.png"))
        assert not page.errors, page.errors
        _check_offline(page)
    finally:
        served.stop()


_IMAGE_SUM_JS = """
() => {
  const views = [];
  const walk = (v) => { views.push(v); for (const c of (v.child_views ?? [])) walk(c); };
  for (const v of Object.values(Bokeh.index)) walk(v);
  for (const v of views) {
    if (v.model.type !== 'Figure') continue;
    for (const r of v.model.renderers) {
      const data = r.data_source?.data;
      const column = data instanceof Map ? data.get('image') : data?.image;
      const image = column?.[0];
      if (image && image.length > 1) { let s = 0; for (const x of image) s += x; return s; }
    }
  }
  return null;
}
"""

_WELL_POSITION_JS = """
(well) => {
  const [row, column] = [well[0], String(Number(well.slice(1)))];
  const views = [];
  const walk = (v) => { views.push(v); for (const c of (v.child_views ?? [])) walk(c); };
  for (const v of Object.values(Bokeh.index)) walk(v);
  for (const v of views) {
    if (v.model.type !== 'Figure' || v.model.x_range.type !== 'FactorRange') continue;
    const sx = v.frame.x_scale.compute(v.model.x_range.synthetic(column));
    const sy = v.frame.y_scale.compute(v.model.y_range.synthetic(row));
    const box = v.canvas_view.el.getBoundingClientRect();
    return [box.left + sx, box.top + sy];
  }
  return null;
}
"""


def test_plate_qc_page_measures_and_a_click_on_a_well_shows_it(browser, sampledata, tmp_path):
    plate = sampledata / "hcs" / "ImageXpress_9987_Plate_3435"
    served = _serve(tmp_path, "plate-qc", "--path", str(plate))
    try:
        page = _open(browser, served, "8 images measured")
        assert "96-well plate, 2 wells imaged" in page.locator("body").inner_text()
        page.locator(".bk-Canvas, canvas").first.wait_for(state="attached", timeout=60_000)
        position = None
        deadline = time.monotonic() + 60
        while position is None and time.monotonic() < deadline:  # the heatmap is drawn
            position = page.evaluate(_WELL_POSITION_JS, "B03")
            if position is None:
                page.wait_for_timeout(200)
        assert position is not None, "no plate heatmap on the page"
        page.mouse.click(*position)
        page.get_by_text("Well B03").wait_for(timeout=30_000)
        page.locator(".autotx-well-images canvas").first.wait_for(state="attached",
                                                                   timeout=60_000)
        assert "4 images, 0 flagged" in page.locator("body").inner_text()
        page.screenshot(path=str(tmp_path / "plate_qc.png"))
        assert not page.errors, page.errors
        _check_offline(page)
    finally:
        served.stop()


_RGBA_SUM_JS = """
() => {
  const views = [];
  const walk = (v) => { views.push(v); for (const c of (v.child_views ?? [])) walk(c); };
  for (const v of Object.values(Bokeh.index)) walk(v);
  for (const v of views) {
    if (v.model.type !== 'Figure') continue;
    for (const r of v.model.renderers) {
      if (!r.visible || r.glyph?.type !== 'ImageRGBA') continue;
      const data = r.data_source?.data;
      const image = (data instanceof Map ? data.get('rgba') : data?.rgba)?.[0];
      if (image && image.length > 1) { let s = 0; for (const x of image) s += x; return s; }
    }
  }
  return null;
}
"""


def test_stack_browser_page_shows_a_composite_and_twenty_channel_rows(browser, sampledata,
                                                                      tmp_path):
    from autotx_lib.imaging.composite import composite_rgba, image_channel_colors
    from autotx_lib.imaging.viewer import auto_contrast

    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(sampledata / "nd2" / "arcadia_example-multichannel.nd2", folder / "cells.nd2")
    shutil.copy(sampledata / "lif" / "readlif_LeicaLASX_wavelength-sweep_example.lif",
                folder / "sweep.lif")
    with open_image(folder / "cells.nd2") as image:
        planes = [image.plane(c=c).copy() for c in range(4)]  # nd2 planes map the file
        colours = image_channel_colors(image)

    def rgba_sum(shown: list[int]) -> int:
        rgba = composite_rgba([planes[c] for c in shown], [colours[c] for c in shown],
                              [auto_contrast(planes[c]) for c in shown])
        return int(rgba.sum(dtype=np.int64))

    served = _serve(tmp_path, "stack-browser", "--path", str(folder))
    try:
        page = _open(browser, served, "composite of 4/4 channels")
        page.locator(".bk-Canvas, canvas").first.wait_for(state="attached", timeout=60_000)
        page.wait_for_function(f"({_RGBA_SUM_JS})() === {rgba_sum([0, 1, 2, 3])}", timeout=30_000)
        page.locator(".autotx-channel-panel").get_by_text("Mono").click()  # hide bright field
        page.get_by_text("composite of 3/4 channels").wait_for(timeout=30_000)
        page.wait_for_function(f"({_RGBA_SUM_JS})() === {rgba_sum([1, 2, 3])}", timeout=30_000)
        page.screenshot(path=str(tmp_path / "composite.png"))

        page.locator("select").first.select_option(label="sweep.lif")
        page.get_by_text("composite of 20/20 channels").wait_for(timeout=60_000)
        panel = page.locator(".autotx-channel-panel")
        assert panel.locator("input[type=checkbox]").count() == 20
        box = panel.evaluate("p => [p.clientHeight, p.scrollHeight, p.getBoundingClientRect().width]")
        assert box[0] <= 216 < box[1], box  # a short panel that scrolls, not 20 rows tall
        last = panel.get_by_text("lambda:19")
        last.scroll_into_view_if_needed()
        last.click()  # the last row is reachable and works
        page.get_by_text("composite of 19/20 channels").wait_for(timeout=30_000)
        page.screenshot(path=str(tmp_path / "composite_20.png"))
        assert not page.errors, page.errors
        _check_offline(page)
    finally:
        served.stop()


def test_a_watched_page_stays_while_a_page_nobody_watches_is_closed(browser, sampledata,
                                                                    tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(SAMPLE_STACK, folder / "bead.tif")
    # a browser has 30 s to connect to a rendered page (a loaded machine needs ~10)
    served = _serve(tmp_path, "stack-browser", "--path", str(folder), "--idle-minutes", "0.5")
    try:
        page = _open(browser, served, "T=1 C=1 Z=61 Y=128 X=128")
        served.wait_for_kernels(1)
        watched = served.kernels()[0]
        with urllib.request.urlopen(served.url, timeout=180) as response:  # no browser
            assert response.status == 200
        deadline = time.monotonic() + 120
        while "Culling kernel" not in served.log.read_text():
            assert time.monotonic() < deadline, "the unwatched page was never closed"
            page.wait_for_timeout(200)
        served.wait_for_kernels(1)
        assert served.kernels() == [watched] and watched.is_running()
        assert not page.errors, page.errors
        _check_offline(page)
    finally:
        served.stop()


def test_session_page_starts_a_session_with_its_button(browser, tmp_path):
    storage = tmp_path / "storage"
    (storage / "alice").mkdir(parents=True)
    config_file = tmp_path / "autotx.toml"
    config_file.write_text(
        f'incoming = "{tmp_path / "pc" / "incoming"}"\nmanaged = "{tmp_path / "pc" / "managed"}"\n'
        f'destination = "{storage}"\nhost_alias = "session-test-scope"\n')
    config: Config = load_config(config_file)
    from autotx_lib.transfer.sessions import current_session

    served = _serve(tmp_path, "session", "-c", str(config_file))
    try:
        page = _open(browser, served, "no session is open")
        assert "session-test-scope" in page.locator("body").inner_text()
        page.get_by_placeholder("your user name").fill("alice")
        page.get_by_role("button", name="Start session").click()
        page.get_by_text("session started for alice").wait_for(timeout=30_000)
        assert current_session(config).user == "alice" and current_session(config).started_by \
            == "widget"
        page.get_by_role("button", name="End session").wait_for(timeout=30_000)
        page.screenshot(path=str(tmp_path / "session.png"))
        assert not page.errors, page.errors
        _check_offline(page)
    finally:
        served.stop()
