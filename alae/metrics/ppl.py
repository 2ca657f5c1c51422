"""Perceptual path length in W space (StyleGAN, Karras et al. 2019, sec. 4.1; the protocol of
NVlabs' `metrics/perceptual_path_length.py`), as DESIGN.md "Metrics, honestly labelled" fixes it.

For pairs z0, z1 ~ N(0, I) with w_i = F(z_i), and t ~ U(0, 1) (`full`) or t in {0, 1} (`end`):

    l = d(G(lerp(w0, w1, t)), G(lerp(w0, w1, t + eps))) / eps²,    eps = 1e-4

and PPL is the mean of l over the samples between the 1st and 99th percentiles (inclusive, with
numpy's `lower`/`higher` percentile methods, as StyleGAN). The distance d is `evaluate.ppl_distance`:
- `classifier` (default, offline): the squared L2 distance between unit-normalised featurenet
  features (LPIPS's form on one layer). Its numbers compare only with other `ppl_*_classifier`
  numbers from the same featurenet file;
- `lpips`: LPIPS-VGG16 (the paper's); needs the `lpips` package and torchvision's VGG16 weights
  already in the torch hub cache, else one error line says which is missing (never a silent
  fallback); images above 256 px are area-downsampled to 256 as StyleGAN does.
The metric key names the distance: `ppl_full_classifier`, `ppl_end_lpips`, ...

`evaluate.ppl_crop: face` follows StyleGAN's protocol for face models (also the ALAE authors'
`metrics/ppl.py`): before the distance, each image is cropped to its central face region (rows
3/8 to 7/8, columns 2/8 to 6/8 of the side, c = side // 8) and, when that crop is above 256 px,
box-downsampled by the integer factor crop // 256 (1024 px -> a 512 crop -> 256). Keys then end
in `_facecrop` (`ppl_full_lpips_facecrop`).

Notes. `end` takes t in {0, 1} (the paper's "path endpoints"); StyleGAN's code uses t = 0 only,
which has the same distribution to first order in eps. `full` and `end` use the same z pairs for a
seed. Sample i's z0, z1, t and per-pixel noise come from seeds of (seed, i) alone
(alae/metrics/draws.py), so no number depends on the batch size; both images of a pair get the
same noise, as StyleGAN holds noise fixed within a pair. Images are not clamped: the metric
measures the generator's own path.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Callable, Optional, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from alae.errors import UserError
from alae.metrics import draws

EPSILON = 1e-4
SAMPLINGS = ("full", "end")
VGG_FILE = "vgg16-397923af.pth"   # torchvision's ImageNet VGG16, which lpips loads
VGG_URL = f"https://download.pytorch.org/models/{VGG_FILE}"
DISTANCES = ("classifier", "lpips")
CROPS = {"none": "", "face": "_facecrop"}   # evaluate.ppl_crop -> suffix of the metric keys


class PathDistance(Protocol):
    name: str

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor: ...


class FeatureDistance:
    """Squared L2 between unit-normalised feature vectors of an extractor (N,) ."""

    def __init__(self, extractor, name: Optional[str] = None):
        self.extractor = extractor
        self.name = name or extractor.name

    @torch.inference_mode()
    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.of_features(self.extractor(a), self.extractor(b))

    @staticmethod
    def of_features(fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
        """The distance of features already computed by the extractor."""
        fa, fb = F.normalize(fa.double(), dim=1), F.normalize(fb.double(), dim=1)
        return (fa - fb).pow(2).sum(1)

    def provenance(self) -> dict[str, str]:
        return self.extractor.provenance()


class LpipsDistance:
    """LPIPS-VGG16 of the `lpips` package; grayscale repeated to three channels."""

    name = "lpips"

    def __init__(self, device: str | torch.device = "cpu"):
        import lpips   # optional dependency: load_distance checks that it is there

        self.net = lpips.LPIPS(net="vgg", verbose=False).eval().requires_grad_(False).to(device)
        self.device = torch.device(device)

    @torch.inference_mode()
    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        def prep(x: torch.Tensor) -> torch.Tensor:
            x = x.to(self.device, torch.float32)
            if x.shape[-1] > 256:
                x = F.interpolate(x, size=(256, 256), mode="area")
            return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        return self.net(prep(a), prep(b)).flatten().double()

    def provenance(self) -> dict[str, str]:
        return {"ppl_distance": "lpips-vgg16"}


def lpips_missing() -> Optional[str]:
    """What LPIPS lacks here, in words, or None: the `lpips` package, or torchvision's VGG16
    weights in the torch hub cache (never downloaded here: the choice is `evaluate.ppl_distance`,
    and a run that asked for LPIPS must not depend on the network)."""
    if importlib.util.find_spec("lpips") is None:
        return "the lpips package is not installed (pip install lpips)"
    path = Path(torch.hub.get_dir()) / "checkpoints" / VGG_FILE
    if not path.is_file():
        return f"torchvision's VGG16 weights are missing: place {path} (from {VGG_URL})"
    return None


def load_distance(name: str, classifier, device: str | torch.device = "cpu",
                  key: str = "evaluate.ppl_distance") -> Optional[PathDistance]:
    """The image distance `name` chosen by the params key `key` (PPL's `evaluate.ppl_distance`,
    or `evaluate.rec_distance`): `lpips` (UserError naming the key and what is missing when it
    cannot be had) or `classifier`, the feature distance of `classifier` (None when there is no
    featurenet: the data has no labels, and the metric is skipped with a note)."""
    if name == "lpips":
        missing = lpips_missing()
        if missing:
            raise UserError(f"{key} lpips: {missing}; or set {key}: classifier")
        return LpipsDistance(device)
    if name == "classifier":
        return FeatureDistance(classifier) if classifier is not None else None
    raise ValueError(f"PPL distance {name!r} is not one of {', '.join(DISTANCES)}")


def face_crop(x: torch.Tensor) -> torch.Tensor:
    """StyleGAN's PPL crop of square face images (module docstring): the central face region,
    box-downsampled by an integer factor when it is above 256 px."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"the face crop takes square images, got {tuple(x.shape[-2:])}")
    c = x.shape[-1] // 8
    x = x[..., 3 * c:7 * c, 2 * c:6 * c]
    factor = x.shape[-1] // 256
    if factor > 1:
        n, ch, h, w = x.shape
        x = x.reshape(n, ch, h // factor, factor, w // factor, factor).mean((3, 5))
    return x


def draw_pairs(n: int, latent: int, seed: int,
               sampling: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z0, z1, t): sample i's from its own generator (alae/metrics/draws.py), so neither batch
    size nor n changes a sample; z0 and z1 are drawn first, so both samplings share the pairs."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling {sampling!r} is not one of {', '.join(SAMPLINGS)}")
    z0, z1, t = torch.empty(n, latent), torch.empty(n, latent), torch.empty(n)
    for i, g in enumerate(draws.image_generators(seed, "ppl", draws.LATENT, range(n))):
        z0[i].normal_(generator=g)
        z1[i].normal_(generator=g)
        if sampling == "full":
            t[i] = torch.rand((), generator=g)
        else:
            t[i] = torch.randint(0, 2, (), generator=g)
    return z0, z1, t


@torch.inference_mode()
def path_lengths(model: torch.nn.Module, distance: Callable, n: int, sampling: str, seed: int,
                 batch_size: int, eps: float = EPSILON, progress: bool = True,
                 crop: str = "none") -> np.ndarray:
    """The n unfiltered samples l (float64) of the module docstring, for `model.mapping` (F) and
    `model.decode` (G, which takes G's per-pixel noise as `noise`); `crop`: `evaluate.ppl_crop`."""
    if crop not in CROPS:
        raise ValueError(f"PPL crop {crop!r} is not one of {', '.join(CROPS)}")
    view = face_crop if crop == "face" else (lambda x: x)
    z0, z1, t = draw_pairs(n, int(model.latent), seed, sampling)
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    cuda = [device] if device.type == "cuda" else []
    out = []
    starts = range(0, n, batch_size)
    bar = tqdm(starts, desc=f"evaluate: ppl {sampling}", file=sys.stderr, unit="batch",
               disable=not progress)
    with torch.random.fork_rng(devices=cuda):   # the caller's RNG is left where it was
        for s in bar:
            samples = range(s, min(s + batch_size, n))
            w0 = model.mapping(z0[s:s + batch_size].to(device, dtype))
            w1 = model.mapping(z1[s:s + batch_size].to(device, dtype))
            tb = t[s:s + batch_size].to(device, w0.dtype)[:, None]
            # Two ImageNoise objects of the same seeds: both images of a pair get one noise.
            a = model.decode(torch.lerp(w0, w1, tb), noise=draws.noise(seed, "ppl", samples))
            b = model.decode(torch.lerp(w0, w1, tb + eps),
                             noise=draws.noise(seed, "ppl", samples))
            out.append(distance(view(a), view(b)).double().cpu() / eps ** 2)
    return torch.cat(out).numpy()


def filtered_mean(lengths: np.ndarray) -> float:
    """Mean over the samples within the 1st and 99th percentiles (StyleGAN's outlier filter)."""
    lengths = np.asarray(lengths, dtype=np.float64)
    lo = np.percentile(lengths, 1, method="lower")
    hi = np.percentile(lengths, 99, method="higher")
    return float(lengths[(lengths >= lo) & (lengths <= hi)].mean())


def perceptual_path_length(model: torch.nn.Module, distance: Callable, n: int, sampling: str,
                           seed: int, batch_size: int, progress: bool = True,
                           crop: str = "none") -> float:
    return filtered_mean(path_lengths(model, distance, n, sampling, seed, batch_size,
                                      progress=progress, crop=crop))
