"""The viewer end to end in a real headless Chromium (Debian's chromium driven by Playwright).

Skipped where chromium or playwright is missing, unless FEATVIS_REQUIRE_BROWSER=1 (CI sets it,
and .ci/run installs chromium), which turns the skip into a failure. FEATVIS_SCREENSHOT=PATH
also saves the screenshot there (README's picture comes from this test).
"""
import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import featvis_fast as fv
from featvis_fast.viewer.protocol import Request
from featvis_fast.viewer.server import ViewerServer
from featvis_fast.viewer.session import ViewerSession

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _need(condition: bool, why: str) -> None:
    if not condition:
        if os.environ.get("FEATVIS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests are required (FEATVIS_REQUIRE_BROWSER=1) but {why}")
        pytest.skip(why)


@pytest.fixture(scope="module")
def _viewer_module():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    _need(sync_playwright is not None, "playwright is not installed (pip install -e '.[test]')")
    _need(os.path.exists(CHROMIUM), f"no chromium at {CHROMIUM} (apt-get install chromium)")
    model, preprocess = fv.load_model()
    session = ViewerSession(model, preprocess, layers=["_blocks.3", "_blocks.10", "_blocks.15"], input_size=320)
    session.add_image(fv.sample_image("chelsea"), "chelsea")
    session.add_image(fv.sample_image("coffee"), "coffee")
    server = ViewerServer(session, port=0)
    server.start()
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 900})
        page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
        page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
        page.goto(server.url)
        page.wait_for_function("window.featvis && window.featvis.ready", timeout=120_000)
        yield page, session, errors, server.url
        browser.close()
    server.stop()


@pytest.fixture
def viewer(_viewer_module):
    """The page freshly loaded (initial layer, colormap, one panel, nothing pinned), so each test
    starts from the same state in any order; the server, session and browser are shared."""
    page, session, errors, url = _viewer_module
    page.goto(url)
    page.wait_for_function("window.featvis && window.featvis.ready", timeout=120_000)
    errors.clear()
    return page, session, errors


def hover(page, panel: int, x: float, y: float) -> dict:
    """Hover image pixel (x, y) through the page's pointer path; wait for the frame to be painted."""
    before = page.evaluate("window.featvis.framesPainted")
    page.evaluate("([p, x, y]) => window.featvis.hoverAt(p, x, y)", [panel, x, y])
    page.wait_for_function("n => window.featvis.framesPainted > n", arg=before, timeout=30_000)
    page.wait_for_timeout(50)  # let a latest-wins follow-up settle
    return painted(page, panel)


def painted(page, panel: int) -> dict:
    """The last frame of a panel: its header, the bytes received, and the pixels on the heat canvas."""
    got = page.evaluate("""p => {
        const f = window.featvis.panels[p].lastFrame, c = window.featvis.heatCanvas(p);
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        return {header: f.header, rgba: Array.from(f.rgba), canvas: Array.from(px), w: c.width, h: c.height};
    }""", panel)
    got["rgba"], got["canvas"] = bytes(got["rgba"]), bytes(got["canvas"])
    return got


def server_frame(session, header: dict, x: float, y: float, colormap: str = "fire") -> bytes:
    req = Request("hover", 0, header["image"], header["layer"], x=x, y=y, metric=header["metric"], colormap=colormap)
    return session.frame(req)[1]


def test_hovering_two_points_paints_the_servers_maps(viewer):
    page, session, errors = viewer
    a = hover(page, 0, 60.0, 50.0)
    b = hover(page, 0, 350.0, 240.0)
    for frame, (x, y) in ((a, (60.0, 50.0)), (b, (350.0, 240.0))):
        assert frame["rgba"] == server_frame(session, frame["header"], x, y)
        assert frame["canvas"] == frame["rgba"], "the heat canvas does not hold the received map"
        assert (frame["w"], frame["h"]) == (frame["header"]["width"], frame["header"]["height"])
    assert a["header"]["cell"] != b["header"]["cell"] and a["rgba"] != b["rgba"]
    assert not errors, errors


def test_real_pointer_moves_drive_the_map_and_are_timed(viewer):
    page, session, errors = viewer
    box = page.locator('[data-testid="view-0"]').bounding_box()
    start = len(page.evaluate("window.featvis.latencies"))
    before = page.evaluate("window.featvis.framesPainted")
    for k in range(5):
        page.mouse.move(box["x"] + box["width"] * (0.3 + 0.1 * k), box["y"] + box["height"] * 0.5)
        page.wait_for_timeout(40)
    page.wait_for_function("n => window.featvis.framesPainted > n", arg=before, timeout=30_000)
    timed = page.evaluate("window.featvis.latencies")[start:]
    assert timed and all(t["ms"] > 0 and t["ms"] >= t["server_ms"] for t in timed)
    assert not errors, errors


def test_pin_layer_switch_and_colormap(viewer, tmp_path):
    page, session, errors = viewer
    page.evaluate("window.featvis.clickAt(0, 200.0, 150.0)")
    page.wait_for_function("window.featvis.pinned !== null && window.featvis.pinned !== undefined", timeout=30_000)
    pin = page.evaluate("window.featvis.pinned")
    assert (pin["x"], pin["y"]) == (200.0, 150.0)
    assert page.evaluate("window.featvis.panels[0].layer") != "_blocks.15"

    before = page.evaluate("window.featvis.framesPainted")
    page.select_option('[data-testid="layer-select"]', "_blocks.15")
    page.wait_for_function("""n => window.featvis.framesPainted > n
        && window.featvis.panels[0].lastFrame.header.layer === '_blocks.15'""", arg=before, timeout=60_000)
    frame = painted(page, 0)
    assert frame["header"]["channels"] == 320
    assert frame["rgba"] == server_frame(session, frame["header"], 200.0, 150.0)  # still at the pinned pixel

    before = page.evaluate("window.featvis.framesPainted")
    page.select_option('[data-testid="colormap-select"]', "viridis")
    page.wait_for_function("n => window.featvis.framesPainted > n", arg=before, timeout=30_000)
    page.wait_for_timeout(50)
    frame = painted(page, 0)
    assert frame["rgba"] == server_frame(session, frame["header"], 200.0, 150.0, colormap="viridis")
    assert frame["canvas"] == frame["rgba"]

    # two layers side by side with a shared cursor: hovering panel 1 moves both
    page.evaluate("window.featvis.unpin()")
    page.check('[data-testid="second-panel"]')
    page.select_option('[data-testid="layer1-select"]', "_blocks.3")
    page.select_option('[data-testid="layer-select"]', "_blocks.10")
    page.wait_for_timeout(300)
    page.evaluate("window.featvis.hoverAt(1, 230.0, 140.0)")
    page.wait_for_function("""() => [0, 1].every(p => {
        const h = window.featvis.panels[p].lastFrame && window.featvis.panels[p].lastFrame.header;
        return h && h.layer === ['_blocks.10', '_blocks.3'][p] && h.seq >= 0;
    })""", timeout=60_000)
    page.wait_for_timeout(300)
    for panel, layer in ((0, "_blocks.10"), (1, "_blocks.3")):
        frame = painted(page, panel)
        assert frame["header"]["layer"] == layer
        assert frame["rgba"] == server_frame(session, frame["header"], 230.0, 140.0, colormap="viridis")

    shot = page.screenshot(full_page=True)
    picture = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"))
    box = page.locator('[data-testid="view-0"]').bounding_box()
    region = picture[int(box["y"]):int(box["y"] + box["height"]), int(box["x"]):int(box["x"] + box["width"])]
    assert region.std() > 20, "the view in the screenshot is blank"
    (tmp_path / "viewer.png").write_bytes(shot)
    if os.environ.get("FEATVIS_SCREENSHOT"):
        with open(os.environ["FEATVIS_SCREENSHOT"], "wb") as fh:
            fh.write(shot)
    assert not errors, errors
