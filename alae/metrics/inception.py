"""Inception features: pytorch-fid's `InceptionV3` (the TF FID network ported to PyTorch), 2048-d
pool3, with its own input normalisation, after one of two resizes to its 299x299 input
(`evaluate.resize`):
- `legacy` (default): pytorch-fid's own bilinear `F.interpolate`, bit-compatible with
  `python -m pytorch_fid` (tests/test_inception.py);
- `clean`: clean-fid's (Parmar et al. 2022, "On Aliased Resizing and Surprising Subtleties in GAN
  Evaluation"): images quantised to 8 bits as a PNG would hold them, then each channel resized by
  PIL's bicubic filter in 32-bit float mode and clipped to [0, 255]: the pixels equal clean-fid's
  `make_resizer("PIL", False, "bicubic", (299, 299))` exactly (tested against the `clean-fid`
  package). bilinear `interpolate` from 32 px aliases; PIL's filter widens with the scale. The
  network stays pytorch-fid's (clean-fid's own "clean" mode uses the TF graph through TorchScript,
  scaled (x - 128) / 128): the space is named `inception_clean` (keys `fid_inception_clean`), and
  its numbers compare with no other space's.

The weights are pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, looked up where pytorch-fid
looks (`torch.hub`'s checkpoint folder: `$TORCH_HOME/hub/checkpoints/`, by default
`~/.cache/torch/hub/checkpoints/`) and downloaded there when missing and online. Offline and
missing, `InceptionFeatures.load` raises one `UserError` line naming the file to place and its URL.

Tests and speed measurements use a random stand-in file of the same layout, written only into a
temporary TORCH_HOME by `benchmarks/standin.py`, never by this library.
"""
from __future__ import annotations

import socket
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from alae.errors import UserError
from alae.pixels import to_uint8

# pytorch-fid's FID_WEIGHTS_URL (tests/test_inception.py checks they are equal): written out so
# that importing this module does not import pytorch-fid, whose torchvision costs every process
# ~2 s that uses no Inception (all the featurenet-space stages and commands)
WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
               "pt_inception-2015-12-05-6726825d.pth")
WEIGHTS_FILE = WEIGHTS_URL.rsplit("/", 1)[-1]   # pt_inception-2015-12-05-6726825d.pth
DIMS = 2048                                     # pool3: the standard; other dims do not compare
SIZE = 299                                      # the network's input side
RESIZES = ("legacy", "clean")
DOWNLOAD_TIMEOUT_S = 30


def _pytorch_fid():
    """pytorch-fid's `inception` module, imported when a network is first built."""
    from pytorch_fid import inception

    return inception


def weights_path() -> Path:
    """Where pytorch-fid (through `torch.hub.load_state_dict_from_url`) finds the weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def _download(url: str, dst: Path) -> None:
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)   # offline must fail in seconds, not hang
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(dst), progress=sys.stderr.isatty())
    finally:
        socket.setdefaulttimeout(old)


def ensure_weights() -> Path:
    """The weights file, downloaded when missing; UserError naming path and URL when offline."""
    path = weights_path()
    if not path.is_file():
        try:
            _download(WEIGHTS_URL, path)
        except Exception as e:   # URLError, timeouts, HTTP errors: all mean "could not fetch"
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"Inception weights missing: place {path} (pytorch-fid's FID "
                            f"Inception, from {WEIGHTS_URL}); download failed: {reason}") from None
    return path


def clean_resize(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (N, C, H, W) -> float32 (N, C, 299, 299) in [0, 255], as clean-fid's
    "clean" resize: 8-bit pixels (`alae.pixels.to_uint8`, what a saved PNG holds), each channel
    resized on its own with PIL's bicubic filter in mode 'F', clipped. Grayscale stays one channel
    here: clean-fid's RGB copies would resize to the same three planes."""
    u = to_uint8(x).cpu().numpy()
    out = np.empty((*u.shape[:2], SIZE, SIZE), np.float32)
    for i in range(u.shape[0]):
        for c in range(u.shape[1]):
            plane = Image.fromarray(u[i, c].astype(np.float32))   # mode 'F'
            out[i, c] = np.asarray(plane.resize((SIZE, SIZE), Image.BICUBIC)).clip(0, 255)
    return torch.from_numpy(out)


def space_name(dims: int = DIMS, resize: str = "legacy") -> str:
    """`inception` (pool3, legacy resize), `inception<dims>` for another block, `_clean` added
    for clean resizing: numbers of two names never compare."""
    return ("inception" if dims == DIMS else f"inception{dims}") + \
        ("" if resize == "legacy" else f"_{resize}")


class InceptionFeatures:
    """pytorch-fid's InceptionV3 pool3 (N, 2048). Takes images in [-1, 1] (the pipeline's range),
    maps them to the [0, 1] pytorch-fid expects and repeats grayscale to three channels.

    `dims` picks another of pytorch-fid's blocks (64, 192, 768), average-pooled as its
    `get_activations` does; the space is then named `inception<dims>` (keys `fid_inception64`),
    since its values do not compare with pool3's. The pipeline always uses 2048. `resize`:
    `legacy` (pytorch-fid's bilinear, inside the network) or `clean` (`clean_resize`, before it;
    the name gets `_clean`)."""

    def __init__(self, net: torch.nn.Module, weights: Path, dims: int = DIMS,
                 resize: str = "legacy"):
        if resize not in RESIZES:
            raise ValueError(f"Inception resize {resize!r} is not one of {', '.join(RESIZES)}")
        self.net = net.eval().requires_grad_(False)
        self.net.resize_input = resize == "legacy"   # clean images arrive at 299 already
        self.weights = weights
        self.dim = dims
        self.resize = resize
        self.name = space_name(dims, resize)

    @classmethod
    def load(cls, device: str | torch.device = "cpu", dims: int = DIMS,
             resize: str = "legacy") -> "InceptionFeatures":
        """pytorch-fid's network with the weights file read as tensors only (`weights_only`:
        pytorch-fid's own loader would unpickle whatever the cache holds)."""
        blocks = _pytorch_fid().InceptionV3.BLOCK_INDEX_BY_DIM
        if dims not in blocks:
            raise UserError(f"Inception dims {dims} is not one of {', '.join(map(str, blocks))}")
        path = ensure_weights()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net = fid_inception_structure()
            net.load_state_dict(state)
        except Exception as e:  # unreadable, pickled code, or another network's tensors
            raise UserError(f"{path}: not pytorch-fid's Inception weights "
                            f"({str(e).splitlines()[0][:200]}); replace it with {WEIGHTS_URL}"
                            ) from None
        return cls(wrap(net, dims).to(device), path, dims, resize)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device) -> "InceptionFeatures":
        self.net.to(device)
        return self

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] not in (1, 3):
            raise ValueError(f"Inception takes 1- or 3-channel images, got {x.shape[1]} channels")
        if self.resize == "clean":
            x = clean_resize(x).to(self.device) / 255
        else:
            x = (x.to(self.device, torch.float32) + 1) / 2
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        out = self.net(x)[0]
        if out.shape[2:] != (1, 1):   # blocks before pool3, pooled as pytorch-fid does
            out = F.adaptive_avg_pool2d(out, (1, 1))
        return out.flatten(1)

    def provenance(self) -> dict[str, str]:
        return {"inception_weights": WEIGHTS_FILE}   # the resize is in `name`


def fid_inception_structure() -> torch.nn.Module:
    """pytorch-fid's `fid_inception_v3()` network without loading any weights."""
    pf = _pytorch_fid()
    with mock.patch.object(pf, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch("torchvision.models.Inception3.load_state_dict", lambda *a, **k: None):
        return pf.fid_inception_v3()


def wrap(net: torch.nn.Module, dims: int = DIMS) -> torch.nn.Module:
    """pytorch-fid's InceptionV3 (the block of `dims`, resize to 299, [0, 1] -> [-1, 1])
    around `net`."""
    pf = _pytorch_fid()
    with mock.patch.object(pf, "fid_inception_v3", lambda: net):
        return pf.InceptionV3([pf.InceptionV3.BLOCK_INDEX_BY_DIM[dims]])
