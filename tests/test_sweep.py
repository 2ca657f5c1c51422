"""`make sweep`: grids checked before anything queues, overrides in DVC's `-S` grammar that a
real `dvc exp run --queue` accepts, runs exported to CSV and summarised from it."""
from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

import pytest
import yaml

from alae import sweep as sw
from alae.config import ConfigError
from pipeline_helpers import copy_repo, run

ROOT = Path(__file__).resolve().parents[1]
GRID = {"name": "t", "seeds": [0, 1], "common": {"train.kimg": 0.5},
        "candidates": {"a": {}, "b": {"lr": 0.003, "train.batch_size": [32, 32, 16],
                                      "data.limit": None, "train.channels_last": True}}}


def write_grid(tmp_path: Path, grid: dict) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def test_experiments_are_candidates_times_seeds(tmp_path):
    grid = sw.load_grid(write_grid(tmp_path, GRID), ROOT / "params.yaml")
    exps = dict(grid.experiments())
    assert list(exps) == ["t-a-s0", "t-a-s1", "t-b-s0", "t-b-s1"]
    assert exps["t-b-s1"] == {"train.kimg": 0.5, "lr": 0.003, "train.batch_size": [32, 32, 16],
                              "data.limit": None, "train.channels_last": True, "seed": 1}
    assert sw.queue_command("t-b-s1", exps["t-b-s1"])[6:] == [
        "-S", "train.kimg=0.5", "-S", "lr=0.003", "-S", "train.batch_size=[32,32,16]",
        "-S", "data.limit=null", "-S", "train.channels_last=true", "-S", "seed=1"]


def test_a_candidate_may_name_its_own_seeds(tmp_path):
    grid = {**GRID, "candidates": {"a": {}, "final": {"seeds": [0, 1, 2], "lr": 0.003}}}
    exps = dict(sw.load_grid(write_grid(tmp_path, grid), ROOT / "params.yaml").experiments())
    assert list(exps) == ["t-a-s0", "t-a-s1", "t-final-s0", "t-final-s1", "t-final-s2"]
    assert exps["t-final-s2"] == {"train.kimg": 0.5, "lr": 0.003, "seed": 2}


@pytest.mark.parametrize("bad, message", [
    ({"lr": -1}, r"experiment t-x-s0: lr"),
    ({"train.kimgg": 5}, r"train\.kimgg"),
])
def test_a_bad_candidate_is_refused_before_anything_queues(tmp_path, bad, message):
    with pytest.raises(ConfigError, match=message):
        sw.load_grid(write_grid(tmp_path, {**GRID, "candidates": {"x": bad}}), ROOT / "params.yaml")


def test_an_unusable_name_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not a usable experiment name"):
        sw.load_grid(write_grid(tmp_path, {**GRID, "candidates": {"a b": {}}}), ROOT / "params.yaml")


def fake_run(name: str, fid: float, start: int, status: str = "FINISHED") -> dict:
    metrics = {"fid_classifier": fid, "rec_fid_classifier": fid + 10, "mse": 0.1,
               "probe_acc": 0.85, "probe_acc_pixels": 0.8, "train_seconds": 600.0,
               "stage_seconds_train": 610.0, "stage_seconds_evaluate": 50.0}
    return {"exp_name": name, "run_key": "k" + name, "commit": "c" * 40, "status": status,
            "start_time": start, "params": {"lr": "0.003", "train.kimg": "0.5"}, "metrics": metrics}


def test_export_keeps_the_latest_finished_run_per_experiment_and_reports_mean_and_sd(tmp_path):
    grid = sw.load_grid(write_grid(tmp_path, GRID), ROOT / "params.yaml")
    runs = [fake_run("t-b-s0", 50.0, 1), fake_run("t-b-s0", 40.0, 2), fake_run("t-b-s1", 60.0, 3),
            fake_run("t-a-s0", 90.0, 4, status="FAILED"), fake_run("other-a-s0", 1.0, 5)]
    rows = sw.rows_of_runs(grid, runs)
    assert [(r["experiment"], r["fid_classifier"]) for r in rows] == [("t-b-s0", 40.0), ("t-b-s1", 60.0)]
    assert rows[0]["seconds_pipeline"] == 660.0 and rows[0]["param:lr"] == "0.003"
    out = tmp_path / "t.csv"
    sw.write_csv(rows, out)
    assert list(csv.DictReader(out.open()))[1]["seed"] == "1"
    table = sw.summary_table(sw.read_csvs([out]))
    assert "| t | b | 0, 1 | unrecorded | 50.0 ± 14.1 | 60.0 ± 14.1 | 0.1000 ± 0.0000 | 0.050 ± 0.000 | 10.0 ± 0.0 | 11.0 ± 0.0 |" in table
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{sw.TABLE_START}\nold\n{sw.TABLE_END}\nafter\n")
    sw.write_readme_table(readme, table, ["sweeps/t.csv"])
    text = readme.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    assert "50.0 ± 14.1" in text and "sweeps/t.csv" in text
    sw.plot_fid_vs_time(sw.read_csvs([out]), tmp_path / "fig.png")
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_exports_merge_and_two_feature_spaces_are_never_averaged(tmp_path):
    grid = sw.load_grid(write_grid(tmp_path, GRID), ROOT / "params.yaml")
    out = tmp_path / "t.csv"
    # an earlier export, from before the featurenet and machine columns, of another machine
    old = sw.rows_of_runs(grid, [fake_run("t-b-s0", 50.0, 1), fake_run("t-b-s1", 60.0, 2)])
    for r in old:
        del r["featurenet"], r["machine"], r["timed"]
    sw.write_csv(old, out)
    # this machine's store holds seed 0 only, measured with another featurenet; then seed 0 again
    here = [{**fake_run("t-b-s0", 30.0, 3), "featurenet": "ab" * 32}]
    sw.merge_sweep_csv(out, sw.rows_of_runs(grid, here, "CPU X (2 CPUs)"))
    again = [{**fake_run("t-b-s0", 20.0, 4), "featurenet": "ab" * 32}]
    merged = sw.merge_sweep_csv(out, sw.rows_of_runs(grid, again, "CPU X (2 CPUs)"))
    rows = sw.read_csvs([out])
    assert len(rows) == len(merged) == 3
    assert [(r["seed"], r["featurenet"], r["machine"], r["fid_classifier"]) for r in rows] == [
        ("0", "unrecorded", "unrecorded", "50.0"), ("1", "unrecorded", "unrecorded", "60.0"),
        ("0", "abababababab", "CPU X (2 CPUs)", "20.0")]
    table = sw.summary_table(rows)
    assert "| t | b | 0 | abababab | 20.0 |" in table
    assert "| t | b | 0, 1 | unrecorded | 55.0 ± 7.1 |" in table
    assert sw.this_machine().endswith("CPUs)")


def test_export_follows_a_candidates_own_seeds(tmp_path):
    grid = {**GRID, "seeds": [0], "candidates": {"a": {}, "final": {"seeds": [0, 1, 2]}}}
    grid = sw.load_grid(write_grid(tmp_path, grid), ROOT / "params.yaml")
    runs = [fake_run("t-final-s2", 30.0, 1), fake_run("t-final-s1", 20.0, 2),
            fake_run("t-a-s1", 10.0, 3)]  # a's grid seeds are [0]: s1 is not one of its runs
    rows = sw.rows_of_runs(grid, runs)
    assert [(r["experiment"], r["seed"]) for r in rows] == [("t-final-s1", 1), ("t-final-s2", 2)]


def test_nothing_finished_is_an_error_not_an_empty_csv(tmp_path):
    with pytest.raises(ConfigError, match="no finished experiment"):
        sw.write_csv([], tmp_path / "t.csv")
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.slow
def test_real_dvc_queues_the_grid_with_its_overrides(reproduced_repo, tmp_path):
    repo = copy_repo(reproduced_repo, tmp_path / "repo")
    (repo / "scripts").mkdir()
    (repo / "scripts/sweep.py").write_bytes((ROOT / "scripts/sweep.py").read_bytes())
    grid = write_grid(tmp_path, {**GRID, "seeds": [0]})
    run([sys.executable, "scripts/sweep.py", "queue", str(grid)], repo)
    try:
        status = run(["dvc", "queue", "status"], repo).stdout
        assert re.search(r"\bt-a-s0\b.*\bQueued\b", status) and re.search(r"\bt-b-s0\b.*\bQueued\b", status)
    finally:
        run(["dvc", "queue", "remove", "--all"], repo, check=False)
    bad = write_grid(tmp_path, {**GRID, "candidates": {"x": {"lr": -1}}})
    out = run([sys.executable, "scripts/sweep.py", "queue", str(bad)], repo, check=False)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "lr" in out.stderr, out.stderr


@pytest.mark.slow
def test_an_experiment_equal_to_the_baseline_exports_under_its_name(reproduced_repo, tmp_path):
    """An experiment with the baseline's params and code continues the baseline's MLflow run
    (same run key). DVC cannot restore the train stage from its run cache (plots/train.csv is
    not cached), so the stage runs, resumes the finished training at once, and names the run:
    export finds it under the experiment's name."""
    import mlflow

    repo = copy_repo(reproduced_repo, tmp_path / "repo")
    (repo / "scripts").mkdir()
    (repo / "scripts/sweep.py").write_bytes((ROOT / "scripts/sweep.py").read_bytes())
    seed = yaml.safe_load((repo / "params.yaml").read_text())["seed"]
    grid = write_grid(tmp_path, {"name": "t", "seeds": [seed], "common": {},
                                 "candidates": {"base": {}}})
    run(["dvc", "exp", "run", "--temp", "--name", f"t-base-s{seed}"], repo)
    csv_path = tmp_path / "t.csv"
    run([sys.executable, "scripts/sweep.py", "export", str(grid), "--out", str(csv_path)], repo)
    client = mlflow.tracking.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("alae").experiment_id])
    assert len(runs) == 1  # the baseline's run, continued
    rows = list(csv.DictReader(csv_path.open()))
    assert [(r["experiment"], r["run_key"]) for r in rows] == [
        (f"t-base-s{seed}", runs[0].data.tags["alae.run_key"])]
    assert float(rows[0]["fid_classifier"]) == runs[0].data.metrics["fid_classifier"]


def test_seeds_pick_from_each_candidates_own_seeds(tmp_path):
    grid = {**GRID, "candidates": {"a": {}, "final": {"seeds": [0, 1, 2]}}}
    grid = sw.load_grid(write_grid(tmp_path, grid), ROOT / "params.yaml")
    assert [n for n, _ in grid.experiments(["final"], seeds=[2])] == ["t-final-s2"]
    assert [n for n, _ in grid.experiments(seeds=[1])] == ["t-a-s1", "t-final-s1"]
    with pytest.raises(ConfigError, match="seed 2 is none of the seeds of a"):
        grid.experiments(["a"], seeds=[2])


def test_an_untimed_run_keeps_its_metrics_but_not_its_time(tmp_path):
    grid = {**GRID, "candidates": {"a": {}, "bg": {"lr": 0.003}}, "untimed": ["t-a-s1", "t-bg-s0"]}
    grid = sw.load_grid(write_grid(tmp_path, grid), ROOT / "params.yaml")
    runs = [fake_run("t-a-s0", 50.0, 1), fake_run("t-a-s1", 30.0, 2), fake_run("t-bg-s0", 40.0, 3)]
    runs[1]["metrics"]["train_seconds"] = 6000.0  # shared the machine: ten times as long
    rows = sw.rows_of_runs(grid, runs)
    assert [r["timed"] for r in rows] == [True, False, False]
    out = tmp_path / "t.csv"
    sw.write_csv(rows, out)
    table = sw.summary_table(sw.read_csvs([out]))
    assert "| t | bg | 0 | unrecorded | 40.0 | 50.0 | 0.1000 | 0.050 | – | – |" in table
    assert "| t | a | 0, 1 | unrecorded | 40.0 ± 14.1 | 50.0 ± 14.1 | 0.1000 ± 0.0000 | 0.050 ± 0.000 | 10.0 | 11.0 |" in table


def test_frontier_rows_replace_the_same_run_and_budget(tmp_path):
    out = tmp_path / "frontier.csv"
    row = {"experiment": "t-a-s0", "run_key": "k", "kimg": "180", "images_seen": 180032,
           "train_seconds": 900.0, "fid_classifier": 150.0, "rec_fid_classifier": 160.0,
           "mse": 0.2, "probe_acc": 0.79, "probe_acc_pixels": 0.8, "ppl_full_classifier": 20.0,
           "precision_classifier": 0.5, "recall_classifier": 0.25}
    sw.merge_frontier_csv(out, [row, {**row, "kimg": "360", "fid_classifier": 120.0}])
    sw.merge_frontier_csv(out, [{**row, "fid_classifier": 140.0}])
    rows = sw.read_csvs([out])
    assert [(r["kimg"], r["fid_classifier"]) for r in rows] == [("180", "140.0"), ("360", "120.0")]
    table = sw.frontier_table(rows)
    assert "| t-a-s0 | 180 | 140.0 | 160.0 | 0.2000 | -0.010 | 20.0 | 0.500 / 0.250 |" in table
    readme = tmp_path / "README.md"
    readme.write_text(f"a\n{sw.MARKERS['frontier'][0]}\n{sw.MARKERS['frontier'][1]}\nb\n")
    sw.write_readme_table(readme, table, ["sweeps/frontier.csv"], which="frontier")
    assert "| t-a-s0 | 360 | 120.0 |" in readme.read_text()
    assert "scripts/sweep.py frontier" in readme.read_text()


def test_budget_table_averages_seeds_per_configuration_and_mark(tmp_path):
    """One line per configuration (candidates differing only in budget, kept checkpoints and
    seed are one) and mark; a seed two runs pass through at a mark counts once (its first row);
    runs the grid does not name are left out."""
    grid = sw.load_grid(write_grid(tmp_path, {
        "name": "t", "seeds": [0], "common": {},
        "candidates": {"long": {"train.kimg": 2.0, "train.keep_checkpoints": 50, "seeds": [0, 1]},
                       "longer": {"train.kimg": 4.0, "train.keep_checkpoints": 90, "seeds": [1]},
                       "other": {"lr": 0.003, "train.kimg": 2.0}}}), ROOT / "params.yaml")
    base = {"run_key": "k", "images_seen": 0, "train_seconds": 1.0, "featurenet": "f" * 12,
            "rec_fid_classifier": 50.0, "mse": 0.1, "probe_acc": 0.81, "probe_acc_pixels": 0.8,
            "precision_classifier": 0.5, "recall_classifier": 0.25}
    rows = [{**base, "experiment": e, "kimg": k, "fid_classifier": fid}
            for e, k, fid in [("t-long-s0", "1", 40.0), ("t-long-s1", "1", 60.0),
                              ("t-long-s0", "2", 30.0), ("t-longer-s1", "1", 99.0),
                              ("t-longer-s1", "4", 20.0), ("t-other-s0", "1", 70.0),
                              ("elsewhere-s0", "1", 10.0)]]
    sw.merge_frontier_csv(tmp_path / "f.csv", rows)
    table = sw.budget_table(sw.read_csvs([tmp_path / "f.csv"]), grid, default_kimg=2.0)
    lines = table.splitlines()[2:]
    assert lines == [
        "| long, longer | 1 | 0.5× | 0, 1 | 50.0 ± 14.1 | 50.0 ± 0.0 | 0.1000 ± 0.0000 | "
        "0.010 ± 0.000 | 0.50 ± 0.00 / 0.25 ± 0.00 |",
        "| long, longer | 2 | 1× | 0 | 30.0 | 50.0 | 0.1000 | 0.010 | 0.50 / 0.25 |",
        "| long, longer | 4 | 2× | 1 | 20.0 | 50.0 | 0.1000 | 0.010 | 0.50 / 0.25 |",
        "| other | 1 | 0.5× | 0 | 70.0 | 50.0 | 0.1000 | 0.010 | 0.50 / 0.25 |"]


def test_the_figure_tells_more_groups_apart_than_the_palette_has_colours():
    styles = sw.point_styles(23, [f"C{i}" for i in range(10)])
    assert len(set(styles)) == 23
    assert styles[0] == ("C0", "o") and styles[10] == ("C0", "s") and styles[22] == ("C2", "^")


def test_the_committed_grid_still_describes_every_exported_run():
    """sweeps/default.yaml spells out every key in which a candidate differs from today's
    params.yaml: each exported run's recorded params equal its candidate's overrides on top of
    params.yaml. When the default moves, this fails until the older candidates name the old
    value (a re-run would otherwise silently train something else under their name)."""
    from alae.config import merge_params

    grid = sw.load_grid(ROOT / "sweeps" / "default.yaml", ROOT / "params.yaml")
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    of_experiment = {name: o for cand in grid.candidates for name, o in grid.experiments([cand])}
    rows = sw.read_csvs([ROOT / "sweeps" / "default.csv"])
    assert rows
    for row in rows:
        params = merge_params(yaml.safe_load(yaml.safe_dump(base)), of_experiment[row["experiment"]])
        for column, recorded in row.items():
            if not column.startswith("param:") or recorded == "":
                continue   # a column a run's export did not record
            value = params
            for part in column[len("param:"):].split("."):
                value = value[part]
            assert yaml.safe_load(recorded) == value, (row["experiment"], column, recorded, value)
