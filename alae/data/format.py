"""The shard format, read side: a shard folder's manifest and its samples, checked, with errors
that name the shard and the sample key. `shards.py` writes this format, `sources.py` re-reads it
as an image source and `loader.py` batches it for training.

Layout of a shard folder:
    train-000000.tar, train-000001.tar, ...   samples `<key>.png` (+ `<key>.cls` when labelled)
    test-000000.tar, ...
    manifest.json                             what was written, from what, with sha256 per shard

The image member is `.png` unless the manifest's `encoding` says otherwise (`jpeg`: `.jpg`,
`npy`: `.npy`, alae/data/encoding.py). PNG manifests have no `encoding` key, as before there was a
choice, so those written earlier read the same and the default ones stay byte-identical.
"""
from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Optional

from PIL import Image
from webdataset.tariterators import group_by_keys, tar_file_expander

from alae.data.encoding import ENCODINGS, EXTENSION, decode
from alae.errors import DataError
from alae.io import file_sha256

SPLITS = ("train", "test")
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_REQUIRED = ("format_version", "resolution", "channels", "label_names", "counts", "shards")
# A shard is a plain file beside the manifest: no folder part, no URL scheme (`pipe:...` would be
# a shell command to webdataset), no leading dot or dash.
_SHARD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")


def read_manifest(shards_dir: str | Path) -> dict:
    """The manifest of a shard folder written by `write_shards`; DataError when missing/invalid."""
    path = Path(shards_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: shard manifest not found (run the shard stage first)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable shard manifest ({e})") from None
    if not isinstance(manifest, dict) or any(k not in manifest for k in _REQUIRED):
        raise DataError(f"{path}: not a shard manifest written by this project "
                        f"(needs keys {', '.join(_REQUIRED)})")
    if manifest["format_version"] != FORMAT_VERSION:
        raise DataError(f"{path}: manifest format {manifest['format_version']!r}, "
                        f"this code reads {FORMAT_VERSION}: re-run the shard stage")
    for split in SPLITS:
        if split not in manifest["shards"] or split not in manifest["counts"]:
            raise DataError(f"{path}: no {split!r} split listed")
        _check_entries(path, split, manifest["shards"][split])
    if manifest_encoding(manifest) not in ENCODINGS:
        raise DataError(f"{path}: encoding {manifest['encoding']!r} is not one this code reads "
                        f"({', '.join(ENCODINGS)})")
    return manifest


def manifest_encoding(manifest: Optional[dict]) -> str:
    """How a shard set stores each image: `png` where the manifest names none (or is None: a
    `pipe:` source's tars, which hold `.png` samples)."""
    return (manifest or {}).get("encoding", "png")


def _check_entries(path: Path, split: str, entries: Any) -> None:
    """Each listed shard is {name, count, sha256} with a plain file name: the loader joins the
    name to the shard folder, so a name must never reach outside it or read as a URL."""
    if not isinstance(entries, list):
        raise DataError(f"{path}: shards.{split} is not a list")
    for entry in entries:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not _SHARD_NAME.match(name):
            raise DataError(f"{path}: shard name {name!r} in the {split} split is not a plain file "
                            "name (letters, digits, _ . -; no folder, no URL scheme)")
        if not isinstance(entry.get("count"), int) or not isinstance(entry.get("sha256"), str):
            raise DataError(f"{path}: shard {name} needs an integer count and a sha256")


def shard_paths(shards_dir: str | Path, manifest: dict, split: str) -> list[Path]:
    """The split's shard files in stored order, as absolute paths; DataError naming the first
    one missing."""
    if split not in SPLITS:
        raise DataError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    root = Path(shards_dir).resolve()
    paths = [root / entry["name"] for entry in manifest["shards"][split]]
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: shard listed in manifest.json is missing")
    return paths


def tar_samples(stream: BinaryIO, url: str) -> Iterator[dict]:
    """Samples grouped by key from an open tar stream; `url` only labels them (`__url__`)."""
    return group_by_keys(tar_file_expander(iter([{"url": url, "stream": stream}])))


def raw_samples(paths: Iterable[Path], manifest: Optional[dict] = None) -> Iterator[dict]:
    """Undecoded samples ({"__key__", "png" (or "jpg", "npy"), "cls"?}) from tar shards, in
    file order.

    The files are opened here and webdataset only gets the open stream: it never sees a name it
    could take for a URL (a `pipe:` one runs a shell command). With the manifest, a shard that
    ends before its listed count fails: tar in stream mode takes a damaged header for the end
    of the archive, which would otherwise silently drop the rest of the shard.
    """
    listed = {e["name"]: int(e["count"]) for split in (manifest or {}).get("shards", {}).values()
              for e in split}
    for path in paths:
        path = Path(path).resolve()
        n, key = 0, None
        try:
            with open(path, "rb") as stream:
                for sample in tar_samples(stream, str(path)):
                    n, key = n + 1, sample["__key__"]
                    yield sample
        except (tarfile.TarError, OSError, ValueError) as e:
            after = f" after sample {key}" if key else ""
            raise DataError(f"{path}: unreadable shard{after} ({short_reason(e)})"
                            f"{_changed(path, manifest)}") from None
        expected = listed.get(path.name)
        if expected is not None and n != expected:
            where = f"after sample {key}" if key else "before its first sample"
            count = (f"ends {where} ({n} of the {expected} samples manifest.json lists)"
                     if n < expected else f"holds {n} samples, manifest.json lists {expected}")
            raise DataError(f"{path}: shard {count}{_changed(path, manifest)}")


def short_reason(e: BaseException) -> str:
    """An exception's message as one short line: webdataset appends the stream's repr to the
    message (`... @ <_io.BufferedReader ...>`) and streams and URLs to args, all dropped here."""
    text = " ".join(str(e.args[0] if e.args else e).split(" @ <", 1)[0].split())
    return text if len(text) <= 120 else text[:117] + "..."


def _changed(path: Path, manifest: Optional[dict]) -> str:
    """Whether a faulty shard still has the sha256 the manifest recorded when it was written."""
    expected = {e["name"]: e["sha256"] for split in (manifest or {}).get("shards", {}).values()
                for e in split}.get(Path(path).name)
    if expected is None:
        return ""
    if file_sha256(path) == expected:
        return "; the file is unchanged since it was written: re-run the shard stage"
    return "; the file changed since it was written (sha256 differs from manifest.json)"


def bad_sample(sample: dict, problem: str, manifest: Optional[dict] = None) -> DataError:
    """`<shard>: sample <key> <problem>`, plus whether the shard changed since it was written."""
    url = sample.get("__url__", "?")
    changed = _changed(Path(url), manifest) if manifest else ""
    return DataError(f"{url}: sample {sample.get('__key__')} {problem}{changed}")


def sample_image(sample: dict, manifest: Optional[dict] = None) -> Image.Image:
    """A raw sample's decoded image, by the manifest's encoding; DataError naming the shard and
    the key when it is damaged."""
    encoding = manifest_encoding(manifest)
    member = EXTENSION[encoding]
    if member not in sample:
        raise bad_sample(sample, f"has no .{member} file (manifest.json: {encoding} encoding)",
                         manifest)
    try:
        return decode(sample[member], encoding)
    except Exception as e:  # noqa: BLE001 - Pillow and numpy raise many types for damaged data
        problem = (f"does not decode as {encoding.upper()} "
                   f"({type(e).__name__}: {short_reason(e)})")
        raise bad_sample(sample, problem, manifest) from None


def sample_label(sample: dict, num_labels: Optional[int] = None, manifest: Optional[dict] = None,
                 required: bool = False) -> Optional[int]:
    """A raw sample's class (its `.cls`, an integer below `num_labels` when given), or None when
    it has none and none is `required` (a labelled dataset needs one on every sample)."""
    if "cls" not in sample:
        if required:
            raise bad_sample(sample, "has no .cls label in a labelled dataset", manifest)
        return None
    raw = sample["cls"]
    try:
        label = int(raw)
    except (TypeError, ValueError):
        label = -1
    if label < 0 or (num_labels is not None and label >= num_labels):
        top = f"0..{num_labels - 1}" if num_labels is not None else ">= 0"
        raise bad_sample(sample, f"has label {bytes(raw)[:20]!r}, not an integer in {top}",
                         manifest)
    return label
