"""The training loop: time counted in images seen (kimg), three updates per batch, EMA after
each, one report per tick. It reports scalars (and a sample grid per level of detail) through
hooks and knows no tracker and no file layout.

Progressive growing (ALAE sec. 4): `schedule.Schedule` says, from the images seen alone, which
level trains, its blend alpha, batch size and learning rate. At each level switch the data stream
is reopened at the new resolution and batch size, and both Adams start afresh (as the reference
does: the moments of the old level's layers mean nothing to the new ones). During a transition
the real images fade from the upsampled half-resolution version to the full one, as G's output
and E's input path do.

Resume: `Trainer.state()` is everything the loop needs to go on exactly where it stopped: the
networks, the EMA copies (saved beside it by the caller), both Adams, the images seen, the next
tick/checkpoint/FID marks, the torch RNG, the per-tick history, the per-level sample grids, and
the position in the current level's data stream (batches drawn: the seeded stream is reopened
and fast-forwarded past them without decoding). Checkpoints are taken at tick ends, where no
partial tick sums are pending; a stop request (SIGTERM, Ctrl-C) closes the tick early.
"""
from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Iterator, Optional

import torch
import torch.nn.functional as F

from alae.config import Params
from alae.data import read_manifest, train_batches
from alae.devices import resolve_device
from alae.distributed import any_rank, mean_over_ranks, ranks_agree, world
from alae.errors import Stopped, UserError
from alae.nn import ALAE, Level, build_model
from alae.pixels import to_uint8
from alae.progress import progress_bar
from alae.train.ema import make_ema
from alae.train.precision import Precision
from alae.train.schedule import Phase, Schedule
from alae.train.steps import Optimizers, make_optimizers, train_step

SNAPSHOT_SEED = 1234  # the fixed latents of the per-level sample grids
SNAPSHOT_SAMPLES = 32


class TrainingDiverged(UserError):
    """A loss or a weight became NaN or infinite."""


class TrainingStopped(Stopped):
    """SIGTERM or Ctrl-C: a checkpoint was written and the run can be resumed."""


@dataclass
class Hooks:
    """What the caller does with the loop's products; every hook is optional."""
    report: Optional[Callable[[int, dict], None]] = None  # (images seen, tick row)
    snapshot: Optional[Callable[[int, int, torch.Tensor], None]] = None  # (nimg, lod, uint8 grid)
    checkpoint: Optional[Callable[["Trainer"], None]] = None  # state worth saving
    quick_fid: Optional[Callable[[ALAE], dict[str, float]]] = None  # every train.fid_every_kimg


@dataclass
class TrainResult:
    ema: ALAE
    model: ALAE
    images_seen: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    optimizers: Optional[Optimizers] = None
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)


def blend_real(real: torch.Tensor, alpha: float) -> torch.Tensor:
    """Fade real images in from the upsampled half-resolution version (reference: x * alpha +
    up(avgpool(x)) * (1 - alpha)), matching what G can produce mid-transition."""
    if alpha >= 1.0:
        return real
    low = F.interpolate(F.avg_pool2d(real, 2), scale_factor=2, mode="nearest")
    return torch.lerp(low, real, alpha)


@torch.no_grad()
def level_samples(ema: ALAE, z: torch.Tensor, lod: int) -> torch.Tensor:
    """EMA samples of fixed latents at level `lod`, upsampled to the final resolution, as uint8
    (N, C, H, W): small enough to keep every level's grid in the checkpoint. G's noise comes from
    a generator of its own, so a snapshot neither depends on nor moves the training's random
    stream, and is what one process draws whatever the number of ranks."""
    noise = torch.Generator(z.device).manual_seed(SNAPSHOT_SEED)
    images = ema.generate(z, level=Level(lod), noise=noise)
    images = F.interpolate(images, size=ema.resolution, mode="nearest").cpu()
    return to_uint8(images)


def _all_finite(model: torch.nn.Module) -> bool:
    return bool(torch.stack([p.isfinite().all() for p in model.parameters()]).all())


@contextlib.contextmanager
def _stop_on_signals(trainer: "Trainer") -> Iterator[None]:
    """SIGTERM and SIGINT ask the loop to stop after the current batch (never mid-update)."""
    def request(signum, _frame):
        trainer.stop_signal = signum

    handlers = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            handlers[sig] = signal.signal(sig, request)
    except ValueError:  # not the main thread: leave signals to whoever owns them
        pass
    try:
        yield
    finally:
        for sig, old in handlers.items():
            signal.signal(sig, old)


class Trainer:
    """One training run; `state()` and `Trainer(..., resume=checkpoint)` carry it across
    processes (the checkpoint as `alae.checkpoint.load_checkpoint` returns it)."""

    def __init__(self, params: Params, shards_dir: str | Path,
                 resume: Optional[dict[str, Any]] = None):
        cfg = self.cfg = params.train
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        # Denormal floats are orders of magnitude slower on x86 CPUs and change nothing here.
        torch.set_flush_denormal(True)
        torch.manual_seed(params.seed)
        self.params, self.shards_dir = params, shards_dir
        self.rank, self.world = world()  # data parallel: 1/world of every global batch per rank
        manifest = read_manifest(shards_dir)
        self.device = resolve_device(cfg.device, "train.device")
        self.model = build_model(params.model, manifest["channels"],
                                 manifest["resolution"]).to(self.device)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.precision = Precision(cfg.precision, self.device)
        self.ema = make_ema(self.model)
        self.schedule = Schedule.from_params(params, self.model.num_levels)
        self.fixed_z = torch.randn(SNAPSHOT_SAMPLES, self.model.latent,
                                   generator=torch.Generator().manual_seed(SNAPSHOT_SEED))
        self.total = max(1, round(cfg.kimg * 1000))
        self.tick = max(1, round(cfg.tick_kimg * 1000))
        self.nimg = 0
        self.marks = {"tick": self.tick, "checkpoint": self._every(cfg.checkpoint_kimg),
                      "fid": self._every(cfg.fid_every_kimg)}
        self.history: list[dict] = []
        self.snapshots: dict[int, torch.Tensor] = {}
        self.lod, self.batches_drawn, self.steps = -1, 0, 0
        self.opt: Optional[Optimizers] = None
        self.batches: Optional[Generator] = None
        self.seconds = 0.0  # training time over all sessions of the run
        self.stop_signal: Optional[int] = None
        if resume is not None:
            self._restore(resume)

    def _every(self, kimg: float) -> Optional[int]:
        return max(1, round(kimg * 1000)) if kimg > 0 else None

    @property
    def finished(self) -> bool:
        return self.nimg >= self.total

    # --- state ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The training state beside the EMA networks (weights_only-safe: tensors, plain types)."""
        state = {"model": self.model.state_dict(), "images_seen": self.nimg, "finished": self.finished, "marks": dict(self.marks),
                 "lod": self.lod, "batches_drawn": self.batches_drawn, "steps": self.steps,
                 "seconds": self.seconds,
                 "history": list(self.history), "snapshots": dict(self.snapshots),
                 "rng": {"torch": torch.get_rng_state()}}
        if self.device.type == "cuda":
            state["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.opt is not None:
            state["opt_ed"] = self.opt.ed.state_dict()
            state["opt_fg"] = self.opt.fg.state_dict()
        return state

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        """From a checkpoint dict as `alae.checkpoint` writes it (EMA beside the training state)."""
        state = checkpoint["training"]
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(checkpoint["ema"])
        self.nimg = int(state["images_seen"])
        self.marks.update(state["marks"])
        self.history = list(state["history"])
        self.snapshots = {int(k): v for k, v in state["snapshots"].items()}
        self.seconds = float(state["seconds"])
        self.steps = int(state["steps"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        lod = int(state["lod"])
        if lod >= 0 and not self.finished:
            phase = self.schedule(self.nimg)
            self._open_level(lod, self.schedule(self.schedule.level_start(lod)).batch_size,
                             phase.lr, skip=int(state["batches_drawn"]))
            self.opt.ed.load_state_dict(state["opt_ed"])
            self.opt.fg.load_state_dict(state["opt_fg"])
        self.lod = lod

    def _open_level(self, lod: int, batch_size: int, lr: float, skip: int = 0) -> None:
        """A fresh stream per level, at the level's resolution and batch, seeded by both; and
        fresh Adams (the reference resets them at each level)."""
        self._open_stream(lod, batch_size, skip)
        self.opt = make_optimizers(self.model, lr, self.cfg.beta1, self.cfg.beta2)
        self.lod = lod

    def _open_stream(self, lod: int, batch_size: int, skip: int) -> None:
        """Level `lod`'s data stream, `skip` batches into it."""
        self._close_stream()  # the previous level's loader workers end here
        local = batch_size // self.world  # config checks divisibility by train.nproc
        data = self.params.data
        self.batches = train_batches(self.shards_dir, self.model.level_resolution(lod), local,
                                     seed=self.params.seed * 1000 + lod, rank=self.rank,
                                     world_size=self.world, skip=skip * local,
                                     workers=data.loader_workers, flip=data.flip,
                                     pin_memory=self.device.type == "cuda")
        self.batches_drawn = skip

    def _close_stream(self) -> None:
        if self.batches is not None:
            self.batches.close()
            self.batches = None

    # --- the loop ------------------------------------------------------------------------
    def run(self, hooks: Hooks = Hooks(), progress: bool = True) -> TrainResult:
        cfg, model, device = self.cfg, self.model, self.device
        fixed_z = self.fixed_z.to(device)
        sums, steps = torch.zeros(3, device=device), 0
        session_start = tick_start = time.perf_counter()
        seconds_before, tick_nimg = self.seconds, self.nimg
        phase = self.schedule(self.nimg)
        bar = progress_bar(total=self.total, desc="train", enabled=progress and self.rank == 0)
        if self.batches is None and self.lod >= 0 and not self.finished:  # run() once more
            self._open_stream(self.lod, phase.batch_size, self.batches_drawn)
        with bar, _stop_on_signals(self), contextlib.closing(self):
            bar.update(self.nimg)
            while self.nimg < self.total:
                phase = self.schedule(self.nimg)
                if phase.lod != self.lod:
                    if self.lod >= 0:
                        self._snapshot(hooks, fixed_z)
                    self._open_level(phase.lod, phase.batch_size, phase.lr)
                for group in (*self.opt.ed.param_groups, *self.opt.fg.param_groups):
                    group["lr"] = phase.lr
                real, _ = next(self.batches)
                self.batches_drawn += 1
                real = blend_real(real.to(device, non_blocking=True), phase.alpha)
                real = real.contiguous(memory_format=self.memory_format)
                sums += train_step(model, self.ema, self.opt, real, phase.level, cfg, self.steps,
                                   self.precision).float()
                self.steps += 1
                n = real.shape[0] * self.world  # images of the global batch
                steps += 1
                self.nimg += n
                bar.update(n)
                # Collective, so that every rank stops after the same batch.
                stopping = any_rank(self.stop_signal is not None) and not self.finished
                if self.nimg >= self.marks["tick"] or self.finished or stopping:
                    now = time.perf_counter()
                    self.seconds = seconds_before + (now - session_start)
                    row = self._close_tick(sums, steps, phase, (self.nimg - tick_nimg) /
                                           max(now - tick_start, 1e-9))
                    if hooks.report is not None:
                        hooks.report(self.nimg, row)
                    bar.set_postfix(lod=f"{phase.lod}", alpha=f"{phase.alpha:.2f}",
                                    loss_d=f"{row['loss_d']:.3f}", loss_g=f"{row['loss_g']:.3f}",
                                    lae=f"{row['lae']:.3f}", img_s=f"{row['img_per_s']:.0f}")
                    sums.zero_()
                    steps, tick_nimg = 0, self.nimg
                    self._periodic(hooks, stopping)
                    tick_start = time.perf_counter()
                if stopping:
                    signum = self.stop_signal or signal.SIGTERM  # another rank's signal
                    name = signal.Signals(signum).name
                    raise TrainingStopped(f"{name} at {self.nimg} images; the checkpoint is "
                                          "saved: run the stage again to resume", signum)
            if self.lod >= 0 and self.lod not in self.snapshots:
                self._snapshot(hooks, fixed_z)
            self.seconds = seconds_before + (time.perf_counter() - session_start)
            if hooks.checkpoint is not None:
                hooks.checkpoint(self)
        return TrainResult(ema=self.ema, model=model, images_seen=self.nimg, seconds=self.seconds,
                           history=self.history, optimizers=self.opt, snapshots=self.snapshots)

    def close(self) -> None:
        """Ends the data stream (and its loader workers); `run` does at its end."""
        self._close_stream()

    def _close_tick(self, sums: torch.Tensor, steps: int, phase: Phase, img_per_s: float) -> dict:
        mean = mean_over_ranks(sums / steps).tolist()  # device syncs: here, once per tick
        if not all(math.isfinite(v) for v in mean) or not _all_finite(self.model):
            what = "a weight" if all(math.isfinite(v) for v in mean) else "a loss"
            raise TrainingDiverged(
                f"training diverged at {self.nimg} images ({what} is not finite: loss_d={mean[0]:.4g} "
                f"loss_g={mean[1]:.4g} lae={mean[2]:.4g}); the last checkpoint is kept as it was "
                "(try a lower lr or a larger train.r1_gamma)")
        if not ranks_agree(self.model, self.ema):
            raise RuntimeError(f"ranks diverged at {self.nimg} images: their weights or random "
                               "streams differ (work done on some ranks only drew from the global "
                               "RNG or changed a network)")
        row = {"kimg": self.nimg / 1000, "loss_d": mean[0], "loss_g": mean[1], "lae": mean[2],
               "img_per_s": img_per_s, "lod": phase.lod, "alpha": phase.alpha,
               "resolution": self.model.level_resolution(phase.lod),
               "batch_size": phase.batch_size}
        self.history.append(row)
        while self.marks["tick"] <= self.nimg:
            self.marks["tick"] += self.tick
        return row

    def _periodic(self, hooks: Hooks, stopping: bool) -> None:
        """Quick FID and checkpoint, each when its mark is passed (a stop always checkpoints)."""
        if self._passed("fid", self.cfg.fid_every_kimg) and hooks.quick_fid is not None:
            values = hooks.quick_fid(self.ema)
            if hooks.report is not None:
                hooks.report(self.nimg, values)
        if (self._passed("checkpoint", self.cfg.checkpoint_kimg) or stopping) \
                and hooks.checkpoint is not None and not self.finished:
            hooks.checkpoint(self)

    def _passed(self, mark: str, kimg: float) -> bool:
        if self.marks[mark] is None or self.nimg < self.marks[mark]:
            return False
        every = self._every(kimg)
        while self.marks[mark] <= self.nimg:
            self.marks[mark] += every
        return True

    def _snapshot(self, hooks: Hooks, fixed_z: torch.Tensor) -> None:
        self.snapshots[self.lod] = level_samples(self.ema, fixed_z, self.lod)
        if hooks.snapshot is not None:
            hooks.snapshot(self.nimg, self.lod, self.snapshots[self.lod])
