"""Image sources for the shard stage: MNIST-format IDX files, a folder of images, existing shards.

Every source yields `(split, key, image, label)` lazily, one image at a time, with the image
already at the stored resolution and channel count (a PIL image in mode "L" or "RGB") and the label
an int or None. Memory stays bounded by one image (or one block of IDX records), never the dataset.

The work is split in two so that the shard writer can run the costly half in worker processes:
`jobs(split)` lists, in order, what each image needs (a file name, a block's pixels, a raw sample)
with its label, cheaply in this process; `preparer()` is a picklable function that turns one job
into the stored image (decode, orient, crop, resize) or a `Skipped`. `samples(split)` runs both
in this process; the writer runs the same jobs in any number of processes and puts the results
back in job order, so keys, skips and bytes do not depend on the number of workers.

IDX images (28×28) are zero-padded by 2 px to 32×32 as the reference ALAE does (DESIGN.md,
"Data"), then resized with antialiasing if the stored resolution differs. Folder images are centre-cropped to
square and resized with LANCZOS.
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import os
import stat
import struct
import subprocess
import tarfile
import warnings
import zlib
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Optional, Union

import numpy as np
from PIL import Image, ImageOps
from webdataset.shardlists import expand_urls

from alae.config import DEFAULT_FASHION_MNIST, DataConfig, is_pipe_url
from alae.data.format import (SPLITS, bad_sample, raw_samples, read_manifest, sample_image,
                              sample_label, shard_paths, short_reason, tar_samples)
from alae.errors import DataError

Sample = tuple[str, str, Image.Image, Optional[int]]
Job = tuple[Any, Optional[int]]   # what one image needs (picklable), and its label


class Skipped(NamedTuple):
    """A preparer's answer for a file that is not used: its relative path and why."""
    path: str
    reason: str


Preparer = Callable[[Any], Union[Image.Image, Skipped]]

FASHION_MNIST_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DIGIT_LABELS = [str(d) for d in range(10)]

IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_IMAGES_MAGIC = 0x00000803   # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801   # unsigned bytes, 1 dimension
IDX_SIDE = 28
IDX_PAD = 2                     # 28 + 2*2 = 32, the reference's padding

# Formats recognised by content, so a PNG named .jpg (or without extension) still counts.
# An animation (GIF, WebP, APNG) gives its first frame: PIL opens every format at frame 0.
FOLDER_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")


def sample_key(split: str, index: int) -> str:
    # webdataset splits keys at the first dot, so keys are built only from [a-z0-9_].
    return f"{split}_{index:07d}"


def open_source(cfg: DataConfig):
    """The source named by `cfg.source`, checked enough to fail before any work is done."""
    if cfg.source == "fashion-mnist":
        return IdxSource(cfg, FASHION_MNIST_LABELS)
    if cfg.source == "mnist-idx":
        return IdxSource(cfg, DIGIT_LABELS)
    if cfg.source == "folder":
        return FolderSource(cfg)
    if cfg.source == "shards":
        return PipeShardSource(cfg) if is_pipe_url(cfg.path) else ShardSource(cfg)
    raise DataError(f"data.source: unknown source {cfg.source!r}")


class Source:
    """What every source shares: its skipped files, and running its jobs in this process."""

    label_names: Optional[list[str]]
    skipped: list[dict]

    def jobs(self, split: str) -> Iterator[Job]:
        """A generator (the shard writer closes it when it stops early)."""
        raise NotImplementedError

    def preparer(self) -> Preparer:
        raise NotImplementedError

    def samples(self, split: str) -> Iterator[Sample]:
        prepare = self.preparer()
        return self.keyed(split, ((prepare(job), label) for job, label in self.jobs(split)))

    def keyed(self, split: str, prepared: Iterator[tuple[Any, Optional[int]]]
              ) -> Iterator[tuple[str, str, Any, Optional[int]]]:
        """Prepared jobs, in job order, as `(split, key, result, label)`: a `Skipped` is recorded
        and takes no key, so keys count only the images stored."""
        index = 0
        for result, label in prepared:
            if isinstance(result, Skipped):
                self._skip(result.path, result.reason)
                continue
            yield split, sample_key(split, index), result, label
            index += 1

    def _skip(self, rel: str, reason: str) -> None:
        self.skipped.append({"path": printable(rel), "reason": reason})


def skipped_lines(skipped: list[dict], root: str | Path, prefix: str, listed_in: str = "",
                  shown: int = 5) -> list[str]:
    """The first `shown` skipped files (paths under `root`) with their reasons, then how many
    more: a skip is a decision about the user's data, so it is said, not only recorded."""
    lines = [f"{prefix}: skipped {Path(root) / s['path']}: {s['reason']}" for s in skipped[:shown]]
    if len(skipped) > shown:
        lines.append(f"{prefix}: ... and {len(skipped) - shown} more skipped files"
                     + (f" (listed under \"skipped\" in {listed_in})" if listed_in else ""))
    return lines


def fit_image(img: Image.Image, resolution: int, channels: int) -> Image.Image:
    """Centre-crop to square, convert to L/RGB, resize with LANCZOS (antialiased) to `resolution`."""
    img = img.convert("L" if channels == 1 else "RGB")
    w, h = img.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    if side == resolution:
        return img.crop(box) if (w, h) != (side, side) else img
    return img.resize((resolution, resolution), Image.LANCZOS, box=box)


# ----------------------------------------------------------------------------------------- IDX

def _is_gzip(path: Path) -> bool:
    # Decided by content (gzip magic), not by the name: a renamed file still opens.
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _open_maybe_gzip(path: Path):
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


def _read_exact(f, n: int, path: Path) -> bytes:
    try:
        data = f.read(n)
    except (EOFError, OSError, zlib.error) as e:  # truncated or corrupt gzip stream
        raise DataError(f"{path}: corrupt or truncated IDX file ({e})") from None
    if len(data) != n:
        raise DataError(f"{path}: truncated IDX file (wanted {n} more bytes, got {len(data)})")
    return data


def _idx_header(f, path: Path, magic: int, ndim: int) -> tuple[int, ...]:
    (found,) = struct.unpack(">I", _read_exact(f, 4, path))
    if found != magic:
        raise DataError(f"{path}: not an IDX {'image' if ndim == 3 else 'label'} file "
                        f"(magic 0x{found:08x}, expected 0x{magic:08x})")
    return struct.unpack(f">{ndim}I", _read_exact(f, 4 * ndim, path))


class IdxSource(Source):
    """MNIST-format IDX files (Fashion-MNIST, MNIST...), gzipped or not; the official split."""

    def __init__(self, cfg: DataConfig, label_names: list[str]):
        self.cfg = cfg
        self.root = Path(cfg.source_path)
        self.label_names = label_names
        self.skipped: list[dict] = []
        self.files = {split: tuple(self._find(name) for name in names)
                      for split, names in IDX_FILES.items()}
        # Headers and labels are small: check them all now so a bad file fails before any work.
        self._counts = {}
        self._labels = {}
        for split, (images, labels) in self.files.items():
            self._labels[split] = self._read_labels(labels)
            with _open_maybe_gzip(images) as f:
                n, rows, cols = _idx_header(f, images, IDX_IMAGES_MAGIC, 3)
            if (rows, cols) != (IDX_SIDE, IDX_SIDE):
                raise DataError(f"{images}: images are {rows}x{cols}, expected 28x28")
            if n != len(self._labels[split]):
                raise DataError(f"{images}: {n} images but {labels.name} has "
                                f"{len(self._labels[split])} labels")
            if not _is_gzip(images) and images.stat().st_size < 16 + n * IDX_SIDE * IDX_SIDE:
                raise DataError(f"{images}: truncated IDX file ({images.stat().st_size} bytes "
                                f"for {n} images)")
            self._counts[split] = n

    def _find(self, name: str) -> Path:
        for candidate in (self.root / name, self.root / f"{name}.gz"):
            if candidate.is_file():
                return candidate
        hint = ""
        if str(self.root) == DEFAULT_FASHION_MNIST:
            hint = " (install it: apt-get install dataset-fashion-mnist)"
        if not self.root.is_dir():
            raise DataError(f"{self.root}: dataset folder not found{hint}")
        raise DataError(f"{self.root / name}: IDX file not found (nor {name}.gz){hint}")

    def _read_labels(self, path: Path) -> np.ndarray:
        with _open_maybe_gzip(path) as f:
            (n,) = _idx_header(f, path, IDX_LABELS_MAGIC, 1)
            labels = np.frombuffer(_read_exact(f, n, path), dtype=np.uint8)
        if n and labels.max() >= len(self.label_names):
            raise DataError(f"{path}: label {int(labels.max())} out of range "
                            f"(expected 0..{len(self.label_names) - 1})")
        return labels

    def count(self, split: str) -> int:
        return self._counts[split]

    def jobs(self, split: str) -> Iterator[Job]:
        """Each image's zero-padded 32x32 pixels, read a block of records at a time."""
        path = self.files[split][0]
        labels = self._labels[split]
        n = self._counts[split]
        pixels = IDX_SIDE * IDX_SIDE
        block = 1000  # records decoded per read: one numpy call instead of one per image
        with _open_maybe_gzip(path) as f:
            _idx_header(f, path, IDX_IMAGES_MAGIC, 3)
            for start in range(0, n, block):
                count = min(block, n - start)
                raw = np.frombuffer(_read_exact(f, count * pixels, path), dtype=np.uint8)
                padded = np.pad(raw.reshape(count, IDX_SIDE, IDX_SIDE),
                                ((0, 0), (IDX_PAD, IDX_PAD), (IDX_PAD, IDX_PAD)))
                for j in range(count):
                    yield padded[j], int(labels[start + j])

    def preparer(self) -> Preparer:
        return partial(_idx_image, resolution=self.cfg.resolution, channels=self.cfg.channels)


def _idx_image(pixels: np.ndarray, resolution: int, channels: int) -> Image.Image:
    img = Image.fromarray(pixels, "L")
    if resolution != pixels.shape[0]:
        img = img.resize((resolution, resolution), Image.LANCZOS)
    return img.convert("RGB") if channels == 3 else img


# -------------------------------------------------------------------------------------- folder

def _flatten(img: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit L or RGB: alpha composited on black, 16-bit scaled to 8 bits.

    Transparency without an alpha channel (a PNG tRNS colour, a GIF's transparent index) is
    alpha too: those pixels become black like any transparent one."""
    mode = img.mode
    transparent = img.info.get("transparency")
    if mode.startswith("I") or mode == "F":
        # 16-bit PNGs open as I;16* or I with values 0..65535; 65535/257 = 255 exactly.
        a = np.asarray(img, dtype=np.float64)
        scale = 1.0 if mode == "F" else 257.0
        out = np.clip(np.rint(a / scale), 0, 255).astype(np.uint8)
        if isinstance(transparent, int):  # PIL's convert() ignores tRNS for these modes
            out[a == transparent] = 0
        return Image.fromarray(out, "L")
    if transparent is not None and mode in ("1", "L", "RGB", "P"):
        img = img.convert("RGBA")
    elif mode == "P":
        img = img.convert("RGB")
    elif mode in ("PA", "LA", "La", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        # Transparent pixels become black, as if the image were shown on the black background
        # that zero-padded (MNIST-like) images already have.
        black = Image.new("RGBA", img.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, img).convert("RGB")
    if img.mode in ("L", "RGB"):
        return img
    return img.convert("RGB")  # 1, CMYK, YCbCr, LAB, HSV, RGBX ...


def load_image(path: Path, resolution: int, channels: int) -> Image.Image:
    """Decode one image file into the stored format (raises on unreadable data)."""
    with Image.open(path) as img:
        if img.format == "JPEG":
            # DCT-domain downscaling: big JPEGs decode at a fraction of the cost, and staying at
            # >= 2x the target size leaves the LANCZOS resize to do the antialiasing.
            img.draft(None, (2 * resolution, 2 * resolution))
        img.load()
        img = ImageOps.exif_transpose(img)  # phone photos store rotation as a tag
        return fit_image(_flatten(img), resolution, channels)


def _split_of(rel: str, test_fraction: float) -> str:
    # A hash of the relative path alone: adding or removing other files never moves an image
    # between splits, and the split is the same on every machine. Hashed as the name's bytes,
    # which are its UTF-8 for every name that has one.
    h = int.from_bytes(hashlib.sha1(os.fsencode(rel)).digest()[:8], "big")
    return "test" if h / 2.0 ** 64 < test_fraction else "train"


def printable(name: str) -> str:
    """A file name as text every JSON reader and terminal takes. Linux names are bytes; Python
    carries those that are not UTF-8 as lone surrogates, which become `\\xff` here."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _os_problem(path: Path, e: Exception) -> Optional[str]:
    """Why the system would not give us `path`'s bytes, or None when `e` is about its content."""
    if not isinstance(e, OSError) or not e.errno:  # PIL's decoding errors carry no errno
        return None
    if isinstance(e, FileNotFoundError):
        return "dangling symbolic link" if path.is_symlink() else "vanished during the scan"
    if e.errno == errno.ELOOP:
        return "symbolic link loop"
    return f"unreadable file ({e.strerror})"


class FolderSource(Source):
    """A folder of images, searched recursively; labels from first-level sub-folders.

    Hidden files and folders (names starting with ".") are ignored. When images sit in first-level
    sub-folders, those folder names (sorted) are the classes; an image directly at the top level of
    such a folder has no class and is skipped (listed with the reason), like torchvision's
    ImageFolder. When every image is at the top level the dataset has no labels.

    Symbolic links are followed, to files and to folders, inside the folder or out of it (a
    dataset assembled from links is common), but each real folder is read once: a link back to
    an enclosing folder, or a second way into a folder already read, is skipped, so the scan
    always ends and no image is stored twice (or in both splits).
    """

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self.root = Path(cfg.source_path)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: image folder not found")
        self.skipped: list[dict] = []
        candidates = [rel for rel in self._walk() if self._sniff(rel)]
        nested = [rel for rel in candidates if "/" in rel]
        if nested:
            classes = sorted({rel.split("/", 1)[0] for rel in nested})
            self.label_names: Optional[list[str]] = [printable(c) for c in classes]
            for rel in candidates:
                if "/" not in rel:
                    self._skip(rel, "image at the top level of a folder whose images are in "
                                    "class sub-folders (no label)")
            ids = {name: i for i, name in enumerate(classes)}
            items = [(rel, ids[rel.split("/", 1)[0]]) for rel in nested]
        else:
            self.label_names = None
            items = [(rel, None) for rel in candidates]
        self.items: dict[str, list[tuple[str, Optional[int]]]] = {s: [] for s in SPLITS}
        for rel, label in items:
            self.items[_split_of(rel, cfg.test_fraction)].append((rel, label))
        if not items:
            reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in self.skipped[:3])
            raise DataError(f"{self.root}: no usable image found"
                            + (f" ({len(self.skipped)} files skipped, e.g. {reasons})"
                               if self.skipped else " (the folder is empty)"))

    def _walk(self) -> list[str]:
        """Relative paths of every non-hidden entry that is not a folder, sorted."""
        found: list[str] = []
        read: dict[tuple[int, int], str] = {}  # (device, inode) of each folder read -> its path
        todo = [""]
        while todo:
            rel_dir = todo.pop()
            folder = self.root / rel_dir
            try:
                st = folder.stat()
                first = read.get((st.st_dev, st.st_ino))
                if first is not None:
                    if not first or rel_dir.startswith(first + "/"):  # `first` encloses it
                        self._skip(rel_dir, "link loop: leads back to "
                                            f"{printable(first) or 'the source folder'}")
                    else:
                        self._skip(rel_dir, f"the same folder as {printable(first)}, read once")
                    continue
                read[st.st_dev, st.st_ino] = rel_dir
                with os.scandir(folder) as it:
                    entries = sorted((e for e in it if not e.name.startswith(".")),
                                     key=lambda e: e.name)
            except OSError as e:
                self._skip(rel_dir or ".", f"unreadable folder ({e.strerror})")
                continue
            subdirs = []
            for entry in entries:
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                try:
                    is_dir = entry.is_dir()  # follows links
                except OSError:  # a link loop, say: listed as a file, and _sniff says why
                    is_dir = False
                (subdirs if is_dir else found).append(rel)
            todo += reversed(subdirs)  # depth first, in name order: the same walk every time
        return sorted(found)

    def _sniff(self, rel: str) -> bool:
        """Header check only (cheap); full decoding errors are caught while streaming.

        Like every file that is not a usable image, an empty one (an interrupted copy, a failed
        download) is skipped with its reason in the manifest, not an error: one bad file among
        thousands should not stop the stage, and the stage lists what it skipped."""
        path = self.root / rel
        reason = None
        try:
            st = path.stat()
            if not stat.S_ISREG(st.st_mode):  # opening a FIFO would wait for a writer forever
                reason = "not a regular file (a FIFO, socket or device)"
            elif st.st_size == 0:
                reason = "empty file (0 bytes)"
            else:
                with warnings.catch_warnings():
                    # Between PIL's pixel limit and twice it PIL only warns, and decoding takes
                    # hundreds of MB (a crafted file of a few kB): refused like a bigger bomb.
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    with Image.open(path) as img:
                        fmt = img.format
                if fmt not in FOLDER_FORMATS:
                    reason = (f"unsupported image format {fmt} "
                              "(expected PNG, JPEG, WebP, BMP or GIF)")
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            reason = f"too many pixels to decode safely ({type(e).__name__}: {e})"
        except Exception as e:  # PIL raises many types for junk input; the reason is recorded
            reason = _os_problem(path, e) or f"not an image ({type(e).__name__}: {e})"
        if reason:
            self._skip(rel, reason)
        return reason is None

    def count(self, split: str) -> int:
        return len(self.items[split])

    def jobs(self, split: str) -> Iterator[Job]:
        yield from self.items[split]

    def preparer(self) -> Preparer:
        return partial(_folder_image, self.root, resolution=self.cfg.resolution,
                       channels=self.cfg.channels)


def _folder_image(root: Path, rel: str, resolution: int, channels: int
                  ) -> Image.Image | Skipped:
    path = root / rel
    try:
        return load_image(path, resolution, channels)
    except Exception as e:  # truncated or corrupt data past the header, or a file gone
        return Skipped(rel, _os_problem(path, e) or f"unreadable image ({type(e).__name__}: {e})")


# -------------------------------------------------------------------------------------- shards

class ShardSource(Source):
    """Shards written by this project, re-encoded at the configured resolution and channels."""

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self.root = Path(cfg.source_path)
        self.manifest = read_manifest(self.root)
        self.label_names = self.manifest["label_names"]
        self.skipped: list[dict] = []

    def count(self, split: str) -> int:
        return int(self.manifest["counts"][split])

    def jobs(self, split: str) -> Iterator[Job]:
        paths = shard_paths(self.root, self.manifest, split)
        labels = self.label_names
        for raw in raw_samples(paths, self.manifest):
            label = (sample_label(raw, len(labels), self.manifest, required=True)
                     if labels is not None else None)
            yield raw, label

    def preparer(self) -> Preparer:
        return partial(_shard_image, manifest=self.manifest, resolution=self.cfg.resolution,
                       channels=self.cfg.channels)


def _shard_image(raw: dict, manifest: Optional[dict], resolution: int, channels: int
                 ) -> Image.Image:
    return fit_image(sample_image(raw, manifest), resolution, channels)


class PipeShardSource(Source):
    """Webdataset shards read through a `pipe:` URL pattern (only with data.allow_pipe: true).

    `{split}` in the pattern becomes train or test, then webdataset's brace ranges expand it
    (`{000000..000009}`) into one shell command per shard, whose output must be a tar of samples
    with a `.png` and, for every sample or none, an integer `.cls`. Nothing is known up front:
    counts are unknown (the progress bar has no total) and the label names are the classes seen,
    0 to the largest, known once both splits were read.
    """

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self.urls = {split: expand_urls(str(cfg.path).replace("{split}", split))
                     for split in SPLITS}
        self.skipped: list[dict] = []
        self._labelled: Optional[bool] = None  # decided by the first sample
        self._top_label = -1

    @property
    def label_names(self) -> Optional[list[str]]:
        return [str(c) for c in range(self._top_label + 1)] if self._labelled else None

    def count(self, split: str) -> None:
        return None

    def jobs(self, split: str) -> Iterator[Job]:
        for url in self.urls[split]:
            for raw in _command_samples(url):
                label = sample_label(raw, None)
                if self._labelled is None:
                    self._labelled = label is not None
                if (label is None) == self._labelled:
                    raise bad_sample(raw, "has no .cls label while earlier samples have one"
                                     if label is None else
                                     "has a .cls label while earlier samples have none")
                if label is not None:
                    self._top_label = max(self._top_label, label)
                yield raw, label

    def preparer(self) -> Preparer:
        return partial(_shard_image, manifest=None, resolution=self.cfg.resolution,
                       channels=self.cfg.channels)


def _command_samples(url: str) -> Iterator[dict]:
    """Samples of the tar that the shell command of a `pipe:` URL writes to its stdout.

    The command is run here rather than by webdataset so that its exit status is checked after
    the whole tar was read (a command failing after a complete tar still fails the stage) and a
    failure is one line naming the URL. No manifest counts the samples, so what follows the tar's
    end is checked instead: tar read as a stream takes a damaged header for the end, and only
    the zero blocks of a real end may follow it (damage close to the end can still go unseen).
    """
    proc = subprocess.Popen(url[len("pipe:"):], shell=True, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    key, failure = None, ""
    try:
        for sample in tar_samples(proc.stdout, url):
            key = sample["__key__"]
            yield sample
        rest = iter(lambda: proc.stdout.read(1 << 20), b"")  # what the command writes after
        if any(chunk.strip(b"\0") for chunk in rest):
            failure = (f"data after the end of the tar{f', after sample {key}' if key else ''} "
                       "(a damaged tar header?)")
    except (tarfile.TarError, OSError, ValueError) as e:
        failure = f"unreadable shard{f' after sample {key}' if key else ''} ({short_reason(e)})"
    finally:  # also when stopped early (data.limit): a command still writing gets SIGPIPE
        proc.stdout.close()
        try:
            status = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            status = proc.wait()
    broken_pipe = status in (-13, 141)  # we closed its stdout after a tar error
    if status != 0 and not (failure and broken_pipe):
        failure = f"the command exited with status {status}" + (f"; {failure}" if failure else "")
    if failure:
        raise DataError(f"{url}: {failure}")
