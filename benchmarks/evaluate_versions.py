"""The evaluate stage of two versions of this project, side by side on one model: wall seconds of
`python stages/evaluate.py` (start-up and model loading included, as `dvc repro` pays them).

    python benchmarks/evaluate_versions.py                    # before: 9bc7b96~1, after: HEAD
    python benchmarks/evaluate_versions.py --before REV --repeats 3

`--before` defaults to the last commit before the metrics issue's work (no KID, precision /
recall, rec_distance, registry, per-image draws or memoised statistics). Each version runs from
its own tree (`git archive REV`; "after" is the working tree) with its own params.yaml, on the
same model, featurenet, refstats and shards, a throw-away MLflow store, and, for "after", a cold
statistics cache each time (`ALAE_STATS_CACHE`: a fresh folder) and then a warm one. The versions
take turns (before, after, before, after, ...), so a machine that slows down slows both alike.

The old code reads a copy of the model file stamped with its own checkpoint version and params
(their `model` sections must agree): its timings are real, its numbers are not (the format
changed what the weights mean), so this prints no metric of "before".
Not a test: numbers depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import click  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

BEFORE = "9bc7b96~1"


def export_tree(rev: str, dst: Path) -> None:
    """The files of commit `rev` under `dst`."""
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(dst, filter="data")


def model_for(tree: Path, model: Path, work: Path) -> Path:
    """A copy of `model` that `tree`'s code reads: its checkpoint version, its own params.yaml
    as the model's params (keys added since are unknown to it; the `model` sections must agree),
    no training state (evaluate reads the EMA weights only)."""
    text = (tree / "alae" / "checkpoint.py").read_text()
    version = int(next(line.split("=")[1] for line in text.splitlines()
                       if line.startswith("VERSION = ")))
    ckpt = torch.load(model, map_location="cpu", weights_only=False)
    params = yaml.safe_load((tree / "params.yaml").read_text())
    if params["model"] != ckpt["params"]["model"]:
        raise click.ClickException(f"{tree / 'params.yaml'}: its model section differs from "
                                   f"{model}'s: the two versions would time different models")
    ckpt.pop("training", None)
    ckpt.update(version=version, params=params)
    out = work / f"model-{tree.name}.pt"
    torch.save(ckpt, out)
    return out


def run_stage(tree: Path, model: Path, args: dict[str, str], work: Path, env: dict) -> float:
    out = work / "eval.json"
    cmd = [sys.executable, str(tree / "stages" / "evaluate.py"), "--params",
           str(tree / "params.yaml"), "--model", str(model), "--out", str(out),
           *(x for k, v in args.items() for x in (f"--{k}", v))]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise click.ClickException(f"{tree}: evaluate failed:\n{done.stderr[-3000:]}")
    return seconds


@click.command()
@click.option("--before", default=BEFORE, show_default=True, help="git revision")
@click.option("--repeats", default=2, show_default=True)
@click.option("--model", default=str(ROOT / "models/alae.pt"), show_default=True)
@click.option("--featurenet", default=str(ROOT / "models/featurenet.pt"), show_default=True)
@click.option("--refstats", default=str(ROOT / "models/refstats_classifier.npz"),
              show_default=True)
@click.option("--shards", default=str(ROOT / "data/shards"), show_default=True)
def main(before: str, repeats: int, model: str, featurenet: str, refstats: str,
         shards: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="evaluate_versions-"))
    try:
        old = work / "before"
        export_tree(before, old)
        args = {"featurenet": featurenet, "refstats": refstats, "shards": shards}
        models = {"before": model_for(old, Path(model), work), "after": Path(model)}
        trees = {"before": old, "after": ROOT}
        times: dict[str, list[float]] = {"before": [], "after": [], "after, warm cache": []}
        for i in range(repeats):
            for name in ("before", "after"):
                env = {**os.environ, "DVC_ROOT": str(work / f"root-{name}"),
                       "MLFLOW_TRACKING_URI": f"sqlite:///{work / f'mlflow-{name}.db'}",
                       "ALAE_STATS_CACHE": str(work / f"cache-{i}")}
                (work / f"root-{name}").mkdir(exist_ok=True)
                times[name].append(run_stage(trees[name], models[name], args, work, env))
                if name == "after":   # the same cache again: what a second evaluation pays
                    times["after, warm cache"].append(
                        run_stage(trees[name], models[name], args, work, env))
                print(f"round {i + 1}: {name} {times[name][-1]:.1f} s", file=sys.stderr)
        keys = sorted(json.loads((work / "eval.json").read_text()))
        print(f"evaluate stage, {repeats} runs each, taking turns; before = {before}; "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        print("| version | seconds (each run) | median |")
        print("|---|---|---|")
        for name, ts in times.items():
            print(f"| {name} | {', '.join(f'{t:.1f}' for t in ts)} | "
                  f"{statistics.median(ts):.1f} |")
        ratio = statistics.median(times["after"]) / statistics.median(times["before"])
        print(f"\nafter / before (medians, cold cache) = {ratio:.3f}")
        print(f"after's keys: {', '.join(keys)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
