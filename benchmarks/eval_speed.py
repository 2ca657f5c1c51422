"""Evaluate-stage throughput, side by side in one run: FID of generations and of reconstructions
computed in memory (what the evaluate stage does) in the classifier and the Inception space, against
the common practice of writing samples as PNG files and running `python -m pytorch_fid` on the
folder (against a precomputed reference .npz, so both sides skip the reference pass).

    python benchmarks/eval_speed.py                      # 1000 images classifier, 48 Inception
    python benchmarks/eval_speed.py --images 5000 --inception-images 96

INCEPTION NUMBERS HERE ARE SPEED ONLY: the real FID weights cannot be had offline, so this script
writes a random stand-in weights file (benchmarks/standin.py) into a
temporary TORCH_HOME. The network and its cost are pytorch-fid's; its FID values mean nothing.

Data: `--shards` (default data/shards) or, when missing, Fashion-MNIST shards written to a
temporary folder. Model: a freshly initialised one from params.yaml's `model` section (speed does
not depend on training). Featurenet: models/featurenet.pt if present, else an untrained one of
the same architecture (same cost).
Not a test: numbers depend on the machine and on what else runs on it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import click  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from alae.config import DataConfig, EvaluateConfig, load_params  # noqa: E402
from alae.data import read_manifest, write_shards  # noqa: E402
from alae.featurenet import Featurenet, save_featurenet  # noqa: E402
from alae.errors import UserError  # noqa: E402
from alae.metrics import Evaluation  # noqa: E402
from alae.metrics.features import ClassifierFeatures  # noqa: E402
from alae.metrics.fid import FeatureStats, frechet_distance, save_stats  # noqa: E402
from alae.metrics.inception import InceptionFeatures  # noqa: E402
from alae.metrics.stats import split_stats  # noqa: E402
from alae.nn import build_model  # noqa: E402
from alae.pixels import to_uint8  # noqa: E402
from benchmarks.standin import write_standin_weights  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def classifier(path: Path, channels: int, resolution: int, work: Path) -> tuple:
    """(extractor, its file): the trained featurenet, else an untrained one (same cost)."""
    if not path.is_file():
        torch.manual_seed(0)
        path = work / "featurenet-untrained.pt"
        save_featurenet(Featurenet(channels, resolution, 10).eval(), path)
    return ClassifierFeatures.from_file(path), path


def write_pngs(model, n: int, batch: int, folder: Path, seed: int = 0) -> None:
    """What scripts usually do: sample, quantise to 8 bits, one PNG per image."""
    folder.mkdir(parents=True)
    z = torch.randn(n, int(model.latent), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for i, zb in enumerate(z.split(batch)):
            x = to_uint8(model.generate(zb)).cpu().numpy()
            for j, img in enumerate(x):
                img = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
                Image.fromarray(img).save(folder / f"{i * batch + j:06d}.png")


def fid_or_reason(a: FeatureStats, b: FeatureStats) -> str:
    try:
        frechet_distance(a, b)
        return ""
    except UserError:   # fewer images than feature dimensions: sqrtm of a singular product
        return " (Fréchet step refused: fewer images than dims)"


def command(args: list[str], env: dict) -> tuple[float, str]:
    """Seconds of one subprocess, startup and model loading included (as a user pays them)."""
    start = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if out.returncode == 0:
        return seconds, ""
    if "Imaginary component" in out.stderr or "FID undefined" in out.stderr:
        return seconds, " (stopped at the Fréchet step: fewer images than dims)"
    raise RuntimeError(f"{' '.join(args)} failed:\n{out.stderr[-2000:]}")


@click.command()
@click.option("--params", "params_path", default=str(ROOT / "params.yaml"), show_default=True)
@click.option("--shards", default=str(ROOT / "data/shards"), show_default=True)
@click.option("--featurenet", default=str(ROOT / "models/featurenet.pt"), show_default=True)
@click.option("--images", default=1000, show_default=True, help="images per classifier FID")
@click.option("--inception-images", default=48, show_default=True,
              help="images per Inception FID (a few img/s on a CPU)")
@click.option("--batch-size", default=500, show_default=True)
@click.option("--threads", default=0, help="torch threads (0: torch's default)")
def main(params_path: str, shards: str, featurenet: str, images: int, inception_images: int,
         batch_size: int, threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)
    params = load_params(params_path)
    work = Path(tempfile.mkdtemp(prefix="eval_speed-"))
    shards_dir = Path(shards)
    if not (shards_dir / "manifest.json").is_file():
        shards_dir = work / "shards"
        write_shards(DataConfig(limit=max(images, inception_images), shard_size=1000), shards_dir)
    manifest = read_manifest(shards_dir)
    channels, resolution = int(manifest["channels"]), int(manifest["resolution"])
    torch.manual_seed(0)
    model = build_model(params.model, channels, resolution).eval().requires_grad_(False)
    os.environ["TORCH_HOME"] = str(work / "torch_home")        # the stand-in, never the real one
    write_standin_weights()
    cls_extractor, featurenet_file = classifier(Path(featurenet), channels, resolution, work)
    spaces = {"classifier": (cls_extractor, images),
              "inception": (InceptionFeatures.load("cpu"), inception_images)}

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model.kind "
          f"{params.model.kind}, {resolution}x{resolution}x{channels}; batch {batch_size}")
    print("Inception rows use a random stand-in weights file: speed only, not an FID.\n")
    rows = []
    for space, (extractor, n) in spaces.items():
        batch = min(batch_size, n)
        cfg = EvaluateConfig(num_images=n, batch_size=batch, features=space)
        ref = split_stats(extractor, shards_dir, "test", resolution, batch, n).stats
        # where the time goes: the model alone, the extractor alone, the Fréchet distance alone
        z = torch.randn(n, int(model.latent))
        with torch.no_grad():
            x, t_gen = timed(lambda: [model.generate(zb) for zb in z.split(batch)])
            _, t_feat = timed(lambda: [extractor(xb.clamp(-1, 1)) for xb in x])
        ev = Evaluation(model, extractor, shards_dir, cfg, ["fid"], reference=ref)
        _, t_stats = timed(lambda: ev.generated)
        fid, t_frechet = timed(lambda: fid_or_reason(ev.generated, ref))
        ev = Evaluation(model, extractor, shards_dir, cfg, ["rec_fid"], reference=ref)
        _, t_rec = timed(lambda: ev.reconstructed)
        rows += [(f"in memory, {space}", "generation FID", n, t_stats + t_frechet,
                  f"G {t_gen:.1f} s, features {t_feat:.1f} s, Fréchet {t_frechet:.1f} s{fid}"),
                 (f"in memory, {space}", "reconstruction FID", n, t_rec + t_frechet,
                  "+ decoding the test shards, E and G; Fréchet as above")]
        # the PNG route: write samples, then the pytorch-fid-shaped command on the folder
        folder = work / f"png-{space}"
        _, t_png = timed(lambda: write_pngs(model, n, batch, folder))
        npz = work / f"ref-{space}.npz"
        save_stats(npz, ref, features=space, **extractor.provenance())
        env = {**os.environ, "TORCH_HOME": os.environ["TORCH_HOME"]}
        if space == "inception":
            t_cmd, why = command([sys.executable, "-m", "pytorch_fid", str(folder), str(npz),
                             "--device", "cpu", "--batch-size", str(batch), "--num-workers",
                             "0"], env)
            label = "PNG + python -m pytorch_fid"
        else:
            t_cmd, why = command([sys.executable, "-m", "alae.cli", "fid", str(folder), str(npz),
                             "--features", "classifier", "--featurenet", str(featurenet_file),
                             "--device", "cpu", "--batch-size", str(batch)], env)
            label = "PNG + alae fid"
        rows.append((f"{label}, {space}", "generation FID", n, t_png + t_cmd,
                     f"PNG writing {t_png:.1f} s, command {t_cmd:.1f} s{why}"))

    print("| route | metric | images | seconds | img/s | where the time goes |")
    print("|---|---|---|---|---|---|")
    for route, metric, n, seconds, note in rows:
        print(f"| {route} | {metric} | {n} | {seconds:.1f} | {n / seconds:.1f} | {note} |")
    speed = {(r[0], r[1]): r[2] / r[3] for r in rows}
    mem, png = speed[("in memory, inception", "generation FID")], \
        speed[("PNG + python -m pytorch_fid, inception", "generation FID")]
    print(f"\nInception generation FID: in memory / PNG + pytorch-fid = {mem / png:.2f}x")
    cls = speed[("in memory, classifier", "generation FID")]
    print(f"classifier / Inception, in memory = {cls / mem:.0f}x")
    print(f"classifier generation FID: in memory / PNG + alae fid = "
          f"{cls / speed[('PNG + alae fid, classifier', 'generation FID')]:.2f}x")


if __name__ == "__main__":
    main()
