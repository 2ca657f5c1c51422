"""docs/explorer.png: the latent explorer (`alae explore`) on a model, as the README shows it.

Makes class-mean directions of the model (`alae directions`), serves the page on a free local
port, and drives it in headless Chromium as the browser test does (Debian's chromium and
chromedriver; no network): picks a test image, moves one direction's slider, mixes in a second
image's coarse styles, draws a sample, and saves the screenshot.

    python scripts/explorer_screenshot.py [--model models/alae.pt] [--shards data/shards]
        [--pick 9] [--direction "Ankle boot"] [--strength 2] [--out docs/explorer.png]
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import click  # noqa: E402

from alae.errors import UserError, exits_cleanly  # noqa: E402


@click.command()
@click.option("--model", default="models/alae.pt", show_default=True)
@click.option("--shards", default="data/shards", show_default=True)
@click.option("--pick", default=9, show_default=True, help="gallery index of image A")
@click.option("--mix-with", default=1, show_default=True, help="gallery index of image B")
@click.option("--direction", default="Ankle boot", show_default=True)
@click.option("--strength", default=2.0, show_default=True, help="std, in slider steps of 0.1")
@click.option("--out", default="docs/explorer.png", show_default=True)
@exits_cleanly
def main(model: str, shards: str, pick: int, mix_with: int, direction: str, strength: float,
         out: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from alae.edit.directions import load_directions
    from server_helpers import (CHROMEDRIVER, CHROMIUM, chromium_driver, free_port,
                                wait_until_healthy)

    if CHROMIUM is None or CHROMEDRIVER is None:
        raise UserError("chromium is not installed (apt-get install chromium chromium-driver)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        directions = tmp / "directions.npz"
        subprocess.run([sys.executable, "-m", "alae.cli", "directions", "--model", model,
                        "--data", shards, "--out", str(directions)], cwd=ROOT, check=True)
        names = [n.casefold() for n in load_directions(directions).names]
        if direction.casefold() not in names:
            raise UserError(f"--direction {direction!r}: the model's are {', '.join(names)}")
        index = names.index(direction.casefold())
        port, log_path = free_port(), tmp / "explore.log"
        with open(log_path, "w") as log:
            server = subprocess.Popen([sys.executable, "-m", "alae.cli", "explore", "--model",
                                       model, "--directions", str(directions), "--shards", shards,
                                       "--port", str(port)], cwd=ROOT, stdout=log,
                                      stderr=subprocess.STDOUT)
            base = f"http://127.0.0.1:{port}"
            driver = None
            try:
                wait_until_healthy(base, server, log_path, timeout=120, path="/gradio_api/info")
                driver = chromium_driver(tmp / "profile", window="1400,1750")

                def until(what, message):
                    return WebDriverWait(driver, 60, poll_frequency=0.2).until(
                        lambda d: what(d), message)

                def shown(elem_id):
                    return driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} img")

                driver.get(base)
                until(lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery-a img"),
                      "the page did not load")
                driver.find_elements(By.CSS_SELECTOR, "#gallery-a img")[pick].click()
                until(lambda d: shown("reconstruction"), "no reconstruction")
                slider = driver.find_element(By.CSS_SELECTOR,
                                             f"#direction-{index} input[type=range]")
                for _ in range(round(abs(strength) / 0.1)):
                    slider.send_keys(Keys.ARROW_RIGHT if strength > 0 else Keys.ARROW_LEFT)
                driver.find_elements(By.CSS_SELECTOR, "#gallery-b img")[mix_with].click()
                until(lambda d: shown("mixed"), "no mix")
                driver.find_element(By.ID, "sample-button").click()
                until(lambda d: shown("sample"), "no sample")
                driver.execute_script("window.scrollTo(0, 0)")
                time.sleep(2)   # the last edit and the images paint
                driver.save_screenshot(out)
            finally:
                if driver is not None:
                    driver.quit()
                server.terminate()
                server.wait(timeout=30)
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
