"""A folder of the user's images as the reference data of `alae metrics --data FOLDER`.

The metrics read shards (alae/metrics), so the folder is written as shards in a temporary folder
and the metrics then run on those exactly as on the shard stage's. Reading and writing are the
shard stage's own (`data.source: folder`, alae/data/sources.py, and its shard writer): the same
formats, recognised by content, the same centre crop and LANCZOS resize (here to the model's
resolution and channels), labels from first-level sub-folders, and the same files refused, each
with its reason. One difference: the shard stage splits a folder into train and test by a hash of
each name, while here every image goes to the test split, which the metrics read as the
reference; the train split is empty, so the metrics that read it (the data floor, the probe)
cannot run on a folder (alae/metrics_command.py says so).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Iterator, Optional

from PIL import Image

from alae.config import DataConfig
from alae.data.format import MANIFEST
# The shard stage's writer of one split: write_shards itself insists on a non-empty train split
# (and a test_fraction below 1), which a reference-only folder does not have.
from alae.data.shards import manifest_for, write_split
from alae.data.sources import FolderSource, printable, skipped_lines
from alae.errors import DataError, UserError
from alae.io import file_sha256, write_json

SHARDS, IMAGES = "shards", "images"   # what `--data` holds (`data_kind` in the JSON lines)
WHAT_DATA_TAKES = "--data takes a shard folder, as the shard stage writes, or a folder of images"

# The size check of `ImageFolder.size_warning`: an image is "not square" when its longer side
# exceeds its shorter by this factor (4:3 photos are), "small" when its shorter side is below this
# share of the model's resolution: centre-cropping the one and upscaling the other give the model
# images unlike those it was trained on, which moves every metric.
ASPECT_LIMIT = 1.2
SMALL_SHARE = 0.5
# The authors' configurations trained on aligned faces (alae/official.py): their README and ours
# ("The authors' released models") say they expect FFHQ-aligned crops.
FACE_CONFIGS = ("ffhq", "celeba", "celeba-hq256")


def data_kind(path: str | Path) -> str:
    """SHARDS for a folder with a shard manifest or tar shards (a shard folder, even a damaged
    one, whose error then comes from reading its manifest), IMAGES for any other folder (whether
    it holds images is for the folder source to say); UserError naming anything else."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such folder ({WHAT_DATA_TAKES})")
    if not path.is_dir():
        raise UserError(f"{path}: not a folder ({WHAT_DATA_TAKES})")
    if (path / MANIFEST).exists() or any(path.glob("*.tar")):
        return SHARDS
    return IMAGES


class ImageFolder:
    """The images of a folder, as the folder source finds them, at one resolution and channel
    count: DataError naming the folder when it holds no usable image."""

    def __init__(self, folder: str | Path, resolution: int, channels: int):
        self.folder = Path(folder)
        self.cfg = DataConfig(source="folder", path=str(folder), resolution=resolution,
                              channels=channels)
        self.source = FolderSource(self.cfg)
        # Its sorted order (each split keeps it, so the merge restores it): one order on every
        # machine, and the first `num_images` images are the ones reconstructed.
        self.items = sorted(self.source.items["train"] + self.source.items["test"])
        self.manifest: Optional[dict] = None

    @property
    def count(self) -> int:
        return len(self.items)

    def digest(self) -> str:
        """sha256 over every image file's relative name and sha256 (labels are in the names):
        any changed, added, removed or renamed image changes it; other files do not."""
        listed = [[rel, file_sha256(self.folder / rel)] for rel, _ in self.items]
        return hashlib.sha256(json.dumps(listed).encode()).hexdigest()

    def provenance(self) -> dict:
        """What the JSON lines of `alae metrics` record of the data, once written: its `digest`
        (as `dataset`, where shards give `dataset_digest`'s), the images read, the files
        skipped."""
        assert self.manifest is not None, "as_shards() first"
        return {"dataset": self.digest(), "data_images": self.manifest["counts"]["test"],
                "data_skipped": len(self.manifest["skipped"])}

    def size_warning(self, official_config: Optional[str] = None) -> Optional[str]:
        """One line when images are far from square or much smaller than the model's resolution
        (read from the headers only), saying what the model expects; None when none is."""
        res = self.cfg.resolution
        odd, small = [], []
        for rel, _ in self.items:
            try:
                with Image.open(self.folder / rel) as img:
                    w, h = img.size
            except Exception:  # noqa: BLE001 - the source refuses it, with its reason, when read
                continue
            example = f"{printable(rel)} {w}x{h}"
            if max(w, h) > ASPECT_LIMIT * min(w, h):
                odd.append(example)
            if min(w, h) < SMALL_SHARE * res:
                small.append(example)
        if not odd and not small:
            return None
        found = [f"{len(images)} {what} (e.g. {images[0]})" for images, what in
                 ((odd, "not square"), (small, f"smaller than {int(SMALL_SHARE * res)} px"))
                 if images]
        expects = f"square {res}x{res} {'RGB' if self.cfg.channels == 3 else 'grayscale'} images"
        if official_config in FACE_CONFIGS:
            expects += (f" (the authors' {official_config} model: FFHQ-aligned face crops, as "
                        "their align_faces.py makes)")
        return (f"warning: {self.folder}: of {self.count} images, {' and '.join(found)}; the "
                f"model expects {expects}: others are centre-cropped and resized, which moves "
                "every metric")

    @contextlib.contextmanager
    def as_shards(self) -> Iterator[Path]:
        """A temporary shard folder (removed after the block) holding every image in the test
        split and none in train; `self.manifest` is its manifest, with what was skipped."""
        source, cfg = self.source, self.cfg
        source.items = {"train": [], "test": self.items}
        scanned = len(source.skipped)
        with tempfile.TemporaryDirectory(prefix="alae-image-folder-") as tmp:
            out = Path(tmp)
            try:
                shards = write_split(source, "test", out, cfg)
            except DataError:
                failed = source.skipped[scanned:]
                if len(failed) < len(self.items):
                    raise
                # Every image passed the header check and none decoded: say so, not the shard
                # stage's advice about its train/test split.
                raise DataError(f"{self.folder}: none of its {len(self.items)} image files "
                                f"decodes (e.g. {failed[0]['path']}: {failed[0]['reason']})"
                                ) from None
            self.manifest = manifest_for(cfg, source, {"train": [], "test": shards},
                                         test_fraction=1.0)
            write_json(out / MANIFEST, self.manifest)
            yield out

    def skipped_lines(self, prefix: str) -> list[str]:
        """The files the folder source refused, each with its reason, as the shard stage reports
        them: the first few, then how many more."""
        return skipped_lines(self.source.skipped, self.folder, prefix)
