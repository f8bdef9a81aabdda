"""`anydoor-demo` clicked through in a real headless browser: upload a reference and a scene, paint the target
region, click Insert, an inserted image appears. Chromium is Debian's (`apt-get install chromium`, done by
.ci/setup where apt is available) or any Chromium named by ANYDOOR_CHROMIUM; Playwright drives it."""
import base64, contextlib, io, os, shutil, socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio", reason="the demo needs gradio (pip install 'anydoor-literate[demo]')")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (the dev extra)")

CHROMIUM = os.environ.get("ANYDOOR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here: apt-get install chromium "
                                "(or set ANYDOOR_CHROMIUM to a Chromium/Chrome binary)")
# what a closed network needs: no background connections, no sandbox as root, no GPU
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    return port


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    "The demo on the shipped tiny AnyDoor, served on a free local port; the two pictures to upload."
    import torch
    from anydoor.app import build_demo
    from anydoor.cli import shipped_model
    from anydoor.core import sample_object, sample_scene
    if shipped_model() is None: pytest.skip("no shipped weights (anydoor/weights/anydoor-tiny)")
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("demo")
    gift, alpha = sample_object("gift"); gift.putalpha(alpha); gift.save(tmp / "gift.png")
    sample_scene("coffee").save(tmp / "coffee.png")
    demo = build_demo(device="cpu")
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", tmp
    demo.close()


def _upload(page, elem: str, path: Path):
    with page.expect_file_chooser() as chooser:
        page.locator(f"#{elem} [data-testid=image]").click()
    chooser.value.set_files(str(path))


def _paint(page, elem: str, dx: float, dy: float, length: int = 60):
    "Drag the brush from the canvas centre + (dx, dy) px (the uploaded picture is centred in the canvas)."
    box = page.locator(f"#{elem} canvas").first.bounding_box()
    x, y = box["x"] + box["width"] / 2 + dx, box["y"] + box["height"] / 2 + dy
    page.mouse.move(x, y); page.mouse.down()
    for k in range(1, 11): page.mouse.move(x + length * k / 10, y + 0.6 * length * k / 10)
    page.mouse.up()


def _image_bytes(page, src: str) -> bytes:
    if src.startswith("data:"): return base64.b64decode(src.split(",", 1)[1])
    return page.request.get(src).body()


@contextlib.contextmanager
def _page_with_pictures(served):
    "A headless Chromium page on the demo with the gift uploaded as the reference and the coffee photo as the scene."
    url, tmp = served
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url); page.wait_for_selector("#scene")
            _upload(page, "reference", tmp / "gift.png")
            _upload(page, "scene", tmp / "coffee.png")
            page.wait_for_timeout(1500)                       # the editors draw the pictures
            yield page
        finally:
            browser.close()


def test_upload_paint_insert(served):
    _, tmp = served
    with _page_with_pictures(served) as page:
        _paint(page, "scene", 40, -60)
        page.wait_for_timeout(500)
        page.click("#insert")
        img = page.locator("#result img").first
        img.wait_for(state="visible", timeout=120_000)
        page.screenshot(path=str(tmp / "page.png"))
        out = Image.open(io.BytesIO(_image_bytes(page, img.get_attribute("src")))).convert("RGB")
    scene = Image.open(tmp / "coffee.png").convert("RGB")
    assert out.size == scene.size                             # the whole scene comes back ...
    diff = np.abs(np.asarray(out, np.int16) - np.asarray(scene, np.int16)).sum(-1) > 0
    assert 0.005 < diff.mean() < 0.9, diff.mean()             # ... changed around the painted region only
    ys, xs = np.nonzero(diff)
    assert xs.mean() > scene.width / 2 and ys.mean() < scene.height * 0.6, (xs.mean(), ys.mean())  # upper right


def test_missing_paint_is_a_message(served):
    with _page_with_pictures(served) as page:
        page.click("#insert")                                 # nothing painted on the scene
        page.get_by_text("paint over the scene").first.wait_for(timeout=60_000)
