"""What "the code changed" means, said once for DVC and for MLflow's run key.

DVC reruns a stage when a file among its `deps` in `dvc.yaml` changes; the run key
(`alae.tracking.run_key`) hashes exactly the union of those code deps (the ones under `alae/` and
`stages/`) plus `dvc.yaml` itself. So an edit that reruns some stage starts a new MLflow run, and
an edit no stage depends on (the `alae` command, the sweep) changes neither. Folder deps count
every file in the folder except Python bytecode, as `.dvcignore` tells DVC.
`tests/test_codedeps.py` checks that each stage's deps cover what the stage imports.
"""
from __future__ import annotations

from pathlib import Path

import yaml

PROJECT_DIR = Path(__file__).resolve().parents[1]
CODE_ROOTS = ("alae/", "stages/")
BYTECODE = ("__pycache__", ".pyc", ".pyo")  # .dvcignore's patterns


def stage_code_deps(project_dir: Path = PROJECT_DIR) -> dict[str, list[str]]:
    """Each stage's deps in `dvc.yaml` that are code (under alae/ or stages/), as written."""
    stages = yaml.safe_load((project_dir / "dvc.yaml").read_text())["stages"]
    return {name: [d for d in stage.get("deps", []) if d.startswith(CODE_ROOTS)]
            for name, stage in stages.items()}


def files_of(dep: Path) -> list[Path]:
    """A file dep, or every file of a folder dep that DVC hashes."""
    if dep.is_file():
        return [dep]
    return [p for p in dep.rglob("*") if p.is_file()
            and not any(part == BYTECODE[0] for part in p.parts) and p.suffix not in BYTECODE[1:]]


def code_files(project_dir: Path = PROJECT_DIR) -> list[Path]:
    """The files the run key hashes: every stage's code deps, and dvc.yaml."""
    files = {project_dir / "dvc.yaml"}
    for deps in stage_code_deps(project_dir).values():
        for dep in deps:
            files.update(files_of(project_dir / dep))
    return sorted(files)
