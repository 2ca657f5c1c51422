"""The featurenet: a small CNN whose penultimate layer is the offline FID feature space.

Two kinds (`featurenet.kind`, the name of the space in every metric key):
- `classifier`: trained to classify the labels (cross-entropy);
- `selfsup`: trained without labels, contrastively (SimCLR's NT-Xent): two random views of each
  train image (`augment`: crop, flip, brightness/contrast and colour jitter) must find each other
  among the batch's other views. The same network, its last layer a projection head, so an
  unlabelled folder gets an offline feature space too.

DESIGN.md ("Metrics, honestly labelled"): the classifier space depends only on the data and the
`featurenet` params (its own seed), and the sha256 of its file goes with every number computed in
that space. So training is deterministic (seeded init, seeded epoch order) and the file is written
atomically in the project's `weights_only` checkpoint style.

A dataset without labels gives a classifier nothing to train on: `train_featurenet` raises
`DataError`, and the featurenet stage writes a *placeholder* file instead (`save_skipped`), which
`load_featurenet` refuses with a message pointing at `selfsup` and Inception features. The
placeholder keeps DVC's declared output present without pretending there is a feature space.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from alae.config import FEATURENET_KINDS, FeaturenetConfig
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
NO_LABELS = ("has no labels, so no classifier featurenet is trained and FID cannot use classifier "
             "features; choose featurenet.kind and evaluate.features: selfsup (trained without "
             "labels), or evaluate.features: inception")
PROJECTION = 64     # selfsup: width of the projection head's output, where the loss is taken
TEMPERATURE = 0.5   # selfsup: NT-Xent temperature (SimCLR's setting for small images)
KNN = 20            # selfsup on labelled data: neighbours of the k-NN accuracy it reports


class Featurenet(nn.Module):
    """Three stride-2 conv blocks, adaptive pooling, a `features`-wide layer, then class logits.

    The adaptive pool makes the head independent of the input size, so one definition serves any
    stored power-of-two resolution (>= 16 is where the three halvings still see real structure).
    """

    def __init__(self, channels: int, resolution: int, num_classes: int, features: int = 128,
                 label_names: Optional[list[str]] = None, kind: str = "classifier"):
        super().__init__()
        self.kind = kind                      # classifier, or selfsup: `classify` projects
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
    """The whole train split at the stored resolution: uint8 images (N, C, R, R) and labels
    (None for a dataset without them)."""
    res = int(manifest["resolution"])
    xs, ys = [], []
    for x, y in progress_bar(eval_batches(shards_dir, "train", res, 1000),
                             desc="featurenet: load train", unit="batch",
                             total=-(-int(manifest["counts"]["train"]) // 1000)):
        # Exact: the loader maps 8-bit pixels to u / 127.5 - 1 at the stored resolution.
        xs.append(to_uint8(x))
        ys.append(y)
    return torch.cat(xs), (None if ys[0] is None else torch.cat(ys))


def _cached_epochs(images: torch.Tensor, labels: Optional[torch.Tensor],
                   cfg: FeaturenetConfig) -> Iterator[tuple]:
    """Endless batches from memory; each epoch a permutation from a generator seeded by cfg."""
    order_rng = torch.Generator().manual_seed(cfg.seed)
    while True:
        order = torch.randperm(len(images), generator=order_rng)
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            yield from_uint8(images[idx]), (None if labels is None else labels[idx])


def _train_stream(shards_dir, manifest: dict, cfg: FeaturenetConfig) -> Iterator[tuple]:
    res, n = int(manifest["resolution"]), int(manifest["counts"]["train"])
    if n * int(manifest["channels"]) * res * res <= CACHE_BYTES:
        return _cached_epochs(*_load_train(shards_dir, manifest), cfg)
    return train_batches(shards_dir, res, cfg.batch_size, seed=cfg.seed)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One random view of each image of a batch in [-1, 1], drawn from `gen`: a crop of 50-100%
    of the area (aspect 3:4 to 4:3) resized back, a horizontal flip half the time (one batched
    affine warp), contrast x0.6-1.4 about the image's mean and brightness +-0.4 (in [-1, 1]
    units), and for colour images a gain of 0.8-1.2 per channel."""
    n, c = x.shape[:2]

    def u(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen)
    area = 0.5 + 0.5 * u(n)
    aspect = torch.exp((2 * u(n) - 1) * torch.log(torch.tensor(4 / 3)))
    sx, sy = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = sx * torch.where(u(n) < 0.5, -1.0, 1.0)
    theta[:, 1, 1] = sy
    theta[:, 0, 2], theta[:, 1, 2] = (1 - sx) * (2 * u(n) - 1), (1 - sy) * (2 * u(n) - 1)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    v = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = v.mean((1, 2, 3), keepdim=True)
    v = (v - mean) * (0.6 + 0.8 * u(n, 1, 1, 1)).to(x.device) + mean \
        + (0.4 * (2 * u(n, 1, 1, 1) - 1)).to(x.device)
    if c > 1:
        v = v * (0.8 + 0.4 * u(n, c, 1, 1)).to(x.device)
    return v.clamp(-1, 1)


def nt_xent(z: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """SimCLR's loss of 2n projections, rows i and i + n being two views of one image: each row
    must pick its partner out of the other 2n - 1 by cosine similarity / temperature."""
    n = len(z) // 2
    z = F.normalize(z, dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, partner)


def train_featurenet(shards_dir: str | Path, cfg: FeaturenetConfig,
                     device: str | torch.device = "cpu") -> tuple[Featurenet, Optional[float]]:
    """Train on the train split at the stored resolution; returns (net in eval mode, test
    accuracy: a classifier's, or for `selfsup` on labelled data the k-NN accuracy of its
    features; None for unlabelled data).

    Same shards and cfg, same weights (on one device type): the init, the batch order and the
    augmentations draw from generators seeded with `cfg.seed`. DataError when a classifier's
    dataset has no labels.
    """
    selfsup = cfg.kind == "selfsup"
    manifest = read_manifest(shards_dir) if selfsup else _labelled_manifest(shards_dir)
    n_train = int(manifest["counts"]["train"])
    if n_train == 0:
        raise DataError(f"{shards_dir}: the train split is empty")
    res, names = int(manifest["resolution"]), manifest.get("label_names")
    with torch.random.fork_rng(devices=[]):   # leave the caller's global RNG untouched
        torch.manual_seed(cfg.seed)
        net = Featurenet(int(manifest["channels"]), res, PROJECTION if selfsup else len(names),
                         cfg.features, names, kind=cfg.kind)
    # `kind` only when it is not the classifier: a classifier's file stays byte-identical to
    # those written before there was a choice (its sha256 names the space of every number)
    net.train_params = {k: v for k, v in dataclasses.asdict(cfg).items()
                        if k != "kind" or v != "classifier"}
    net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    steps = cfg.epochs * -(-n_train // cfg.batch_size)
    batches = _train_stream(shards_dir, manifest, cfg)
    views = torch.Generator().manual_seed(cfg.seed + 1)
    bar = progress_bar(range(steps), desc=f"featurenet ({cfg.kind}): train", unit="step")
    for step in bar:
        x, y = next(batches)
        x = x.to(device)
        if selfsup:
            loss = nt_xent(net(torch.cat([augment(x, views), augment(x, views)])))
        else:
            loss = F.cross_entropy(net(x), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    net.eval()
    if not selfsup:
        net.test_accuracy = accuracy(net, shards_dir, "test")
    elif names:
        net.test_accuracy = knn_accuracy(net, shards_dir)
    return net, net.test_accuracy


@torch.no_grad()
def _split_features(net: Featurenet, shards_dir: str | Path, split: str,
                    batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit feature vectors and labels of one split (stored order)."""
    device = next(net.parameters()).device
    feats, labels = [], []
    for x, y in eval_batches(shards_dir, split, net.resolution, batch_size):
        feats.append(F.normalize(net.features(x.to(device)), dim=1).cpu())
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def knn_accuracy(net: Featurenet, shards_dir: str | Path, k: int = KNN) -> float:
    """Share of test images whose label is the majority of their k nearest train images by
    cosine similarity of the features (ties: the lowest label): how much of the classes a space
    trained without labels holds."""
    train, train_y = _split_features(net, shards_dir, "train")
    test, test_y = _split_features(net, shards_dir, "test")
    classes = int(max(train_y.max(), test_y.max())) + 1
    correct = 0
    for i in range(0, len(test), 1000):
        nearest = (test[i:i + 1000] @ train.T).topk(min(k, len(train)), dim=1).indices
        votes = F.one_hot(train_y[nearest], classes).sum(1)
        correct += (votes.argmax(1) == test_y[i:i + 1000]).sum().item()
    return correct / len(test)


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
            # a classifier's file is byte-identical to those written before `kind` existed, so
            # its sha256 (which names the feature space of every number) stays the same
            **({} if net.kind == "classifier" else {"kind": net.kind}),
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
    kind = ckpt.get("kind", "classifier")  # files from before selfsup existed are classifiers
    if kind not in FEATURENET_KINDS:
        raise CheckpointError(f"{path}: featurenet kind {kind!r} is not one of "
                              f"{', '.join(FEATURENET_KINDS)}")
    try:
        # Built on the meta device, so its initialisation draws nothing from the global RNG:
        # the train stage loads this on rank 0 alone, mid-run, and a random draw there would
        # send that rank's training stream (z, noise, style mixing) apart from the others'.
        with torch.device("meta"):
            net = Featurenet(**ckpt["arch"], label_names=ckpt.get("label_names"), kind=kind)
        net.load_state_dict(ckpt["state_dict"], assign=True)
    except (KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{path}: damaged featurenet file "
                              f"({str(e).splitlines()[0]})") from None
    net.train_params = dict(ckpt.get("params") or {})
    net.test_accuracy = ckpt.get("test_accuracy")
    net.to(device).eval().requires_grad_(False)
    return net, file_sha256(path)
