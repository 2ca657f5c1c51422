"""The `check` stage validates params.yaml before DVC deletes any output: a bad `-S` value fails
in one line and leaves the workspace's model and metrics in place; a good one reruns only the
stages that read the changed section (the check's output is the same bytes)."""
from __future__ import annotations

import re

import pytest

from pipeline_helpers import copy_repo, run

pytestmark = pytest.mark.slow

KEPT = ("models/alae.pt", "metrics/eval.json", "figures/samples.png")


def test_a_refused_value_fails_before_any_output_is_deleted(reproduced_repo, tmp_path):
    repo = copy_repo(reproduced_repo, tmp_path / "repo")
    before = {name: (repo / name).read_bytes() for name in KEPT}
    out = run(["dvc", "exp", "run", "-S", "lr=-1"], repo, check=False)
    assert out.returncode != 0
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert errors and "lr" in errors[0], out.stderr
    assert re.findall(r"Running stage '(\w+)'", out.stdout + out.stderr) == ["check"]
    for name, data in before.items():
        assert (repo / name).read_bytes() == data, f"{name} changed or deleted"
    # DVC deleted the check's own (cached, constant) output before running it: the README's way
    # back restores it, and then nothing is out of date
    run(["git", "checkout", "params.yaml"], repo)
    run(["dvc", "checkout"], repo)
    assert run(["dvc", "status"], repo).stdout.strip().endswith("up to date.")


def test_a_valid_change_reruns_only_the_stages_that_read_it(reproduced_repo, tmp_path):
    repo = copy_repo(reproduced_repo, tmp_path / "repo")
    out = run(["dvc", "exp", "run", "-S", "figures.seed=1"], repo)
    ran = re.findall(r"Running stage '(\w+)'", out.stdout + out.stderr)
    assert ran == ["check", "figures"], out.stdout
