"""`alae preset NAME` says what it changed and what it cannot set itself."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = """\
lr: 0.002               # base learning rate
data:
  path: null            # where the images are
  limit: null
model:
  kind: style
  latent: 64
train:
  batch_size: [32, 16]
"""


def _preset(name: str, target: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alae.cli", "preset", name, "--params",
                           str(target)], capture_output=True, text=True, cwd=ROOT)


def test_preset_prints_each_changed_value_and_keeps_null_as_null(tmp_path):
    target = tmp_path / "params.yaml"
    target.write_text(BASE)
    out = _preset("mlp", target)
    assert out.returncode == 0, out.stderr
    lines = [line.strip() for line in out.stdout.splitlines()]
    for change in ("model.kind: style -> mlp", "model.latent: 64 -> 50",
                   "train.batch_size: [32, 16] -> 128", "model.hidden: (not set) -> 1024",
                   "data.resolution: (not set) -> 32"):
        assert change in lines, out.stdout
    assert not any(line.startswith("lr:") for line in lines)  # 0.002 already: not a change
    assert lines[-1] == f"wrote preset mlp into {target} (12 values changed)"
    text = target.read_text()
    assert "  path: null            # where the images are" in text and "  limit: null" in text
    # MNIST presets name what they need and cannot write: the source and the files
    assert "data.source: mnist-idx" in out.stderr and "MNIST IDX files" in out.stderr


def test_preset_on_mnist_data_changes_nothing_twice_and_needs_no_note(tmp_path):
    target = tmp_path / "params.yaml"
    mnist = tmp_path / "mnist"  # parse_params checks only that a path is given
    target.write_text(BASE.replace("  path: null ", f"  source: mnist-idx\n  path: {mnist}"))
    assert _preset("mnist", target).returncode == 0
    again = _preset("mnist", target)
    assert again.stdout.strip() == f"wrote preset mnist into {target} (0 values changed)"
    assert "note:" not in again.stderr
    # 3600 kimg at widths 64-256 on a CPU: hours, said in one line with the measured rate
    warning, = again.stderr.strip().splitlines()
    assert warning.startswith("warning: training 3600 kimg of this configuration takes at least")
    assert "GFLOP/s" in warning


def test_non_mnist_presets_carry_no_note(tmp_path):
    target = tmp_path / "params.yaml"
    target.write_text(BASE)
    out = _preset("celeba", target)
    assert out.returncode == 0 and "note:" not in out.stderr, out.stderr
    assert "warning: training" in out.stderr   # CelebA at 128 px on this machine


def test_a_short_configuration_gets_no_warning(tmp_path):
    target = tmp_path / "params.yaml"
    target.write_text(BASE)
    short = tmp_path / "short.yaml"
    short.write_text("train:\n  kimg: 10\n")
    out = _preset(str(short), target)
    assert out.returncode == 0 and out.stderr == "", out.stderr
