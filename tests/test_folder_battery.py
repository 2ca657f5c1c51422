"""The folder source against what real image folders hold: broken and looping links, files it may
not read, names that are not UTF-8, rotated and CMYK photos, animations, transparency, bombs.

Every entry is either decoded to the right pixels or skipped with a one-line reason in the
manifest; the shard set is written whole, never with a traceback.
"""
from __future__ import annotations

import ctypes
import json
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alae.config import DataConfig
from alae.data import read_manifest, shards, write_shards
from alae.data.sources import FolderSource
from alae.errors import DataError
from test_data import read_split

RES = 16        # sources are drawn at the stored size: no resampling blurs the expected pixels
JPEG_TOL = 6    # solid 8x8 blocks at quality 95 and 4:4:4 decode within a few levels

BLACK, WHITE, GRAY = (0, 0, 0), (255, 255, 255), (128, 128, 128)


def halves(first, second, axis=0) -> np.ndarray:
    """RES x RES RGB: the top half `first` and the bottom `second` (left and right: axis=1)."""
    a = np.empty((RES, RES, 3), np.uint8)
    a[...] = second
    np.moveaxis(a, axis, 0)[: RES // 2] = first
    return a


def solid(colour) -> np.ndarray:
    return halves(colour, colour)


# What each entry must become: pixels (with a tolerance) or a reason in manifest["skipped"].
DECODED = {
    "good/rotated.jpg": (halves(WHITE, BLACK), JPEG_TOL),        # EXIF says: turn 90 degrees
    "good/cmyk.jpg": (solid((255, 0, 0)), JPEG_TOL),
    "good/progressive.jpg": (halves((10, 200, 30), (200, 30, 10)), JPEG_TOL),
    "good/animated.webp": (solid((0, 0, 255)), 0),               # first frame
    "good/animated.gif": (solid((0, 255, 0)), 0),                # first frame
    "good/rgba16.png": (halves((200, 100, 50), BLACK, axis=1), 0),  # transparent half: black
    "good/gray16_trns.png": (halves((100,) * 3, BLACK, axis=1), 0),
    "good/gray_trns.png": (halves((60,) * 3, BLACK, axis=1), 0),
    "good/palette_alpha.png": (halves((0, 0, 255), GRAY, axis=1), 0),  # white at alpha 128
    "good/linked.png": (solid((44, 88, 132)), 0),                 # a file link out of the root
    "good/\\xff.png": (solid((7, 77, 177)), 0),
    "outside/photo.png": (solid((33, 66, 99)), 0),                # a folder link out of the root
    "\\xfd-class/photo.png": (solid((123, 45, 67)), 0),
}
SKIPPED = {
    "good/dangling.png": "dangling symbolic link",
    "good/self.png": "symbolic link loop",
    "good/loop": "link loop: leads back to the source folder",
    "twin": "the same folder as outside",
    "good/pipe.png": "not a regular file",
    "good/locked.png": "unreadable file (Permission denied)",
    "good/private": "unreadable folder (Permission denied)",
    "good/\\xfe-cut.png": "unreadable image",
    "good/scan.tiff": "unsupported image format TIFF",
    "good/bomb.png": "DecompressionBombError",
    "good/big.png": "DecompressionBombWarning",
}
LOCKED = ("good/locked.png", "good/private")  # need a reader without root's override


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def raw_png(width: int, height: int, depth: int, colour_type: int, rows: bytes = b"") -> bytes:
    """A PNG built by hand: PIL cannot write 16-bit RGBA, nor an image too big to hold."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b""))


def save_frames(path: Path, colours, **kw) -> None:
    frames = [Image.new("RGB", (RES, RES), c) for c in colours]
    frames[0].save(path, save_all=True, append_images=frames[1:], **kw)


def build_nasty_folder(root: Path, elsewhere: Path, locked: bool) -> None:
    """The entries of DECODED and SKIPPED under `root`; link targets in `elsewhere`."""
    good = root / "good"
    good.mkdir(parents=True)
    elsewhere.mkdir()
    jpeg = dict(quality=95, subsampling=0)
    upright = Image.fromarray(halves(WHITE, BLACK))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: shown turned 90 degrees clockwise, as phones store portraits
    upright.transpose(Image.Transpose.ROTATE_90).save(good / "rotated.jpg", exif=exif, **jpeg)
    Image.new("CMYK", (RES, RES), (0, 255, 255, 0)).save(good / "cmyk.jpg", **jpeg)
    Image.fromarray(halves((10, 200, 30), (200, 30, 10))).save(good / "progressive.jpg",
                                                               progressive=True, **jpeg)
    save_frames(good / "animated.webp", [(0, 0, 255), (255, 255, 0)], lossless=True)
    save_frames(good / "animated.gif", [(0, 255, 0), (255, 0, 255)])
    opaque, clear = struct.pack(">4H", 0xC8C8, 0x6464, 0x3232, 0xFFFF), b"\xff" * 6 + b"\0\0"
    row = b"\0" + opaque * (RES // 2) + clear * (RES // 2)
    (good / "rgba16.png").write_bytes(raw_png(RES, RES, 16, 6, row * RES))
    left_right = lambda a, b, dtype: halves(a, b, axis=1)[..., 0].astype(dtype)  # noqa: E731
    Image.fromarray(left_right(100, 200, np.uint16) * 257).save(good / "gray16_trns.png",
                                                               transparency=200 * 257)
    Image.fromarray(left_right(60, 61, np.uint8)).save(good / "gray_trns.png", transparency=61)
    palette = Image.fromarray(left_right(0, 1, np.uint8), "P")
    palette.putpalette([0, 0, 255, 255, 255, 255])
    palette.save(good / "palette_alpha.png", transparency=bytes([255, 128]))
    Image.new("RGB", (RES, RES), (44, 88, 132)).save(elsewhere / "loose.png")
    (good / "linked.png").symlink_to(elsewhere / "loose.png")
    (elsewhere / "folder").mkdir()
    Image.new("RGB", (RES, RES), (33, 66, 99)).save(elsewhere / "folder" / "photo.png")
    (root / "outside").symlink_to(elsewhere / "folder")
    (root / "twin").symlink_to(elsewhere / "folder")  # read once, as outside (sorted first)
    raw_root = os.fsencode(root)
    with open(raw_root + b"/good/\xff.png", "wb") as f:
        Image.new("RGB", (RES, RES), (7, 77, 177)).save(f, format="PNG")
    os.mkdir(raw_root + b"/\xfd-class")
    with open(raw_root + b"/\xfd-class/photo.png", "wb") as f:
        Image.new("RGB", (RES, RES), (123, 45, 67)).save(f, format="PNG")
    with open(raw_root + b"/good/\xfe-cut.png", "wb") as f:
        f.write(raw_png(RES, RES, 8, 2, b"\0" * 40))  # rows cut short
    (good / "dangling.png").symlink_to("nowhere.png")
    (good / "self.png").symlink_to("self.png")
    (good / "loop").symlink_to("..")
    os.mkfifo(good / "pipe.png")  # opening it would wait for a writer forever
    if locked:
        Image.new("L", (RES, RES), 9).save(good / "locked.png")
        (good / "locked.png").chmod(0)
        (good / "private").mkdir()
        Image.new("L", (RES, RES), 9).save(good / "private" / "hidden_from_us.png")
        (good / "private").chmod(0)
    Image.new("RGB", (RES, RES)).save(good / "scan.tiff")
    (good / "bomb.png").write_bytes(raw_png(100_000, 100_000, 8, 0))  # 10 Gpixel, claimed only
    # 10000x10000 is over PIL's limit but under twice it, where PIL only warns; real zeros, so
    # decoding it would succeed and take 100 MB (a real bomb: its 12 MB of rows zip to ~12 kB).
    (good / "big.png").write_bytes(raw_png(10_000, 10_000, 1, 0, (b"\0" * 1251) * 10_000))


def reads_as_a_user() -> bool:
    """Let this thread read only what file permissions allow, as for any user; False when that
    cannot be done. Root reads even chmod 000 files (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), but
    Linux capabilities belong to a thread: this one drops both and the rest of pytest keeps them."""
    if os.geteuid() != 0:
        return True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # capability ABI v3, the calling thread
        sets = (ctypes.c_uint32 * 6)()                  # effective, permitted, inheritable (x2)
        if libc.capget(header, sets) != 0:
            return False
        sets[0] &= ~(1 << 1 | 1 << 2)                   # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        return libc.capset(header, sets) == 0
    except (AttributeError, OSError):  # not Linux
        return False


def in_a_thread(fn):
    """fn() in a thread of its own (its result, or its exception raised here)."""
    out: dict = {}

    def run():
        try:
            out["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - raised again below, in pytest's thread
            out["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["result"]


@pytest.fixture(scope="module")
def battery(tmp_path_factory):
    """The nasty folder written as shards once, by a thread that cannot read locked files."""
    tmp = tmp_path_factory.mktemp("battery")

    def shard() -> bool:
        locked = reads_as_a_user()
        build_nasty_folder(tmp / "src", tmp / "elsewhere", locked)
        write_shards(DataConfig(source="folder", path=str(tmp / "src"), resolution=RES,
                                channels=3, test_fraction=0.5), tmp / "out")
        return locked

    locked = in_a_thread(shard)
    stored = [px for split in ("train", "test") for _, px, _ in read_split(tmp / "out", split)]
    return read_manifest(tmp / "out"), stored, tmp / "out", locked


def test_battery_writes_a_whole_shard_set(battery):
    manifest, stored, out, locked = battery
    assert len(stored) == sum(manifest["counts"].values()) == len(DECODED)
    assert sorted(s["path"] for s in manifest["skipped"]) == sorted(
        name for name in SKIPPED if locked or name not in LOCKED)
    assert manifest["label_names"] == ["good", "outside", "\\xfd-class"]
    # Every string is real text: no lone surrogate that strict JSON readers refuse.
    text = (out / "manifest.json").read_bytes().decode("utf-8")
    json.dumps(json.loads(text), ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("name", DECODED)
def test_battery_decoded(battery, name):
    manifest, stored, _, _ = battery
    want, tol = DECODED[name]
    assert name not in [s["path"] for s in manifest["skipped"]]
    errors = [np.abs(px.astype(int) - want).max() for px in stored]
    assert min(errors) <= tol, f"no stored image matches {name} (closest off by {min(errors)})"


@pytest.mark.parametrize("name", SKIPPED)
def test_battery_skipped_with_reason(battery, name):
    manifest, _, _, locked = battery
    if name in LOCKED and not locked:
        pytest.skip("running as root, and this thread could not drop the capabilities that "
                    "let root read a chmod 000 file")
    reasons = [s["reason"] for s in manifest["skipped"] if s["path"] == name]
    assert len(reasons) == 1 and SKIPPED[name] in reasons[0] and "\n" not in reasons[0], reasons


@pytest.mark.parametrize("moment", ["after listing", "after checking"])
def test_file_vanishing_during_the_scan_is_skipped(tmp_path, monkeypatch, moment):
    (tmp_path / "src").mkdir()
    for i in range(6):
        Image.new("L", (8, 8), i * 10).save(tmp_path / "src" / f"{i}.png")
    gone = tmp_path / "src" / "3.png"
    if moment == "after listing":  # between the folder listing and the header check
        walk = FolderSource._walk
        monkeypatch.setattr(FolderSource, "_walk", lambda self: (walk(self), gone.unlink())[0])
    else:  # between the header check and the decoding
        open_source = shards.open_source
        monkeypatch.setattr(shards, "open_source", lambda cfg: (open_source(cfg), gone.unlink())[0])
    manifest = write_shards(DataConfig(source="folder", path=str(tmp_path / "src"),
                                       test_fraction=0.5), tmp_path / "out")
    assert manifest["skipped"] == [{"path": "3.png", "reason": "vanished during the scan"}]
    assert sum(manifest["counts"].values()) == 5


def test_folder_of_broken_links_is_one_line_error(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.png").symlink_to("gone.png")
    (tmp_path / "src" / "b.png").symlink_to("b.png")
    with pytest.raises(DataError) as err:
        write_shards(DataConfig(source="folder", path=str(tmp_path / "src")), tmp_path / "out")
    message = str(err.value)
    assert "no usable image found (2 files skipped" in message and "dangling" in message
    assert "\n" not in message and not (tmp_path / "out").exists()
