"""Helpers for tests that start a real server (the MLflow UI, the team tracking server) and open
pages in headless Chromium."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# no name resolves: a page that needs the network (a CDN) fails as it would offline. The rule
# would catch the address 127.0.0.1 too (Chromium 156), so a local server stays reachable.
OFFLINE = ("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--disable-quic")


CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)


def chromium_driver(profile: Path, window: str = "1400,1300"):
    """Selenium's headless Chromium through Debian's chromedriver (named, nothing downloads),
    with no name resolving but 127.0.0.1 (OFFLINE). The caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", f"--window-size={window}", f"--user-data-dir={profile}",
                *OFFLINE):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


LOSSES = ("loss_d", "loss_g", "lae")  # dvc.yaml's `losses` plot


def drawn_points(dom: str) -> int:
    """Points Vega drew on a `dvc plots show` page: its SVG labels every point ("kimg: 0.25;
    y: ...") for screen readers."""
    return dom.count('aria-roledescription="point"')


def free_port() -> int:
    """A port nothing on 127.0.0.1 listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float,
                       path: str = "/health") -> None:
    """Poll `url` + `path`; fail the test with the server's log if it exits or is not up in time."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url + path, timeout=2).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server at {url} did not start:\n{log.read_text()}")
            time.sleep(0.5)


def keep_screenshot(shot: Path) -> None:
    """Copy a test's screenshot into `$SCREENSHOTS_DIR` when set (tests/screenshots/ holds the
    ones committed), so a reader can look at what the browser showed."""
    if os.environ.get("SCREENSHOTS_DIR"):
        Path(os.environ["SCREENSHOTS_DIR"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(os.environ["SCREENSHOTS_DIR"]) / shot.name)


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    """Headless Chromium with a fresh profile, given 15 s of virtual time to run the page's scripts."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--virtual-time-budget=15000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)
