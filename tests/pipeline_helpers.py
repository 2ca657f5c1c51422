"""Helpers for the end-to-end tests: a temporary git + DVC repository holding this project with tiny
params, and a runner for the real `git`/`dvc` commands in it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import yaml

from alae.config import merge_params

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = {
    "data": {"limit": 400, "shard_size": 200},
    "featurenet": {"epochs": 4, "batch_size": 32, "features": 32},
    # the StyleALAE whatever the shipped default: it exercises growing, mixing and snapshots
    "model": {"kind": "style", "latent": 16, "mapping_layers": 2, "hidden": 64, "start_channels": 4,
              "max_channels": 16},
    # grows 4 -> 32 in 0.75 kimg (levels of 0.25 kimg), then 0.25 kimg at 32x32
    "train": {"kimg": 1.0, "batch_size": 32, "tick_kimg": 0.25, "ema_kimg": 0.5,
              "transition_kimg": 0.125, "stabilize_kimg": 0.125, "checkpoint_kimg": 0.5,
              "fid_every_kimg": 0.5, "fid_images": 100, "style_mixing": 0.9,
              "threads": 1},  # two queue workers at once must not share two cores 4 ways
    "evaluate": {"num_images": 200, "batch_size": 100, "ppl_samples": 100, "probe_train": 200},
    "figures": {"samples": 16, "pairs": 2},
}


def clean_env(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    """This environment without MLflow/DVC settings (nor PYTHONDONTWRITEBYTECODE), with the venv's `bin` first on PATH (DVC's
    queue workers and stages start `dvc` and `python` from PATH)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    # Stages write __pycache__/ into the code folders DVC hashes, as on a user's machine.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env.update(extra or {})
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 600,
        env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=env or clean_env(), capture_output=True, text=True,
                         timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def init_pipeline_repo(repo: Path) -> Path:
    """A git repository with one commit holding the project's code, `dvc.yaml` and tiny params;
    `dvc init`ed, nothing reproduced yet."""
    repo.mkdir(parents=True, exist_ok=True)
    for name in ("alae", "stages", "vendor"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    params = merge_params(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q", "-b", "main"], repo)
    run(["git", "config", "user.email", "test@example.com"], repo)
    run(["git", "config", "user.name", "test"], repo)
    run(["dvc", "init", "-q"], repo)
    # the project's DVC config (no analytics, the offline plots page) and its plot templates
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "pipeline"], repo)
    return repo


def copy_repo(src: Path, dst: Path) -> Path:
    """A copy of a pipeline repository (git history, DVC cache and outputs) without its MLflow
    store, whose experiment points at the original's artifact folder."""
    shutil.copytree(src, dst, symlinks=True)
    for name in ("mlflow.db", "mlflow.db.lock", "mlartifacts"):
        path = dst / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    return dst
