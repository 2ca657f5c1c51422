"""The featurenet: a small CNN classifier whose penultimate layer is the offline FID feature space.

DESIGN.md ("Metrics, honestly labelled"): the classifier space depends only on the data and the
`featurenet` params (its own seed), and the sha256 of its file goes with every number computed in
that space. So training is deterministic (seeded init, seeded epoch order) and the file is written
atomically in the project's `weights_only` checkpoint style.

A dataset without labels has nothing to train on: `train_featurenet` raises `DataError`, and the
featurenet stage writes a *placeholder* file instead (`save_skipped`), which `load_featurenet`
refuses with a message pointing at Inception features. The placeholder keeps DVC's declared output
present without pretending there is a feature space.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from alae.config import FeaturenetConfig
from alae.data import eval_batches, read_manifest, train_batches
from alae.errors import CheckpointError, DataError
from alae.io import atomic_open, file_sha256
from alae.pixels import from_uint8, to_uint8
from alae.progress import progress_bar

FORMAT = "alae-featurenet"
VERSION = 1
WIDTHS = (16, 32, 64)   # conv channels; measured: ~90% on Fashion-MNIST in 4 epochs on 2 CPU cores
POOLED = 4              # the conv trunk ends in a POOLED x POOLED map at any input resolution
# Train images are held in memory as uint8 (one decode pass instead of one per epoch: decoding
# costs about as much as the training itself on CPU) when they fit in this many bytes; bigger
# labelled sets stream from the shards every epoch instead.
CACHE_BYTES = 1 << 30
NO_LABELS = ("has no labels, so no featurenet is trained and FID cannot use classifier features; "
             "use evaluate.features: inception")


class Featurenet(nn.Module):
    """Three stride-2 conv blocks, adaptive pooling, a `features`-wide layer, then class logits.

    The adaptive pool makes the head independent of the input size, so one definition serves any
    stored power-of-two resolution (>= 16 is where the three halvings still see real structure).
    """

    def __init__(self, channels: int, resolution: int, num_classes: int, features: int = 128,
                 label_names: Optional[list[str]] = None):
        super().__init__()
        self.channels, self.resolution = channels, resolution
        self.num_classes, self.feature_dim = num_classes, features
        self.label_names = list(label_names) if label_names is not None else None
        self.train_params: dict = {}          # the FeaturenetConfig it was trained with
        self.test_accuracy: Optional[float] = None
        layers: list[nn.Module] = []
        c_in = channels
        for width in WIDTHS:
            # 4x4 stride-2 convolutions: ~3x faster on CPU than 3x3 conv + max-pool (measured).
            layers += [nn.Conv2d(c_in, width, 4, stride=2, padding=1), nn.BatchNorm2d(width),
                       nn.ReLU()]
            c_in = width
        layers += [nn.AdaptiveAvgPool2d(POOLED), nn.Flatten()]
        self.trunk = nn.Sequential(*layers)
        self.embed = nn.Linear(c_in * POOLED * POOLED, features)
        self.classify = nn.Linear(features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate layer, before its ReLU: (N, features). Taken before the ReLU because a
        unit that is never positive would be constant zero and make every covariance singular."""
        return self.embed(self.trunk(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(F.relu(self.features(x)))

    def arch(self) -> dict:
        return {"channels": self.channels, "resolution": self.resolution,
                "num_classes": self.num_classes, "features": self.feature_dim}


def _labelled_manifest(shards_dir) -> dict:
    manifest = read_manifest(shards_dir)
    if not manifest.get("label_names"):
        raise DataError(f"{shards_dir}: the dataset {NO_LABELS}")
    return manifest


def _load_train(shards_dir, manifest: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole train split at the stored resolution: uint8 images (N, C, R, R) and labels."""
    res = int(manifest["resolution"])
    xs, ys = [], []
    for x, y in progress_bar(eval_batches(shards_dir, "train", res, 1000),
                             desc="featurenet: load train", unit="batch",
                             total=-(-int(manifest["counts"]["train"]) // 1000)):
        # Exact: the loader maps 8-bit pixels to u / 127.5 - 1 at the stored resolution.
        xs.append(to_uint8(x))
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def _cached_epochs(images: torch.Tensor, labels: torch.Tensor,
                   cfg: FeaturenetConfig) -> Iterator[tuple]:
    """Endless batches from memory; each epoch a permutation from a generator seeded by cfg."""
    order_rng = torch.Generator().manual_seed(cfg.seed)
    while True:
        order = torch.randperm(len(images), generator=order_rng)
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            yield from_uint8(images[idx]), labels[idx]


def _train_stream(shards_dir, manifest: dict, cfg: FeaturenetConfig) -> Iterator[tuple]:
    res, n = int(manifest["resolution"]), int(manifest["counts"]["train"])
    if n * int(manifest["channels"]) * res * res <= CACHE_BYTES:
        return _cached_epochs(*_load_train(shards_dir, manifest), cfg)
    return train_batches(shards_dir, res, cfg.batch_size, seed=cfg.seed)


def train_featurenet(shards_dir: str | Path, cfg: FeaturenetConfig,
                     device: str | torch.device = "cpu") -> tuple[Featurenet, float]:
    """Train on the train split at the stored resolution; returns (net in eval mode, test accuracy).

    Same shards and cfg, same weights (on one device type): the init draws from `cfg.seed` and the
    batch order from a generator seeded with it. DataError when the dataset has no labels.
    """
    manifest = _labelled_manifest(shards_dir)
    n_train = int(manifest["counts"]["train"])
    if n_train == 0:
        raise DataError(f"{shards_dir}: the train split is empty")
    res = int(manifest["resolution"])
    with torch.random.fork_rng(devices=[]):   # leave the caller's global RNG untouched
        torch.manual_seed(cfg.seed)
        net = Featurenet(int(manifest["channels"]), res, len(manifest["label_names"]),
                         cfg.features, manifest["label_names"])
    net.train_params = dataclasses.asdict(cfg)
    net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    steps = cfg.epochs * -(-n_train // cfg.batch_size)
    batches = _train_stream(shards_dir, manifest, cfg)
    bar = progress_bar(range(steps), desc="featurenet: train", unit="step")
    for step in bar:
        x, y = next(batches)
        loss = F.cross_entropy(net(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    net.eval()
    net.test_accuracy = accuracy(net, shards_dir, "test")
    return net, net.test_accuracy


@torch.no_grad()
def accuracy(net: Featurenet, shards_dir: str | Path, split: str = "test",
             batch_size: int = 1000) -> float:
    """Top-1 accuracy on one split (stored order, every image)."""
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    correct = total = 0
    for x, y in progress_bar(eval_batches(shards_dir, split, net.resolution, batch_size),
                             desc=f"featurenet: {split} accuracy", unit="batch"):
        if y is None:
            raise DataError(f"{shards_dir}: the dataset {NO_LABELS}")
        correct += (net(x.to(device)).argmax(1).cpu() == y).sum().item()
        total += len(y)
    net.train(was_training)
    if total == 0:
        raise DataError(f"{shards_dir}: the {split} split is empty")
    return correct / total


def save_featurenet(net: Featurenet, path: str | Path) -> None:
    """Atomic write of state_dict + architecture + training params (loadable with weights_only)."""
    with atomic_open(path, "wb") as f:
        torch.save({
            "format": FORMAT, "version": VERSION,
            "arch": net.arch(),
            "label_names": net.label_names,
            "params": dict(net.train_params),
            "test_accuracy": net.test_accuracy,
            "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        }, f)


def save_skipped(path: str | Path, reason: str = "no labels") -> None:
    """The placeholder for an unlabelled dataset: a file of ours that holds no network."""
    with atomic_open(path, "wb") as f:
        torch.save({"format": FORMAT, "version": VERSION, "skipped": reason}, f)


def load_featurenet(path: str | Path, device: str | torch.device = "cpu") -> tuple[Featurenet, str]:
    """(net in eval mode without grads, sha256 of the file); CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: featurenet file not found (run the featurenet stage)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zip, pickle and unpickler errors all mean "not a file of ours"
        raise CheckpointError(f"{path}: not a featurenet file of this project "
                              f"({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a featurenet file of this project "
                              f"(no '{FORMAT}' marker)")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: featurenet format version {ckpt.get('version')} "
                              f"is not {VERSION}")
    if "skipped" in ckpt:
        raise CheckpointError(f"{path}: holds no featurenet: the dataset {NO_LABELS}")
    try:
        # Built on the meta device, so its initialisation draws nothing from the global RNG:
        # the train stage loads this on rank 0 alone, mid-run, and a random draw there would
        # send that rank's training stream (z, noise, style mixing) apart from the others'.
        with torch.device("meta"):
            net = Featurenet(**ckpt["arch"], label_names=ckpt.get("label_names"))
        net.load_state_dict(ckpt["state_dict"], assign=True)
    except (KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{path}: damaged featurenet file "
                              f"({str(e).splitlines()[0]})") from None
    net.train_params = dict(ckpt.get("params") or {})
    net.test_accuracy = ckpt.get("test_accuracy")
    net.to(device).eval().requires_grad_(False)
    return net, file_sha256(path)
