"""`make clean-runs` removes old run folders and nothing that is still needed."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from alae.checkpoint import RunCheckpoints

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("clean_runs", ROOT / "scripts" / "clean_runs.py")
clean_runs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(clean_runs)


def test_old_runs_go_the_current_a_training_and_an_unsent_one_stay(tmp_path):
    runs = tmp_path / ".alae" / "runs"
    for key in ("current", "old", "training", "unsent"):
        (runs / key).mkdir(parents=True)
        (runs / key / "ckpt-000000001000.pt").write_bytes(b"x")
    (runs / "unsent" / "pending_metrics.jsonl").write_text('{"loss_d": 1.0}\n')

    assert [(p.name, what) for p, what in clean_runs.clean_runs(runs, "current", dry_run=True)] \
        == [("old", "would remove"), ("training", "would remove"),
            ("unsent", "kept: metrics waiting to be sent (pending_metrics.jsonl)")]
    assert sorted(p.name for p in runs.iterdir()) == ["current", "old", "training", "unsent"]

    with RunCheckpoints(runs / "training").exclusive():
        done = clean_runs.clean_runs(runs, "current")
    assert [(p.name, what) for p, what in done] == [
        ("old", "removed"), ("training", "kept: a process is training this run"),
        ("unsent", "kept: metrics waiting to be sent (pending_metrics.jsonl)")]
    assert sorted(p.name for p in runs.iterdir()) == ["current", "training", "unsent"]


def test_no_runs_folder_is_nothing_to_do(tmp_path):
    assert clean_runs.clean_runs(tmp_path / "missing", "current") == []
