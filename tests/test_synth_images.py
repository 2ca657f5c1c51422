"""scripts/synth_images.py, the offline colour image folder for large-data tests and benchmarks:
the same bytes for the same arguments whatever the number of workers, the mix of formats, sizes
and modes a real folder holds, and every file usable by the shard stage's folder source."""
import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alae.config import DataConfig
from alae.data import write_shards

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import synth_images  # noqa: E402

COUNT = synth_images.ODD_EVERY * 6   # six odd images among them


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def folder(tmp_path_factory, fashion_mnist):
    out = tmp_path_factory.mktemp("synth") / "one"
    synth_images.make_folder(out, COUNT, size=64, seed=3, workers=1)
    return out


def test_the_same_bytes_with_one_or_two_workers(folder, tmp_path):
    two = synth_images.make_folder(tmp_path / "two", COUNT, size=64, seed=3, workers=2)
    assert len(two) == COUNT and digests(tmp_path / "two") == digests(folder)
    other = synth_images.make_folder(tmp_path / "seed4", 5, size=64, seed=4, workers=1)
    assert [d for d in digests(tmp_path / "seed4").values()] != list(digests(folder).values())[:5]
    assert len(other) == 5


def test_a_realistic_mix_of_formats_sizes_and_modes(folder):
    files = sorted(folder.iterdir())
    assert not [p for p in files if not p.is_file()]          # no sub-folders: no labels
    suffixes = {p.suffix for p in files}
    assert suffixes == {".jpg", ".png"}
    opened = [Image.open(p) for p in files]
    modes = {im.mode for im in opened}
    sizes = {im.size for im in opened}
    assert "RGB" in modes and len(modes) >= 3, modes          # odd modes besides RGB
    assert (64, 64) in sizes and len(sizes) >= 2, sizes       # and odd sizes
    assert sum(p.suffix == ".jpg" for p in files) > COUNT / 2  # mostly JPEG
    # scenes, not noise: neighbouring pixels agree far more than random ones
    x = np.asarray(opened[0].convert("L"), np.float32)
    assert np.abs(np.diff(x, axis=1)).mean() < 0.3 * np.abs(x - x.mean()).mean() + 1


def test_the_folder_source_takes_every_file(folder, tmp_path):
    manifest = write_shards(DataConfig(source="folder", path=str(folder), resolution=32,
                                       channels=3, test_fraction=0.1), tmp_path / "shards")
    assert manifest["skipped"] == []
    assert sum(manifest["counts"].values()) == COUNT
    assert manifest["label_names"] is None   # no sub-folders: an unlabelled data set


def test_a_non_empty_folder_is_refused_in_one_line(folder):
    from click.testing import CliRunner

    result = CliRunner().invoke(synth_images.main, ["--out", str(folder), "--count", "1"])
    assert result.exit_code == 1 and "not empty" in result.output
