"""One training run as the pipeline runs it: launch mode, resume, tracking and periodic evaluation
around `loop.Trainer`, which itself knows no tracker and no file layout.

- Launch: `train.nproc` > 1 outside torchrun re-runs the caller's command under `torchrun
  --standalone` (one machine); under torchrun every rank joins the process group, rank 0 does
  all the writing and the other ranks train alongside it (same checkpoint, same batches).
- Resume: checkpoints live in the run's working folder `.alae/runs/<run key>/` (git-ignored, not
  a DVC output, so neither `dvc repro` nor `--temp`/`--queue` copies throw them away). Started
  again with the same params and code (same run key), training continues from the newest
  checkpoint; a run that already finished is not trained again, its outputs are written from its
  final state.
- Tracking: per tick the losses, img/s, the growing schedule and the quick FID, and a fixed-seed
  sample grid per level of detail, go to the pipeline's MLflow run through `alae.tracking`'s run
  object; steps the run already holds (from before a crash) are not logged twice.
"""
from __future__ import annotations

import copy
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from alae.checkpoint import RunCheckpoints, load_checkpoint, save_model
from alae.config import Params, load_params, parse_params
from alae.data import read_manifest
from alae.data.fit import check_fits_shards
from alae.devices import resolve_device
from alae.distributed import init_from_env, launched_by_torchrun, shutdown
from alae.errors import CheckpointError, UserError
from alae.figures import snapshot_grid
from alae.io import write_csv
from alae.tracking import PipelineRun, pipeline_run, run_dir, run_key
from alae.train.loop import Hooks, Trainer

TICK_METRICS = ("loss_d", "loss_g", "lae", "img_per_s", "lod", "alpha", "resolution", "batch_size")
QUICK_FID = "fid_quick_classifier"  # the key in the featurenet's default space
# The train params that set how long a run lasts and how many checkpoints it keeps, and nothing
# of its training up to any image count: the schedule, the data order and every update read
# neither. A run may go on from another's checkpoint when only these differ (extension).
LENGTH_KEYS = ("kimg", "keep_checkpoints")


def quick_fid_key(params: Params) -> str:
    """The quick FID's MLflow key: the featurenet's space, as every metric key names it."""
    return f"fid_quick_{params.featurenet.kind}"


@dataclass(frozen=True)
class Trained:
    """What rank 0 reports of a finished run (other ranks get None)."""
    images_seen: int
    seconds: float
    out: str


def train_pipeline(params_path: str, shards: str, featurenet: str, out: str, plots: str,
                   relaunch: Optional[Sequence[str]] = None) -> Optional[Trained]:
    """Train (or resume, or find finished) the run of `params_path` on `shards`; write the model
    file `out` and the per-tick table `plots`, and record it all in the pipeline's MLflow run.
    `relaunch`: the command (script and arguments) that repeats this call, run under torchrun
    when `train.nproc` > 1 and this process was not started by torchrun."""
    params = load_params(params_path)
    check_fits_shards(params, read_manifest(shards), shards)  # before any work
    cfg = params.train
    if not launched_by_torchrun():
        if cfg.nproc > 1:
            if relaunch is None:
                raise UserError(f"train.nproc: {cfg.nproc} processes need torchrun: run the "
                                "train stage, or this under torchrun")
            with RunCheckpoints(run_dir(run_key(params)), keep=cfg.keep_checkpoints
                                ).exclusive() as store:  # every rank then finds it in place
                extend_shorter_run(params, store)
            raise SystemExit(relaunch_with_torchrun(cfg.nproc, relaunch))
        return _train_and_record(params, params_path, shards, featurenet, out, plots)
    rank, size = init_from_env(resolve_device(cfg.device, "train.device").type)
    # config.py checks train.nproc; several nodes make the world larger than that
    for entry in (cfg.batch_size if isinstance(cfg.batch_size, tuple) else (cfg.batch_size,)):
        if entry % size:
            raise UserError(f"train.batch_size: {entry} does not split over {size} processes")
    try:
        if rank != 0:
            _follow_rank0(params, shards)
            return None
        return _train_and_record(params, params_path, shards, featurenet, out, plots)
    finally:
        shutdown()


def relaunch_with_torchrun(nproc: int, command: Sequence[str]) -> int:
    """`command` (a script and its arguments) under `torchrun --standalone --nproc_per_node N`;
    SIGTERM and Ctrl-C are passed on, so every rank checkpoints and stops."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", *command]
    child = subprocess.Popen(cmd)
    received: list[int] = []

    def forward(signum: int, _frame) -> None:
        received.append(signum)
        child.send_signal(signum)  # torchrun passes it to every rank: all checkpoint and stop

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    code = child.wait()
    if received:  # torchrun reports the signal with a traceback of its own; say it plainly
        print(f"stopped: {signal.Signals(received[0]).name} passed to all ranks; run the "
              "stage again to resume", file=sys.stderr)
        return 128 + received[0]
    return code


def _follow_rank0(params: Params, shards: str) -> None:
    """A rank other than 0: same checkpoint, same training, no files, no tracking."""
    store = RunCheckpoints(run_dir(run_key(params)), keep=params.train.keep_checkpoints)
    _, ckpt = store.latest(params)
    trainer = Trainer(params, shards, resume=ckpt)
    if not trainer.finished:
        trainer.run(Hooks(), progress=False)


def _train_and_record(params: Params, params_path: str, shards: str, featurenet: str, out: str,
                      plots: str) -> Trained:
    """Rank 0 (or the only process): checkpoints, outputs, MLflow, progress bar."""
    cfg = params.train
    with pipeline_run(params, "train") as run, \
            RunCheckpoints(run.workdir, keep=cfg.keep_checkpoints).exclusive() as store:
        found, ckpt = extend_shorter_run(params, store)
        trainer = Trainer(params, shards, resume=ckpt)
        meta = {"run_id": run.run_id, "run_key": run.key}
        if ckpt is not None and "extended_from" in ckpt["meta"]:
            meta["extended_from"] = ckpt["meta"]["extended_from"]
            run.set_tags({"alae.extended_from": meta["extended_from"]})
        if found is not None:
            print(f"train: {'already finished' if trainer.finished else 'resuming'} at "
                  f"{trainer.nimg} images from {found}", file=sys.stderr)
        if not trainer.finished:
            keys = TICK_METRICS + ((quick_fid_key(params),) if cfg.fid_every_kimg > 0 else ())
            report, snapshot = tracking_hooks(run, keys)
            for row in trainer.history:  # what an extended run's shorter run trained
                report(round(row["kimg"] * 1000), row)
            hooks = Hooks(report=report, snapshot=snapshot,
                          checkpoint=lambda t: store.save(t.ema, params, meta, t.state()))
            if cfg.fid_every_kimg > 0:
                from alae.metrics import METRICS_PROTOCOL
                hooks.quick_fid = quick_fid_hook(params, trainer, shards, featurenet)
                run.set_tags({"alae.metrics_protocol": str(METRICS_PROTOCOL)})
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
    return Trained(images_seen=nimg, seconds=seconds, out=out)


def extend_shorter_run(params: Params, store: RunCheckpoints
                       ) -> tuple[Optional[Path], Optional[dict]]:
    """The run's newest checkpoint, as `store.latest`; for a run with none yet, the checkpoint
    of `shorter_run_checkpoint` first becomes its own (meta "extended_from" names the source)."""
    found, ckpt = store.latest(params)
    if found is not None:
        return found, ckpt
    shorter = shorter_run_checkpoint(params, store.folder)
    if shorter is None:
        return None, None
    path, source = shorter
    origin = f"{path.parent.name}/{path.name}"
    store.adopt(path, source, params, {"run_key": store.folder.name, "extended_from": origin})
    print(f"train: extending run {path.parent.name} ({source['training']['images_seen']} "
          f"images trained, train.kimg {source['params']['train']['kimg']})", file=sys.stderr)
    return store.latest(params)


def shorter_run_checkpoint(params: Params, own: Path) -> Optional[tuple[Path, dict]]:
    """The newest checkpoint short of this run's end (`own` its folder) among the runs beside
    it whose params differ from `params` in `LENGTH_KEYS` only and whose code is today's (the
    folder's name is the run key its params give now); None if there is none."""
    total = max(1, round(params.train.kimg * 1000))  # as the Trainer counts it
    wanted = _without_length(params.to_dict())
    candidates: list[tuple[int, Path]] = []
    for folder in sorted(own.parent.iterdir()) if own.parent.is_dir() else ():
        if folder == own or not folder.is_dir():
            continue
        for path in reversed(RunCheckpoints(folder).paths()):
            images = path.stem.removeprefix("ckpt-")
            if images.isdigit() and int(images) < total:
                candidates.append((int(images), path))
                break
    for _, path in sorted(candidates, reverse=True):
        try:
            ckpt = load_checkpoint(path, mmap=True)  # the params first: runs can be large
            same_code = run_key(parse_params(ckpt["params"])) == path.parent.name
        except (CheckpointError, UserError, KeyError, TypeError):
            continue  # damaged, or written under a config this code no longer reads
        if "training" in ckpt and same_code and _without_length(ckpt["params"]) == wanted:
            return path, ckpt
    return None


def _without_length(raw: dict[str, Any]) -> dict[str, Any]:
    rest = copy.deepcopy(raw)
    for key in LENGTH_KEYS:
        rest.get("train", {}).pop(key, None)
    return rest


def quick_fid_hook(params: Params, trainer: Trainer, shards: str,
                   featurenet: str) -> Optional[Callable]:
    """The FID of `train.fid_images` samples against the whole test split in the featurenet's
    space, or None (with a note) when the data has no featurenet (a classifier without labels)."""
    # Imported here: the metrics stack loads only for runs that measure a quick FID.
    from alae.metrics import quick_fid
    from alae.metrics.features import ClassifierFeatures
    from alae.metrics.refstats import compute_reference

    try:
        extractor = ClassifierFeatures.from_file(featurenet, trainer.device)
    except CheckpointError as e:
        print(f"train: no quick FID ({e})", file=sys.stderr)
        return None
    if extractor.name != params.featurenet.kind:
        print(f"train: no quick FID ({featurenet} is a {extractor.name} featurenet, "
              f"featurenet.kind is {params.featurenet.kind})", file=sys.stderr)
        return None
    reference = compute_reference(extractor, shards, int(trainer.model.resolution))
    cfg, key = params.train, quick_fid_key(params)
    return lambda ema: {key: quick_fid(ema, extractor, reference, cfg.fid_images,
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
            print(f"warning: sample grid at {nimg} images not logged ({type(e).__name__})",
                  file=sys.stderr)

    return report, snapshot
