"""The whole pipeline on large colour images without labels, as FFHQ or CelebA-HQ would go through
it: ~300 synthetic scenes at 256 px (scripts/synth_images.py: JPEG and PNG, odd sizes and modes,
no sub-folders), sharded from a folder, a self-supervised featurenet, the celeba-hq256 preset's
architecture (every level: 4 -> 128 px in 6, 4 -> 256 px in 7) shrunk in width and length to seconds of CPU, then
evaluate and figures, by a real `dvc repro` in a temporary repository."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from PIL import Image

from alae.config import merge_params
from alae.presets import preset_path
from pipeline_helpers import ROOT, init_pipeline_repo, run

pytestmark = pytest.mark.slow

IMAGES = 300


def shrunk(resolution: int, folder) -> dict:
    """The celeba-hq256 preset's configuration (levels, mapping, mixing) at a few kimg and
    narrow widths; every level gets 16 images (two batches) of transition and 16 of stable
    training, so the top level is fully blended in at 208 of the 256 images."""
    preset = yaml.safe_load(preset_path("celeba-hq256").read_text())
    return merge_params(preset, {
        "data": {"source": "folder", "path": str(folder), "resolution": resolution,
                 "channels": 3, "test_fraction": 0.1, "limit": None, "shard_size": 100},
        "featurenet": {"kind": "selfsup", "epochs": 1, "batch_size": 32, "features": 16},
        "model": {"latent": 16, "mapping_layers": 2, "start_channels": 2, "max_channels": 16},
        "train": {"kimg": 0.256, "batch_size": 8, "lr_multiplier": 1.0, "transition_kimg": 0.016,
                  "stabilize_kimg": 0.016, "tick_kimg": 0.064, "checkpoint_kimg": 0.128,
                  "fid_every_kimg": 0.128, "fid_images": 16, "threads": 1, "device": "cpu"},
        "evaluate": {"features": "selfsup", "num_images": 32, "batch_size": 16,
                     "ppl_samples": 8, "probe_train": 8, "device": "cpu"},
        "figures": {"samples": 4, "pairs": 2, "columns": 4},
    })


@pytest.mark.parametrize("resolution", [128, 256])  # the celeba and celeba-hq256 sizes
def test_an_unlabelled_colour_folder_runs_every_stage(resolution, tmp_path):
    folder = tmp_path / "scenes"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "synth_images.py"), "--out",
                    str(folder), "--count", str(IMAGES), "--size", "256", "--workers", "1"],
                   check=True, capture_output=True)
    repo = init_pipeline_repo(tmp_path / "repo")
    params = merge_params(yaml.safe_load((repo / "params.yaml").read_text()),
                          shrunk(resolution, folder))
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro"], repo, timeout=900)

    manifest = json.loads((repo / "data" / "shards" / "manifest.json").read_text())
    assert manifest["label_names"] is None and manifest["resolution"] == resolution
    assert sum(manifest["counts"].values()) == IMAGES
    assert json.loads((repo / "metrics" / "featurenet.json").read_text())["kind"] == "selfsup"
    metrics = json.loads((repo / "metrics" / "eval.json").read_text())
    for key in ("fid_selfsup", "rec_fid_selfsup", "kid_selfsup", "mse"):
        assert key in metrics and metrics[key] == metrics[key], (key, metrics)
    assert not any(k.endswith("_classifier") or k.startswith("probe") for k in metrics)
    assert "probe_acc skipped" in out.stderr
    # every level was trained, up to the full resolution
    from alae.checkpoint import load_model
    model, _, meta = load_model(repo / "models" / "alae.pt")
    level = model.recorded_level()
    assert model.resolution == resolution and level.lod == model.num_levels - 1 and level.alpha == 1
    for name in ("samples.png", "reconstructions.png", "style_mixing.png", "interpolation.png"):
        with Image.open(repo / "figures" / name) as img:
            assert img.mode == "RGB" and img.width >= 4 * resolution // 2, name
