"""Feature extractors: images in [-1, 1] -> feature vectors of one named space.

An extractor has a `name` (the suffix of every metric key computed in its space: `fid_<name>`),
`dim`, `__call__(x) -> (N, dim)`, `to(device)` and `provenance()` (strings to record beside the
numbers, e.g. as MLflow tags). Spaces, chosen by name with `load_extractor` (`evaluate.features`):
- `classifier`: the penultimate layer of a featurenet trained on the labels (offline default;
  alae/featurenet.py);
- `selfsup`: the same layer of a featurenet trained without labels (`featurenet.kind: selfsup`);
- `inception`: pytorch-fid's InceptionV3 pool3 (alae/metrics/inception.py), named
  `inception_clean` when its input is resized as clean-fid does (`evaluate.resize: clean`).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from alae.config import FEATURENET_KINDS
from alae.errors import CheckpointError
from alae.featurenet import Featurenet, load_featurenet
from alae.metrics import inception
from alae.metrics.inception import DIMS, InceptionFeatures

SPACES = (*FEATURENET_KINDS, "inception")


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Square images to `size`: area averaging down (what the data loader does between
    resolutions), bilinear up; unchanged when already that size."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    if x.shape[-1] > size:
        return F.interpolate(x, size=(size, size), mode="area")
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


class ClassifierFeatures:
    """A featurenet's penultimate layer; images are resized to the featurenet's resolution. The
    space is named by what the net was trained for (`classifier` or `selfsup`)."""

    def __init__(self, net: Featurenet, sha256: str):
        self.net = net.eval().requires_grad_(False)
        self.sha256 = sha256
        self.name = net.kind

    @classmethod
    def from_file(cls, path: str | Path,
                  device: str | torch.device = "cpu") -> "ClassifierFeatures":
        return cls(*load_featurenet(path, device))

    @property
    def dim(self) -> int:
        return self.net.feature_dim

    @property
    def channels(self) -> int:
        return self.net.channels

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device) -> "ClassifierFeatures":
        self.net.to(device)
        return self

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.net.channels:
            raise ValueError(f"featurenet expects {self.net.channels}-channel images, "
                             f"got {x.shape[1]} channels")
        x = resize(x.to(self.device, torch.float32), self.net.resolution)
        return self.net.features(x)

    def provenance(self) -> dict[str, str]:
        return {"featurenet_sha256": self.sha256}


def space_name(name: str, dims: int = DIMS, resize: str = "legacy") -> str:
    """The name metric keys carry: `classifier`, `inception` (pool3), `inception<dims>`, with
    `_clean` for clean resizing (`inception_clean`)."""
    return name if name != "inception" else inception.space_name(dims, resize)


def load_extractor(name: str, featurenet: str | Path | None = None,
                   device: str | torch.device = "cpu", dims: int = DIMS, resize: str = "legacy"):
    """The extractor of feature space `name`; `featurenet` is the file the classifier space needs,
    `dims` pytorch-fid's Inception block (2048, pool3, the standard), `resize` how images reach
    Inception's 299 px (`legacy` or `clean`; a featurenet's space takes only `legacy`, its own
    resize to the featurenet's resolution)."""
    if name in FEATURENET_KINDS:
        if resize != "legacy":
            raise ValueError(f"resize {resize!r} is for Inception features; the {name} "
                             "space resizes to its featurenet's resolution")
        if featurenet is None:
            raise ValueError(f"the {name} feature space needs a featurenet file")
        extractor = ClassifierFeatures.from_file(featurenet, device)
        if extractor.name != name:
            raise CheckpointError(f"{featurenet}: a {extractor.name} featurenet, not the {name} "
                                  f"space asked for (featurenet.kind: {name}, then dvc repro)")
        return extractor
    if name == "inception":
        return InceptionFeatures.load(device, dims, resize)
    raise ValueError(f"unknown feature space {name!r}; known: {', '.join(SPACES)}")
