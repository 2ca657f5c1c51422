"""Data-parallel training over processes with torch.distributed (gloo on CPU, NCCL on GPU),
launched by `torchrun` (the train stage re-launches itself when `train.nproc` > 1).

Every rank holds the same networks and the same RNG state (same seed, same draws in the same
order), takes 1/world of each global batch of real images (its own slice of every epoch's
shards), and:
- draws z and G's per-pixel noise for the whole global batch, keeping its own slice, so the
  union over ranks is exactly what one process would draw (`global_randn`); the style-mixing
  decision and crossover are scalars every rank draws identically;
- averages gradients over ranks before each optimizer step (`average_gradients`, called by the
  training steps): with equal
  local batches, the mean of the local mean-losses' gradients is the global mean-loss gradient,
  R1 included (a per-sample penalty averaged over the batch);
- averages the batch mean of w over ranks before the running average of w (`mean_over_ranks`,
  in the training steps), so `w_avg` is the global batch's as in one process.
The networks therefore stay bit-identical across ranks (same initial weights, same averaged
gradients, same Adam arithmetic), and so does the EMA, which needs no communication. Work that
only rank 0 does (quick FID, sample grids, checkpoints, tracking) must draw nothing from the
global RNG and reach no collective: `ranks_agree`, run by the loop at every tick, catches a rank
whose weights or random stream went its own way.

This is DistributedDataParallel's arithmetic done explicitly, not the DDP wrapper: ALAE's
updates differentiate twice (R1 goes through `torch.autograd.grad`, which DDP's reducer does not
support), and its three updates touch different parameter subsets of one module with E and D
frozen in between, which DDP's bucketed reducer expects to see once per forward. One flattened
all-reduce per optimizer step is what DDP's buckets amount to at these model sizes.
"""
from __future__ import annotations

import hashlib
import os
import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_from_env(device_type: str) -> tuple[int, int]:
    """Join the process group torchrun describes in the environment; NCCL on CUDA, else gloo."""
    backend = "nccl" if device_type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    return world()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def global_randn(local: int, *shape: int, device=None, dtype=None) -> torch.Tensor:
    """This rank's `local` rows of one normal draw of `local * world` rows (all ranks draw the
    same numbers, so their slices add up to one process's draw)."""
    rank, size = world()
    if size == 1:
        return torch.randn(local, *shape, device=device, dtype=dtype)
    full = torch.randn(local * size, *shape, device=device, dtype=dtype)
    return full[rank * local:(rank + 1) * local]


def mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
    rank, size = world()
    if size == 1:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t / size


def average_gradients(*optimizers: torch.optim.Optimizer) -> None:
    """Average the .grad of each optimizer's parameters over ranks, in one all-reduce of a flat
    buffer per optimizer (None grads stay None: every rank has the same None pattern, since all
    ran the same graph). A no-op in one process."""
    _, size = world()
    if size == 1:
        return
    for opt in optimizers:
        grads = [p.grad for group in opt.param_groups for p in group["params"]
                 if p.grad is not None]
        if not grads:
            continue
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


def any_rank(flag: bool) -> bool:
    """True on every rank if it is True on any (a stop request must be collective: a rank that
    stops alone would leave the others waiting in their next all-reduce)."""
    _, size = world()
    if size == 1:
        return flag
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def ranks_agree(*modules: torch.nn.Module) -> bool:
    """True on every rank if all ranks hold the same parameters and buffers of `modules` and the
    same torch RNG state (CPU, and CUDA where the modules are). One all-reduce of a few float64s:
    per-tensor sums and a digest of the RNG state, whose maximum and minimum over ranks agree
    only when every rank has the same numbers. Collective."""
    _, size = world()
    if size == 1:
        return True
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    states = [torch.get_rng_state()]
    if device == "cuda":
        states.append(torch.cuda.get_rng_state())
    digest = hashlib.sha256(b"".join(s.numpy().tobytes() for s in states)).digest()
    sums = [t.detach().double().sum().to(device) for m in modules for t in m.state_dict().values()]
    # 48 bits of the digest: an integer a float64 holds exactly
    v = torch.stack([*sums, torch.tensor(float(int.from_bytes(digest[:6], "big")), device=device,
                                         dtype=torch.float64)])
    both = torch.cat([v, -v])
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    return torch.equal(both[:len(v)], -both[len(v):])
