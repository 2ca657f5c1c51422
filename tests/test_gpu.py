"""The CUDA path (`make gpu-check` runs these on a GPU machine; elsewhere they skip, saying why):
one training step's arithmetic on CUDA equals the CPU's in float64, bf16 and fp16 autocast track
fp32, fp16's GradScaler skips a step whose gradients overflowed, a checkpoint written on the GPU
resumes on the CPU and back, and two NCCL processes train like one (with two GPUs).

They need the library alone (no DVC, no MLflow, no Fashion-MNIST): the data are synthetic scenes
of scripts/synth_images.py, sharded at 8x8 as the shard stage does."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alae.config import DataConfig, parse_params
from test_precision import TINY   # the CPU bf16 test's model and schedule

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not CUDA, reason="needs a CUDA device (make gpu-check)")]


@pytest.fixture(scope="module")
def scenes8(tmp_path_factory) -> Path:
    """400 synthetic grey scenes at 8x8 (no labels), in shards of 200; procedural only (a GPU
    machine has no Fashion-MNIST items to composite)."""
    from alae.data import write_shards

    tmp = tmp_path_factory.mktemp("gpu")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "synth_images.py"), "--out",
                    str(tmp / "scenes"), "--count", "400", "--size", "64", "--no-items"],
                   check=True, capture_output=True)
    out = tmp / "shards"
    write_shards(DataConfig(source="folder", path=str(tmp / "scenes"), resolution=8, channels=1,
                            shard_size=200, test_fraction=0.1), out)
    return out


def test_cuda_training_steps_match_the_cpu_in_float64():
    """Six full updates (E+D with R1, F+G, the latent update, EMA) of an 8x8 StyleALAE
    mid-transition: weights, EMA and w_avg equal up to float64 rounding (the bound of the
    two-process test, test_distributed.py)."""
    from test_distributed import train_fixed

    torch.manual_seed(123)
    batches = torch.rand(6, 16, 1, 8, 8) * 2 - 1
    cpu = train_fixed(batches, 0.002)
    cuda = train_fixed(batches, 0.002, device="cuda")   # draws from the CPU generator
    assert cpu.keys() == cuda.keys()
    drift = {name: (cuda[name].cpu() - ref).abs().max().item()
             for name, ref in cpu.items() if ref.is_floating_point()}
    worst = max(drift, key=drift.get)
    assert drift[worst] < 1e-6, (worst, drift[worst])


def step_losses(precision: str, device: str, steps: int = 4) -> torch.Tensor:
    """(steps, 3) losses (loss_d, loss_g, lae) of `train_step` on fixed batches from the same
    weights and seed: an 8x8 StyleALAE mid-transition with the authors' R1 and mixing."""
    from alae.config import TrainConfig
    from alae.nn import Level, build_model
    from alae.train.ema import make_ema
    from alae.train.precision import Precision
    from alae.train.steps import make_optimizers, train_step

    torch.manual_seed(0)
    model = build_model(parse_params(TINY).model, 1, 8).to(device)
    ema, opt = make_ema(model), make_optimizers(model, 0.002, 0.0, 0.99)
    cfg = TrainConfig(r1_gamma=10.0, style_mixing=0.9, ema_kimg=0.5)
    batches = torch.rand(steps, 16, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    prec = Precision(precision, torch.device(device))
    return torch.stack([train_step(model, ema, opt, real.to(device), Level(1, 0.5), cfg, i, prec)
                        for i, real in enumerate(batches)]).float().cpu()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_losses_track_fp32_on_cuda(precision):
    """One update from the same weights, batch and seed: its three losses within 5% of fp32's.
    lae comes after the E+D and F+G updates of the same batch, so it also checks that those
    low-precision (and, for fp16, loss-scaled) gradients moved the weights as fp32's did. Later
    updates part further (on the CPU bf16's lae is 3% off after one update and 11% after two): a
    GAN's trajectories diverge with every rounding difference."""
    fp32, low = step_losses("fp32", "cuda", 1), step_losses(precision, "cuda", 1)
    torch.testing.assert_close(low, fp32, rtol=0.05, atol=0.01)


def test_grad_scaler_skips_a_step_whose_gradients_overflow():
    from alae.train.precision import Precision

    precision = Precision("fp16", torch.device("cuda"))
    net = torch.nn.Linear(4, 1).cuda()
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    before = [p.detach().clone() for p in net.parameters()]
    scale = precision.scaler.get_scale()
    with precision.autocast():
        loss = net(torch.full((2, 4), 1e4, device="cuda")).float().sum() * float("inf")
    precision.backward(loss)
    precision.step(opt)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))   # skipped
    assert precision.scaler.get_scale() < scale                               # and backed off
    opt.zero_grad()
    with precision.autocast():
        loss = net(torch.ones(2, 4, device="cuda")).float().sum()
    precision.backward(loss)
    precision.step(opt)
    assert not all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_a_checkpoint_written_on_the_gpu_resumes_on_the_cpu_and_back(scenes8, tmp_path):
    from alae.checkpoint import RunCheckpoints
    from alae.train.loop import Hooks, Trainer

    class Crash(Exception):
        pass

    def crash_after(store: RunCheckpoints, params, images: int):
        def checkpoint(t):
            store.save(t.ema, params, {}, t.state())
            if t.nimg >= images:
                raise Crash
        return Hooks(checkpoint=checkpoint)

    raw = {**TINY, "train": {**TINY["train"], "kimg": 0.384, "checkpoint_kimg": 0.128}}
    on = {d: parse_params({**raw, "train": {**raw["train"], "device": d}}) for d in ("cuda", "cpu")}
    store = RunCheckpoints(tmp_path, keep=5)
    with pytest.raises(Crash):    # GPU: 128 images, then a crash
        Trainer(on["cuda"], scenes8).run(crash_after(store, on["cuda"], 128), progress=False)
    _, ckpt = store.latest(on["cpu"], "cpu")
    assert ckpt["training"]["images_seen"] == 128
    with pytest.raises(Crash):    # CPU: resumes there, to 256 images
        Trainer(on["cpu"], scenes8, resume=ckpt).run(crash_after(store, on["cpu"], 256),
                                                      progress=False)
    _, ckpt = store.latest(on["cuda"], "cuda")
    assert ckpt["training"]["images_seen"] == 256
    result = Trainer(on["cuda"], scenes8, resume=ckpt).run(progress=False)   # back on the GPU
    assert result.images_seen == 384
    assert [round(float(r["kimg"]) * 1000) for r in result.history] == [64, 128, 192, 256,
                                                                        320, 384]
    assert all(p.is_cuda and torch.isfinite(p).all() for p in result.model.parameters())


@pytest.mark.skipif(torch.cuda.device_count() < 2,
                    reason="needs two CUDA devices (two-process NCCL parity)")
def test_two_nccl_processes_train_like_one_process(tmp_path):
    """test_distributed.py's two-process parity, on NCCL with one GPU per rank."""
    from test_distributed import _one_and_two

    torch.manual_seed(123)
    single, ranks = _one_and_two(torch.rand(6, 16, 1, 8, 8) * 2 - 1, 0.002, tmp_path,
                                 backend="nccl")
    drift = max((ranks[0][name].cpu() - ref).abs().max().item()
                for name, ref in single.items()
                if ref.is_floating_point() and not name.startswith("grad."))
    assert drift < 1e-6, drift
