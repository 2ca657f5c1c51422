"""DVC stage `train`: the three-step ALAE training (progressive for the StyleALAE), resumable.

Checkpoints go to the run's working folder `.alae/runs/<run key>/` (git-ignored, not a DVC
output, so neither `dvc repro` nor `--temp`/`--queue` copies throw them away). Started again
with the same params and code (same run key), the stage continues from the newest checkpoint;
a run that already finished is not trained again, its outputs are written from its final state.
Writes the model file (EMA networks + training state), the per-tick table over the whole run,
and logs to MLflow per tick the losses, img/s, the growing schedule and the quick FID, and a
fixed-seed sample grid per level of detail as an image with its step; steps already in the run
(from before a crash) are not logged twice.
"""
import signal
import subprocess
import sys
from pathlib import Path

# This checkout's `alae`, even under `dvc exp run --temp` where an installed copy would be stale.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click  # noqa: E402
import numpy as np  # noqa: E402

from alae.checkpoint import RunCheckpoints, save_model  # noqa: E402
from alae.config import Params, load_params  # noqa: E402
from alae.data import read_manifest  # noqa: E402
from alae.data.fit import check_fits_shards  # noqa: E402
from alae.devices import resolve_device  # noqa: E402
from alae.distributed import init_from_env, launched_by_torchrun, shutdown  # noqa: E402
from alae.errors import CheckpointError, UserError, exits_cleanly  # noqa: E402
from alae.figures import snapshot_grid  # noqa: E402
from alae.io import write_csv  # noqa: E402
from alae.tracking import PipelineRun, pipeline_run, run_dir, run_key  # noqa: E402
from alae.train.loop import Hooks, Trainer  # noqa: E402

TICK_METRICS = ("loss_d", "loss_g", "lae", "img_per_s", "lod", "alpha", "resolution", "batch_size")
QUICK_FID = "fid_quick_classifier"


def quick_fid_hook(params: Params, trainer: Trainer, shards: str, featurenet: str):
    """The classifier-space FID of `train.fid_images` samples against the whole test split,
    or None (with a note) when the data has no featurenet (no labels)."""
    from alae.metrics import quick_fid
    from alae.metrics.features import ClassifierFeatures
    from alae.metrics.refstats import compute_reference

    try:
        extractor = ClassifierFeatures.from_file(featurenet, trainer.device)
    except CheckpointError as e:
        click.echo(f"train: no quick FID ({e})", err=True)
        return None
    reference = compute_reference(extractor, shards, int(trainer.model.resolution))
    cfg = params.train
    return lambda ema: {QUICK_FID: quick_fid(ema, extractor, reference, cfg.fid_images,
                                             seed=params.evaluate.seed)}


def tracking_hooks(run: PipelineRun, keys: tuple[str, ...]) -> tuple:
    """report/snapshot callbacks that skip steps the MLflow run already holds (a resumed run
    repeats the steps between its checkpoint and the crash: each step keeps one value)."""
    logged = {k: run.logged_steps(k) for k in keys}
    logged_images = run.logged_image_steps("samples")

    def report(nimg: int, row: dict) -> None:
        fresh = {k: row[k] for k in keys if k in row and nimg not in logged[k]}
        if fresh:
            run.log_metrics(fresh, step=nimg)

    def snapshot(nimg: int, lod: int, images) -> None:
        if nimg in logged_images:
            return
        res = 4 * 2 ** lod
        image = np.asarray(snapshot_grid(images, f"{res}x{res}"))
        try:
            run.log_image(image, key="samples", step=nimg)
        except Exception as e:  # noqa: BLE001 - a missing grid must not stop hours of training
            click.echo(f"warning: sample grid at {nimg} images not logged ({type(e).__name__})",
                       err=True)

    return report, snapshot


def relaunch_with_torchrun(nproc: int) -> int:
    """This stage again under `torchrun --standalone --nproc_per_node N` (one machine); SIGTERM
    and Ctrl-C are passed on, so every rank checkpoints and stops."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", str(Path(__file__).resolve()), *sys.argv[1:]]
    child = subprocess.Popen(cmd)
    received: list[int] = []

    def forward(signum: int, _frame) -> None:
        received.append(signum)
        child.send_signal(signum)  # torchrun passes it to every rank: all checkpoint and stop

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    code = child.wait()
    if received:  # torchrun reports the signal with a traceback of its own; say it plainly
        click.echo(f"stopped: {signal.Signals(received[0]).name} passed to all ranks; run the "
                   "stage again to resume", err=True)
        return 128 + received[0]
    return code


def follow_rank0(params: Params, shards: str) -> None:
    """A rank other than 0: same checkpoint, same training, no files, no tracking."""
    store = RunCheckpoints(run_dir(run_key(params)), keep=params.train.keep_checkpoints)
    _, ckpt = store.latest(params)
    trainer = Trainer(params, shards, resume=ckpt)
    if not trainer.finished:
        trainer.run(Hooks(), progress=False)


@click.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--shards", default="data/shards", show_default=True)
@click.option("--featurenet", default="models/featurenet.pt", show_default=True,
              help="classifier for the quick FID (train.fid_every_kimg)")
@click.option("--out", default="models/alae.pt", show_default=True)
@click.option("--plots", default="plots/train.csv", show_default=True)
@exits_cleanly
def main(params_path: str, shards: str, featurenet: str, out: str, plots: str) -> None:
    params = load_params(params_path)
    check_fits_shards(params, read_manifest(shards), shards)  # before any work
    cfg = params.train
    if cfg.nproc > 1 and not launched_by_torchrun():
        sys.exit(relaunch_with_torchrun(cfg.nproc))
    if launched_by_torchrun():
        rank, size = init_from_env(resolve_device(cfg.device, "train.device").type)
        for entry in (cfg.batch_size if isinstance(cfg.batch_size, tuple) else (cfg.batch_size,)):
            if entry % size:
                raise UserError(f"train.batch_size: {entry} does not split over {size} processes")
        try:
            if rank != 0:
                return follow_rank0(params, shards)
            train_and_record(params, params_path, shards, featurenet, out, plots)
        finally:
            shutdown()
    else:
        train_and_record(params, params_path, shards, featurenet, out, plots)


def train_and_record(params: Params, params_path: str, shards: str, featurenet: str, out: str,
                     plots: str) -> None:
    """Rank 0 (or the only process): checkpoints, outputs, MLflow, progress bar."""
    cfg = params.train
    with pipeline_run(params, "train") as run, \
            RunCheckpoints(run.workdir, keep=cfg.keep_checkpoints).exclusive() as store:
        found, ckpt = store.latest(params)
        trainer = Trainer(params, shards, resume=ckpt)
        meta = {"run_id": run.run_id, "run_key": run.key}
        if found is not None:
            click.echo(f"train: {'already finished' if trainer.finished else 'resuming'} at "
                       f"{trainer.nimg} images from {found}", err=True)
        if not trainer.finished:
            keys = TICK_METRICS + ((QUICK_FID,) if cfg.fid_every_kimg > 0 else ())
            report, snapshot = tracking_hooks(run, keys)
            hooks = Hooks(report=report, snapshot=snapshot,
                          checkpoint=lambda t: store.save(t.ema, params, meta, t.state()))
            if cfg.fid_every_kimg > 0:
                hooks.quick_fid = quick_fid_hook(params, trainer, shards, featurenet)
            trainer.run(hooks)
        seconds, nimg = trainer.seconds, trainer.nimg
        save_model(out, trainer.ema, params, {**meta, "images_seen": nimg},
                   training=trainer.state())
        write_csv(plots, trainer.history)
        if not run.logged_steps("train_seconds"):  # once per run, even when re-entered
            run.log_metrics({"train_seconds": seconds,
                             "train_img_per_s": nimg / max(seconds, 1e-9)})
        run.log_artifact(params_path)
        run.log_artifact(out, "model")
        run.log_artifact(plots, "plots")
    click.echo(f"trained {nimg} images in {seconds:.0f} s ({nimg / max(seconds, 1e-9):.0f} img/s)"
               f" -> {out}")


if __name__ == "__main__":
    main()
