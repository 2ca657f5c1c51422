"""The real `alae explore` page in headless Chromium, with no name resolving (no CDN, no web
fonts): it loads fully, an uploaded PNG is reconstructed, a direction slider edits it, and a
file that is no image is said on the page while the server goes on serving.

Driven through Selenium with Debian's chromedriver named explicitly (nothing is downloaded);
skips, saying why, where `chromium` or `chromium-driver` is missing (`make test` installs both)."""
import io
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from server_helpers import (CHROMEDRIVER, CHROMIUM, chromium_driver, free_port, keep_screenshot,
                            wait_until_healthy)
from test_edit import alae, files, images, ok  # noqa: F401  (files: a fixture)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                 reason="chromium or chromedriver not installed (apt-get install "
                                        "chromium chromium-driver; make test does it)")]

ROOT = Path(__file__).resolve().parents[1]
WAIT = 60   # seconds for the page or an action to show up (2 shared CPU cores)


@pytest.fixture(scope="module")
def page(files, tiny_shards, tmp_path_factory):
    """`alae explore` serving the tiny StyleALAE with two SeFa directions and a test gallery."""
    root = tmp_path_factory.mktemp("explore")
    directions = root / "sefa.npz"
    ok(alae("directions", "--model", files / "style.pt", "--method", "sefa", "--top", "2",
            "--layers", "all", "--limit", "200", "--out", directions, "--device", "cpu"))
    port = free_port()
    log_path = root / "explore.log"
    log = open(log_path, "w")
    # `python -m alae.cli` from the checkout: this code, whichever checkout the venv installed
    server = subprocess.Popen([sys.executable, "-m", "alae.cli", "explore", "--model",
                               str(files / "style.pt"), "--directions", str(directions),
                               "--shards", str(tiny_shards), "--port", str(port),
                               "--device", "cpu"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, server, log_path, timeout=120, path="/gradio_api/info")
        yield base, server, log_path
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture
def browser(tmp_path):
    driver = chromium_driver(tmp_path / "p")
    try:
        yield driver
    finally:
        driver.quit()


def until(driver, what, message: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, poll_frequency=0.2).until(lambda d: what(d), message)


def src(driver, elem_id: str):
    """The src of the image shown in component `elem_id`, or None while it shows none."""
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} img")
    return found[0].get_attribute("src") if found else None


def fetched(url: str) -> np.ndarray:
    with urllib.request.urlopen(url, timeout=30) as r:
        return np.asarray(Image.open(io.BytesIO(r.read())).convert("L"), dtype=np.int16)


def status(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, "status").text


def test_upload_reconstruct_and_edit_with_a_slider_offline(page, browser, files, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    base, server, log = page
    browser.get(base)
    until(browser, lambda d: "Pick a test image" in status(d),
          "the page did not load (stuck at Loading…?)")
    assert src(browser, "reconstruction") is None and src(browser, "edited") is None
    # nothing the page asked for left 127.0.0.1: no CDN, no font service
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(r.startswith(base) for r in resources), resources

    upload = until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#upload-a input[type=file]"),
                   "no file input to upload to")[0]
    upload.send_keys(str(images(files, 1)[0]))
    recon = until(browser, lambda d: src(d, "reconstruction"), "no reconstruction shown")
    edited = until(browser, lambda d: src(d, "edited"), "no edited image shown")
    assert fetched(recon).shape == (256, 256)
    assert np.abs(fetched(edited) - fetched(recon)).max() <= 1   # every slider at 0

    slider = browser.find_element(By.CSS_SELECTOR, "#direction-0 input[type=range]")
    slider.send_keys(Keys.END)    # all the way: +3 std, as a person's keyboard would
    moved = until(browser, lambda d: src(d, "edited") not in (None, edited),
                  "the edited image did not change with the slider") and src(browser, "edited")
    assert np.abs(fetched(moved) - fetched(recon)).max() > 8
    assert src(browser, "reconstruction") == recon   # a slider leaves the reconstruction be
    # the A -> B slider (first direction to second) adds its own step
    browser.find_element(By.CSS_SELECTOR, "#direction-pair input[type=range]").send_keys(Keys.HOME)
    paired = until(browser, lambda d: src(d, "edited") not in (None, moved),
                   "the edited image did not change with the A -> B slider") and src(browser, "edited")
    assert np.abs(fetched(paired) - fetched(moved)).max() > 8

    # a test image picked from the gallery: its own reconstruction, and the slider's edit
    browser.find_elements(By.CSS_SELECTOR, "#gallery-a img")[1].click()
    until(browser, lambda d: src(d, "reconstruction") not in (None, recon),
          "the reconstruction did not change with a new upload")
    until(browser, lambda d: src(d, "edited") not in (None, moved), "no edit of the new image")
    # B's coarse styles mixed in, and a sample
    assert src(browser, "mixed") is None
    browser.find_elements(By.CSS_SELECTOR, "#gallery-b img")[2].click()
    mixed = until(browser, lambda d: src(d, "mixed"), "no mix shown")
    assert np.abs(fetched(mixed) - fetched(src(browser, "reconstruction"))).max() > 8
    browser.find_element(By.ID, "sample-button").click()
    until(browser, lambda d: src(d, "sample"), "no sample shown")
    time.sleep(1)   # let the images paint before the screenshot
    shot = tmp_path / "explorer.png"
    browser.save_screenshot(str(shot))
    keep_screenshot(shot)
    assert shot.stat().st_size > 10_000
    assert server.poll() is None


def test_a_file_that_is_no_image_is_said_on_the_page(page, browser, files):
    from selenium.webdriver.common.by import By

    base, server, log = page
    browser.get(base)
    until(browser, lambda d: "Pick a test image" in status(d), "the page did not load")
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#upload-a input[type=file]"),
          "no file input to upload to")[0].send_keys(str(files / "junk.png"))
    until(browser, lambda d: "unreadable image" in status(d),
          "no message on the page for a file that is no image")
    assert "Error" in status(browser) and src(browser, "reconstruction") is None
    assert server.poll() is None
    urllib.request.urlopen(base, timeout=10).close()   # still serving
