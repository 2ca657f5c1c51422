"""Data-parallel training (train.nproc, torchrun, gloo on CPU): two processes on the same global
batches and random draws end where one process does, and the real stage run on two processes
writes one checkpoint folder and one MLflow run."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from alae.config import parse_params

ROOT = Path(__file__).resolve().parents[1]
STEPS = 6
MODEL = {"kind": "style", "latent": 8, "mapping_layers": 2, "start_channels": 4, "max_channels": 8}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def draws_on_the_cpu():
    """z and G's noise drawn from the CPU generator, then moved to the device: a run on CUDA
    gets the random numbers of a run on the CPU, so their difference is the arithmetic alone."""
    from alae.train import steps

    real = steps.global_randn

    def on_cpu(local, *shape, device=None, dtype=None):
        return real(local, *shape, device="cpu", dtype=dtype).to(device)

    steps.global_randn = on_cpu
    try:
        yield
    finally:
        steps.global_randn = real


def train_fixed(batches: torch.Tensor, lr: float, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The training loop's `train_step` (an 8x8 StyleALAE mid-transition) on fixed global
    batches (steps, B, 1, 8, 8), this rank taking its slice; returns the gradients of the first
    batch's four optimizer steps (E+D, F+G, then both for the latent update) as the optimizers saw
    them (averaged over ranks), then the trained and EMA weights and w_avg (on the CPU). On a
    CUDA `device` the random draws still come from the CPU generator (tests/test_gpu.py)."""
    from alae.config import TrainConfig
    from alae.distributed import world
    from alae.nn import build_model
    from alae.train.ema import make_ema
    from alae.train.precision import Precision
    from alae.nn import Level
    from alae.train.steps import make_optimizers, train_step

    rank, size = world()
    # float64: rounding differences between one mean of 16 and two means of 8 stay ~1e-16, far
    # below Adam's eps, so Adam's per-element normalisation cannot blow them up to +-lr steps
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    cuda = torch.device(device).type == "cuda"
    try:  # a failure here must not leave float64 behind for the tests that follow
        batches = batches.double().to(device)
        torch.manual_seed(0)  # same weights and the same random stream on every rank
        model = build_model(parse_params({"model": MODEL}).model, 1, 8).to(device)
        ema, opt, prec = make_ema(model), make_optimizers(model, lr, 0.0, 0.99), Precision()
        cfg = TrainConfig(r1_gamma=10.0, style_mixing=0.9, ema_kimg=0.5)
        level = Level(1, 0.5)
        out: dict[str, torch.Tensor] = {}
        names = {p: name for name, p in model.named_parameters()}

        def record(optimizer, _args, _kwargs) -> None:
            update = sum(1 for k in out if k.endswith(".count"))
            if update < 4:  # the first batch: E+D, F+G, latent E+D, latent F+G
                out[f"grad.{update}.count"] = torch.tensor(1.0)
                for group in optimizer.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            out[f"grad.{update}.{names[p]}"] = p.grad.cpu().clone()

        for optimizer in (opt.ed, opt.fg):
            optimizer.register_step_pre_hook(record)
        with draws_on_the_cpu() if cuda else nullcontext():
            for step, real in enumerate(batches):
                local = real.shape[0] // size
                mine = real[rank * local:(rank + 1) * local]
                train_step(model, ema, opt, mine, level, cfg, step, prec)
        out.update({f"model.{k}": v.cpu().clone() for k, v in model.state_dict().items()})
        out.update({f"ema.{k}": v.cpu().clone() for k, v in ema.state_dict().items()})
        return out
    finally:
        torch.set_default_dtype(previous)


def agreement_after_training(rank: int) -> torch.Tensor:
    """`ranks_agree` right after training (which keeps the ranks' random streams equal), on equal
    weights, then after one rank alone draws a number, then after one rank alone changes a
    weight."""
    from alae.distributed import ranks_agree

    agreed = [ranks_agree()]
    torch.manual_seed(7)
    net = torch.nn.Linear(2, 2)
    agreed.append(ranks_agree(net))
    if rank == 1:
        torch.rand(())
    agreed.append(ranks_agree(net))
    torch.manual_seed(8)
    with torch.no_grad():
        net.bias[0] += rank
    agreed.append(ranks_agree(net))
    return torch.tensor(agreed)


def _worker(rank: int, size: int, port: int, batches: torch.Tensor, lr: float, out: str,
            backend: str = "gloo") -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    device = "cpu"
    if backend == "nccl":   # one GPU per rank
        torch.cuda.set_device(rank)
        device = f"cuda:{rank}"
    dist.init_process_group(backend, rank=rank, world_size=size)
    try:
        trained = train_fixed(batches, lr, device)
        agreed = agreement_after_training(rank)
        torch.save({**trained, "agreed": agreed}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _one_and_two(batches: torch.Tensor, lr: float, tmp: Path,
                 backend: str = "gloo") -> tuple[dict, list[dict]]:
    torch.set_num_threads(1)
    single = train_fixed(batches, lr)
    mp.spawn(_worker, args=(2, _free_port(), batches, lr, str(tmp), backend), nprocs=2, join=True)
    ranks = [torch.load(tmp / f"rank{r}.pt") for r in (0, 1)]
    for r in ranks:
        assert r.pop("agreed").tolist() == [True, True, False, False]
    assert single.keys() == ranks[0].keys() and sum(k.startswith("grad.3.") for k in single) > 10
    for name in single:
        # the ranks agree bit for bit: same start, same averaged gradients, same Adam arithmetic
        assert torch.equal(ranks[0][name], ranks[1][name]), name
    return single, ranks


def test_two_gloo_processes_compute_the_gradients_of_one_process(tmp_path):
    """lr 0 keeps the weights fixed, so each update's gradients are compared on equal weights:
    equal up to float64 rounding (a batch mean is one mean of 16 in one process and the mean of
    two means of 8 here), for E+D with R1, F+G and the latent update."""
    torch.manual_seed(123)
    single, ranks = _one_and_two(torch.rand(2, 16, 1, 8, 8) * 2 - 1, 0.0, tmp_path)
    compared = 0
    for name, ref in single.items():
        if not ref.is_floating_point():
            continue
        diff = (ranks[0][name] - ref).norm().item()
        assert diff <= 1e-7 * ref.norm().item() + 1e-10, (name, diff, ref.norm().item())
        compared += 1
    assert compared > 100


def test_two_gloo_processes_train_like_one_process(tmp_path):
    """STEPS full updates at lr 0.002: weights, EMA and w_avg equal up to float64 rounding.
    (In float32 they drift further apart, up to 1e-1 relative for weights that start at 0:
    Adam with beta1 = 0 divides each gradient element by its own magnitude, so rounding noise
    in a near-zero gradient becomes a step of up to lr; G's flat 4x4 constant at init makes
    the first instance norm's gradients exactly such noise.)"""
    torch.manual_seed(123)
    single, ranks = _one_and_two(torch.rand(STEPS, 16, 1, 8, 8) * 2 - 1, 0.002, tmp_path)
    drift = {name: (ranks[0][name] - ref).abs().max().item()
             for name, ref in single.items()
             if ref.is_floating_point() and not name.startswith("grad.")}
    worst = max(drift, key=drift.get)
    print(f"largest |two processes - one process| after {STEPS} steps: {drift[worst]:.1e} "
          f"({worst})")
    assert drift[worst] < 1e-6, (worst, drift[worst])  # weights are O(0.01..1)
    assert single["model.w_avg"].abs().sum() > 0


def _stage(tmp_path: Path, shards: Path, kimg: float, featurenet: str = "none.pt",
           **train) -> tuple[list[str], dict]:
    raw = {"seed": 2, "data": {"resolution": 8, "limit": 2000, "shard_size": 1000},
           "model": MODEL,
           "train": {"kimg": kimg, "batch_size": 16, "transition_kimg": 0.25,
                     "stabilize_kimg": 0.25, "tick_kimg": 0.25, "checkpoint_kimg": 0.5,
                     "threads": 1, "fid_every_kimg": 0, "nproc": 2, **train}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "DVC_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    cmd = [sys.executable, str(ROOT / "stages" / "train.py"), "--params", "params.yaml",
           "--shards", str(shards), "--featurenet", featurenet, "--out", "alae.pt",
           "--plots", "train.csv"]
    return cmd, env


def test_two_process_training_stops_on_sigterm_and_resumes(shards8, tmp_path):
    import signal
    import time

    cmd, env = _stage(tmp_path, shards8, kimg=3.0)
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not list((tmp_path / ".alae").glob("runs/*/ckpt-*.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    stopped = [line for line in err.splitlines() if line.startswith("stopped: SIGTERM at ")]
    assert len(stopped) == 2 and stopped[0] == stopped[1]  # both ranks, the same batch
    at = int(stopped[0].split(" at ")[1].split()[0])
    assert err.strip().splitlines()[-1] == ("stopped: SIGTERM passed to all ranks; run the stage "
                                            "again to resume")
    newest = sorted((tmp_path / ".alae").glob("runs/*/ckpt-*.pt"))[-1]
    assert int(newest.stem.split("-")[1]) == at
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming at {at} images" in done.stderr and "trained 3008 images" in done.stdout


def test_the_train_stage_on_two_processes_with_every_hook_on_writes_one_run(
        shards8, featurenet8, tmp_path):
    """Quick FID, checkpoints and level snapshots every 0.25 kimg, all on rank 0 alone: the ranks
    still meet at the same collectives (the stage checks at every tick that they hold the same
    weights and random streams, and fails if not)."""
    cmd, env = _stage(tmp_path, shards8, kimg=0.75, featurenet=str(featurenet8),
                      checkpoint_kimg=0.25, fid_every_kimg=0.25, fid_images=64)
    store = env["MLFLOW_TRACKING_URI"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    from alae.checkpoint import load_training_state
    from mlflow.tracking import MlflowClient

    _, _, _, state = load_training_state(tmp_path / "alae.pt")
    assert state["images_seen"] == 752 and state["finished"]  # 47 global batches of 16
    assert len(list((tmp_path / ".alae" / "runs").iterdir())) == 1
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("alae").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["train.nproc"] == "2"
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss_d")]
    assert steps == [256, 512, 752]  # one value per tick, logged once (rank 0)
    fids = client.get_metric_history(runs[0].info.run_id, "fid_quick_classifier")
    assert [m.step for m in fids] == steps
    grids = {f.path.split("+")[2] for f in client.list_artifacts(runs[0].info.run_id, "images")}
    assert grids == {"512", "752"}  # a sample grid as each level ends
    assert len(list((tmp_path / ".alae" / "runs").glob("*/ckpt-*.pt"))) == 3
    assert out.stderr.count("%|") > 0 and "trained 752 images" in out.stdout
