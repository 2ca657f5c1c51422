"""docs/dvc-plots.png and docs/mlflow-runs.png: what a researcher sees of a finished `make run`.

In the repository after `make run` (or `dvc repro`): renders `dvc plots show`'s page (the loss
curves drawn by the vendored Vega, and every figure) in headless Chromium with no network, and
opens the project's MLflow store in a real `mlflow ui` on its experiment page. Checks what a
screenshot alone cannot show (every loss point drawn, every figure loaded, the runs table rather
than the traces view) and saves both screenshots.

    python scripts/ui_screenshots.py [--out docs]
"""
from __future__ import annotations

import csv
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import click  # noqa: E402

from alae.errors import UserError, exits_cleanly  # noqa: E402

def plots_page(tmp: Path, out: Path) -> str:
    """Screenshot of `dvc plots show`'s page offline; a line on what it drew."""
    from server_helpers import LOSSES, OFFLINE, chromium, drawn_points

    subprocess.run(["dvc", "plots", "show"], cwd=ROOT, check=True, capture_output=True)
    page = (ROOT / "dvc_plots" / "index.html").as_uri()
    dom = chromium(*OFFLINE, "--dump-dom", page, profile=tmp / "dom").stdout
    rows = list(csv.DictReader((ROOT / "plots" / "train.csv").open()))
    points = drawn_points(dom)
    figures = dom.count("<img")
    if points != len(LOSSES) * len(rows):
        raise UserError(f"{page}: {points} loss points drawn, plots/train.csv has "
                        f"{len(LOSSES)} x {len(rows)} (Vega not loaded offline?)")
    chromium(*OFFLINE, f"--screenshot={out}", "--window-size=1100,4700", page,
             profile=tmp / "shot")
    return f"dvc plots: {points} loss points, {figures} figures -> {out}"


def mlflow_page(tmp: Path, out: Path) -> str:
    """Screenshot of the project's experiment in a real `mlflow ui`; a line on what it showed."""
    from mlflow.tracking import MlflowClient

    from alae.tracking import experiment_url, project_experiment, tracking_uri
    from server_helpers import chromium, free_port, wait_until_healthy

    store = tracking_uri(ROOT)
    if MlflowClient(store).get_experiment_by_name("alae") is None:
        raise UserError(f"{store}: no experiment 'alae' (run make run first)")
    experiment_id = project_experiment(store)  # its view tag as a stage would set it
    port, log_path = free_port(), tmp / "ui.log"
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui",
                                   "--backend-store-uri", store, "--host", "127.0.0.1",
                                   "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_healthy(base, server, log_path, timeout=120)
            url = experiment_url(base, experiment_id)
            dom = chromium("--dump-dom", url, profile=tmp / "mdom").stdout
            latest = MlflowClient(store).search_runs([experiment_id], max_results=1,
                                                     order_by=["attributes.start_time DESC"])
            if latest and latest[0].info.run_name not in dom:
                raise UserError(f"{url}: the latest run {latest[0].info.run_name} is not on "
                                "the page (the traces view?)")
            chromium(f"--screenshot={out}", "--window-size=1600,1000", url,
                     profile=tmp / "mshot")
        finally:
            server.terminate()
            server.wait(timeout=30)
    return f"mlflow ui: {url} (latest run on the page) -> {out}"


@click.command()
@click.option("--out", default="docs", show_default=True, help="folder for the two screenshots")
@exits_cleanly
def main(out: str) -> None:
    from server_helpers import CHROMIUM

    if CHROMIUM is None:
        raise UserError("chromium is not installed (apt-get install chromium)")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        print(plots_page(Path(tmp), folder / "dvc-plots.png"))
        print(mlflow_page(Path(tmp), folder / "mlflow-runs.png"))


if __name__ == "__main__":
    main()
