"""`dvc plots show` draws the loss curves with no network: its page loads Vega from vendor/vega
(`.dvc/config` names the template), not from DVC's CDN.

Skips, saying why, where Debian's chromium is not installed (`.ci/run` installs it)."""
import csv
from pathlib import Path

import pytest

from pipeline_helpers import copy_repo, run
from server_helpers import CHROMIUM, LOSSES, OFFLINE, chromium, drawn_points, keep_screenshot

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed "
                                 "(apt-get install chromium; .ci/run does it)")]


def offline_page(repo: Path, profile: Path) -> str:
    run(["dvc", "plots", "show"], repo)
    page = repo / "dvc_plots" / "index.html"
    return chromium(*OFFLINE, "--dump-dom", page.as_uri(), profile=profile).stdout


def test_loss_curves_render_offline_one_point_per_tick(reproduced_repo, tmp_path):
    repo = copy_repo(reproduced_repo, tmp_path / "repo")
    train_csv = repo / "plots" / "train.csv"
    rows = list(csv.DictReader(train_csv.open()))
    assert len(rows) >= 2
    dom = offline_page(repo, tmp_path / "profile-all")
    assert 'class="marks"' in dom, "no Vega chart on the page (Vega not loaded?)"
    assert ">kimg<" in dom, "the loss plot has no kimg axis"
    assert drawn_points(dom) == len(LOSSES) * len(rows)

    page = (repo / "dvc_plots" / "index.html").as_uri()
    shot = tmp_path / "dvc-plots-offline.png"
    chromium(*OFFLINE, f"--screenshot={shot}", "--window-size=1000,1400", page,
             profile=tmp_path / "profile-shot")
    assert shot.stat().st_size > 10_000
    keep_screenshot(shot)

    # a run stopped after its first tick has no line to draw, only its points
    train_csv.write_text("".join(train_csv.read_text().splitlines(keepends=True)[:2]))
    assert drawn_points(offline_page(repo, tmp_path / "profile-one")) == len(LOSSES)
