"""Data remotes: push the pipeline's cached outputs (shards, models) to a DVC remote, clone on
"another machine", `dvc pull`, and nothing is left to reproduce.

The `cache: false` outputs (metrics/, plots/train.csv, figures/) are never pushed: git carries them.
A clone of a commit without them reports their stages changed and `dvc repro` would retrain."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline_helpers import copy_repo, run

pytestmark = pytest.mark.slow

UNCACHED = ("metrics", "plots", "figures")  # `cache: false` in dvc.yaml


def clone_and_pull(repo: Path, dst: Path) -> Path:
    run(["git", "clone", "-q", str(repo), str(dst)], dst.parent)
    run(["dvc", "pull"], dst)
    return dst


@pytest.fixture(scope="module")
def pushed(reproduced_repo, tmp_path_factory) -> tuple[Path, Path]:
    """The reproduced repository with a local-folder remote as default, everything pushed."""
    base = tmp_path_factory.mktemp("remote")
    repo = copy_repo(reproduced_repo, base / "repo")
    run(["dvc", "remote", "add", "-d", "local", str(base / "storage")], repo)
    run(["git", "commit", "-q", "-m", "DVC remote", ".dvc/config"], repo)
    run(["dvc", "push"], repo)
    return repo, base


def test_a_clone_without_the_uncached_outputs_would_rerun_their_stages(pushed):
    repo, base = pushed
    clone = clone_and_pull(repo, base / "clone-lock-only")
    assert (clone / "models/alae.pt").is_file() and (clone / "data/shards").is_dir()
    status = run(["dvc", "status"], clone).stdout
    for stage, out in (("featurenet", "metrics/featurenet.json"), ("train", "plots/train.csv"),
                       ("evaluate", "metrics/eval.json"), ("figures", "figures")):
        assert f"{stage}:" in status and f"deleted:            {out}" in status, status
    for stage in ("shard", "refstats"):
        assert f"{stage}:" not in status, status


def test_clone_pull_and_nothing_to_reproduce(pushed):
    repo, base = pushed
    run(["git", "add", *UNCACHED], repo)
    run(["git", "commit", "-q", "-m", "metrics, plots and figures"], repo)
    assert run(["git", "status", "--porcelain"], repo).stdout == ""  # nothing else to commit
    clone = clone_and_pull(repo, base / "clone")
    assert run(["dvc", "status"], clone).stdout.strip() == "Data and pipelines are up to date."
    out = run(["dvc", "repro"], clone).stdout
    assert "Running stage" not in out, out
    # the pulled model is byte for byte the pushed one
    assert (clone / "models/alae.pt").read_bytes() == (repo / "models/alae.pt").read_bytes()


def test_a_fresh_clone_sees_only_missing_outputs(reproduced_repo, tmp_path):
    """The stages write `__pycache__/` into the code folders they depend on; `.dvcignore` must
    keep those files out of the recorded hashes, or a clone (which has none) calls every code
    dependency modified and `dvc pull` can never give "nothing to reproduce"."""
    assert list((reproduced_repo / "alae").rglob("*.pyc")), "the stages wrote no bytecode"
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(reproduced_repo), str(clone)], tmp_path)
    status = json.loads(run(["dvc", "status", "--json"], clone).stdout)
    outputs = {out for stage in yaml.safe_load((clone / "dvc.yaml").read_text())["stages"].values()
               for entry in stage.get("outs", []) + stage.get("metrics", [])
               for out in ([entry] if isinstance(entry, str) else entry)}
    assert status, "a clone without outputs cannot be up to date"
    for stage, changes in status.items():
        for change in changes:
            for path, state in change.get("changed deps", {}).items():
                assert state == "deleted" and any(path.startswith(o.split("${")[0]) for o in outputs), \
                    f"{stage}: dependency {path} {state} in a fresh clone"
            for path, state in change.get("changed outs", {}).items():
                assert state in ("deleted", "not in cache"), f"{stage}: output {path} {state}"
