"""How one image is stored inside a shard (`data.encoding`): PNG, JPEG or a raw `.npy` array.

The shard stage encodes every image one way and records it in the manifest; every reader decodes
by the manifest (`alae.data.format.sample_image`). A manifest without an `encoding` key is PNG:
every shard set written before there was a choice, and the default one still, whose manifest
stays byte-identical to those.

Measured at 256 px on `scripts/synth_images.py` scenes, one core (`make bench-data`, README
"Data at scale"): a raw array decodes about 10x faster than PNG at 2.8x its bytes; JPEG (q 95)
about 3x faster than PNG at 0.4x its bytes, but lossy. The loader's decoding is what has to keep
a GPU fed at that size, so `auto` is `npy` from AUTO_RAW_BELOW to AUTO_RAW_UP_TO and PNG
otherwise: above 256 px a raw array's bytes grow to what no disk wants (FFHQ at 1024 px: 3 MB an
image, 220 GB for its 70k), while a GPU's step there is slow enough for PNG decoding to keep up.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from alae.config import ENCODING_CHOICES

ENCODINGS = tuple(e for e in ENCODING_CHOICES if e != "auto")   # what a manifest may name
# The sample's member in the tar (`<key>.<extension>`): the names webdataset's decoders know.
EXTENSION = {"png": "png", "jpeg": "jpg", "npy": "npy"}
# `auto` keeps PNG below this stored resolution (the default 32 px Fashion-MNIST shards stay
# byte-identical, and small images decode fast in any format) and stores raw arrays from it up.
AUTO_RAW_BELOW = 128
AUTO_RAW_UP_TO = 256   # ...and up to this one (CelebA-HQ 256, LSUN 256); PNG above


def resolve(encoding: str, resolution: int) -> str:
    """The encoding `data.encoding` means at `resolution` (`auto` picks by resolution)."""
    if encoding == "auto":
        return "npy" if AUTO_RAW_BELOW <= resolution <= AUTO_RAW_UP_TO else "png"
    return encoding


def encode(img: Image.Image, encoding: str, jpeg_quality: int = 95) -> bytes:
    """An L or RGB image as the bytes of one shard member. Deterministic: the same image gives
    the same bytes in any process, which keeps shards byte-reproducible."""
    buf = io.BytesIO()
    if encoding == "png":
        # Level 1: shards are written once and decoded often; tiny images barely compress further.
        img.save(buf, format="PNG", compress_level=1)
    elif encoding == "jpeg":
        # 4:4:4: no halved colour resolution, whose blur at sharp colour edges a GAN would learn.
        img.save(buf, format="JPEG", quality=jpeg_quality, subsampling=0)
    elif encoding == "npy":
        np.save(buf, np.asarray(img), allow_pickle=False)
    else:
        raise ValueError(f"unknown encoding {encoding!r}")
    return buf.getvalue()


def decode(data: bytes, encoding: str) -> Image.Image:
    """One shard member's bytes as a PIL image (raises on damaged data)."""
    if encoding == "npy":
        pixels = np.load(io.BytesIO(data), allow_pickle=False)
        if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (
                pixels.ndim == 3 and pixels.shape[2] != 3):
            raise ValueError(f"array {pixels.dtype} {pixels.shape} is not uint8 HxW or HxWx3")
        return Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB")
    # Naming the format skips Pillow's probing of every plugin: noticeable at thousands of img/s.
    img = Image.open(io.BytesIO(data), formats=("PNG" if encoding == "png" else "JPEG",))
    img.load()
    return img
