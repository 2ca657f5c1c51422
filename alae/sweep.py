"""Sweeps through the pipeline's own experiment machinery (README, "How the default was chosen").

A grid file (`sweeps/*.yaml`) names candidates, each a set of `params.yaml` overrides, and the
seeds to run each with. Every candidate x seed becomes one `dvc exp run --queue -n NAME -S ...`;
the queue runs them one at a time (`dvc queue start -j 1`: two workers on two cores slow each
other, and their wall times would mean nothing). Every run lands in MLflow as usual; since
neither the MLflow store nor DVC's experiment refs travel with a clone, `export` writes the runs
to a committed CSV, and `report` makes the README's table and the FID-vs-time figure from the
CSVs, never from numbers typed by hand.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import yaml

from alae.config import ConfigError, merge_params, parse_params
from alae.io import atomic_open

METRICS = ("fid_classifier", "rec_fid_classifier", "mse", "probe_acc", "probe_acc_pixels",
           "ppl_full_classifier", "fid_floor_classifier", "train_seconds", "train_img_per_s")
STAGES = ("shard", "featurenet", "refstats", "train", "evaluate", "figures")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
MARKERS = {"sweep": ("<!-- sweep-table:start -->", "<!-- sweep-table:end -->"),
           "frontier": ("<!-- frontier-table:start -->", "<!-- frontier-table:end -->"),
           "budget": ("<!-- budget-table:start -->", "<!-- budget-table:end -->")}
BUDGET_FREE = ("train.kimg", "train.keep_checkpoints", "seed")
# ^ what frontier runs of one configuration may differ in: how far they ran, what they kept, and
#   the seed (the schedule is a function of images seen alone, so the same seed at the same mark
#   is the same model whichever run's checkpoint it is)
TABLE_START, TABLE_END = MARKERS["sweep"]
UNRECORDED = "unrecorded"   # a CSV row's featurenet or machine, where its export did not record them


@dataclass(frozen=True)
class Grid:
    name: str                              # prefix of every experiment name
    seeds: tuple[int, ...]
    common: dict[str, Any]                 # overrides every candidate gets (e.g. the budget)
    candidates: dict[str, dict[str, Any]]  # name -> overrides
    candidate_seeds: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    # ^ a candidate's own `seeds: [...]` (e.g. a finalist's three), else the grid's
    untimed: frozenset[str] = frozenset()
    # ^ experiments listed under `untimed:`: they shared the machine with other work, so their
    #   wall times compare with nothing (the table leaves them out of its times, the figure out)

    def experiments(self, only: Optional[Iterable[str]] = None,
                    seeds: Optional[Iterable[int]] = None) -> list[tuple[str, dict[str, Any]]]:
        """(experiment name, overrides) per candidate and seed, candidates in file order;
        `seeds` keeps only those of each candidate's seeds (e.g. a finalist's third)."""
        wanted = list(only or self.candidates)
        for c in wanted:
            if c not in self.candidates:
                raise ConfigError(f"candidate {c!r} is not in grid {self.name!r} "
                                  f"(known: {', '.join(self.candidates)})")
        runs = [(f"{self.name}-{c}-s{seed}", {**self.common, **self.candidates[c], "seed": seed})
                for c in wanted for seed in self.candidate_seeds.get(c, self.seeds)]
        if seeds is not None:
            keep = set(seeds)
            runs = [(name, o) for name, o in runs if o["seed"] in keep]
            if not runs:
                raise ConfigError(f"seed {', '.join(map(str, sorted(keep)))} is none of the "
                                  f"seeds of {', '.join(wanted)}")
        return runs


def load_grid(path: str | Path, params_path: str | Path = "params.yaml") -> Grid:
    """The grid, each experiment's params checked against params.yaml before anything queues
    (a typo would otherwise cost a whole queued run)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read the grid ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("candidates"), dict) or not raw["candidates"]:
        raise ConfigError(f"{path}: a grid has 'name', 'seeds', 'common' and 'candidates' (a mapping)")
    candidates = {str(k): dict(v or {}) for k, v in raw["candidates"].items()}
    own_seeds = {k: tuple(v.pop("seeds")) for k, v in candidates.items() if "seeds" in v}
    untimed = frozenset(str(name) for name in raw.get("untimed") or [])
    grid = Grid(name=str(raw.get("name", path.stem)), seeds=tuple(raw.get("seeds", [0])),
                common=dict(raw.get("common") or {}), candidates=candidates,
                candidate_seeds=own_seeds, untimed=untimed)
    for name in (grid.name, *grid.candidates):
        if not NAME.match(name):
            raise ConfigError(f"{path}: {name!r} is not a usable experiment name "
                              "(letters, digits, '-' and '_')")
    base = yaml.safe_load(Path(params_path).read_text()) or {}
    for exp, overrides in grid.experiments():
        try:
            parse_params(merge_params(json.loads(json.dumps(base)), overrides))
        except ConfigError as e:
            raise ConfigError(f"{path}: experiment {exp}: {e}") from None
    return grid


def override(key: str, value: Any) -> str:
    """One `-S` argument in Hydra's grammar (lists in brackets, YAML's true/false/null)."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return f"{key}={text}"


def queue_command(name: str, overrides: dict[str, Any]) -> list[str]:
    cmd = ["dvc", "exp", "run", "--queue", "-n", name]
    for key, value in overrides.items():
        cmd += ["-S", override(key, value)]
    return cmd


# --- from MLflow to a committed CSV, and from CSVs to the README ------------------------------
def rows_of_runs(grid: Grid, runs: list[dict[str, Any]], machine: str = "") -> list[dict[str, Any]]:
    """One row per experiment of the grid that finished (the latest run where there are
    several): its candidate, seed, run key, commit, the feature space its metrics are in (the
    first 12 hex digits of the featurenet's sha256, from the run's `featurenet` entry), the
    machine, the varied params, metrics and stage times."""
    varied = sorted({k for o in grid.candidates.values() for k in o} | set(grid.common))
    names = {name: (cand, overrides["seed"]) for cand in grid.candidates
             for name, overrides in grid.experiments([cand])}
    latest: dict[str, dict] = {}
    for run in runs:
        name = run["exp_name"]
        if name in names and run["status"] == "FINISHED" and "fid_classifier" in run["metrics"]:
            if name not in latest or run["start_time"] > latest[name]["start_time"]:
                latest[name] = run
    rows = []
    for name, run in sorted(latest.items(), key=lambda kv: list(names).index(kv[0])):
        cand, seed = names[name]
        m = run["metrics"]
        stage_s = {f"seconds_{s}": m.get(f"stage_seconds_{s}") for s in STAGES}
        rows.append({"experiment": name, "candidate": cand, "seed": seed,
                     "run_key": run["run_key"], "commit": run["commit"][:12],
                     "featurenet": (run.get("featurenet") or UNRECORDED)[:12],
                     "machine": machine or UNRECORDED, "timed": name not in grid.untimed,
                     **{f"param:{k}": run["params"].get(k, "") for k in varied},
                     **{k: m.get(k) for k in METRICS}, **stage_s,
                     "seconds_pipeline": sum(v for v in stage_s.values() if v is not None)})
    return rows


def this_machine() -> str:
    """The CPU a run was timed on, as a CSV row records it: `AMD EPYC (family 25 model 17, 2
    CPUs)`. FID moves with it too: float rounding differs between instruction sets (AVX2,
    AVX-512), and with it the featurenet and every training trajectory."""
    import os

    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        import platform
        return f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs)"
    return (f"{info.get('model name', '?')} (family {info.get('cpu family', '?')} model "
            f"{info.get('model', '?')}, {os.cpu_count()} CPUs)")


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> None:
    if not rows:
        raise ConfigError(f"{path}: no finished experiment of this grid in the MLflow store")
    fields = list(dict.fromkeys(k for r in rows for k in r))   # every row's columns, in order
    with atomic_open(path, "w") as f:
        out = csv.DictWriter(f, fieldnames=fields, lineterminator="\n", restval="")
        out.writeheader()
        out.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)


def _merge_csv(path: Path, rows: list[dict[str, Any]], key: Callable[[dict], tuple],
               defaults: Optional[dict[str, str]] = None) -> list[dict[str, Any]]:
    """The CSV's rows (empty columns filled from `defaults`) whose `key` no new row has, then
    `rows`: what an export or a frontier writes."""
    new = {key(r) for r in rows}
    old = []
    if path.exists():
        for r in read_csvs([path]):
            r.pop("sweep")
            r.update({k: v for k, v in (defaults or {}).items() if not r.get(k)})
            if key(r) not in new:
                old.append(r)
    return old + rows


def merge_sweep_csv(path: str | Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` into the CSV at `path`: a row replaces the row of the same experiment in the same
    feature space; every other row stays (the MLflow store of another machine or session is not
    here to export it again). Rows of CSVs written before the `featurenet` and `machine` columns
    say `unrecorded`. Returns the rows written."""
    merged = _merge_csv(Path(path), rows, lambda r: (r["experiment"], r["featurenet"]),
                        {"featurenet": UNRECORDED, "machine": UNRECORDED})
    write_csv(merged, path)
    return merged


def read_csvs(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                rows.append({"sweep": Path(path).stem, **r})
    return rows


def _num(value: str) -> Optional[float]:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


TIMES = ("train_seconds", "seconds_pipeline")


def _timed(row: dict[str, Any]) -> bool:
    """False for a run whose wall time compares with nothing (its grid's `untimed:` list); CSVs
    written before the column existed hold timed runs only."""
    return str(row.get("timed", "True")) != "False"


def _mean_sd(values: list[float], digits: int) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _column(rows: list[dict[str, Any]], key: str) -> list[float]:
    """The rows' numeric values of `key` (blank and NaN left out; a time only from timed rows)."""
    if key in TIMES:
        rows = [r for r in rows if _timed(r)]
    return [v for v in (_num(r.get(key)) for r in rows) if v is not None]


def _probe_gaps(rows: list[dict[str, Any]]) -> list[float]:
    return [a - b for a, b in zip(_column(rows, "probe_acc"), _column(rows, "probe_acc_pixels"))]


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per sweep, candidate and feature space (the featurenet: metrics in two
    spaces are never averaged together), mean ± sd over its seeds, best FID first."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        space = r.get("featurenet") or UNRECORDED
        groups.setdefault((r["sweep"], r["candidate"], space), []).append(r)

    order = sorted(groups, key=lambda g: statistics.mean(_column(groups[g], "fid_classifier") or [1e9]))
    lines = ["| sweep | candidate | seeds | featurenet | fid_classifier | rec_fid_classifier | "
             "mse | probe_acc − pixels | train min | pipeline min |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for sweep, cand, space in order:
        rs = groups[(sweep, cand, space)]
        gap = _probe_gaps(rs)
        lines.append(
            f"| {sweep} | {cand} | {', '.join(str(r['seed']) for r in rs)} | "
            f"{space if space == UNRECORDED else space[:8]} | "
            f"{_mean_sd(_column(rs, 'fid_classifier'), 1)} | {_mean_sd(_column(rs, 'rec_fid_classifier'), 1)} | "
            f"{_mean_sd(_column(rs, 'mse'), 4)} | {_mean_sd(gap, 3)} | "
            f"{_mean_sd([s / 60 for s in _column(rs, 'train_seconds')], 1)} | "
            f"{_mean_sd([s / 60 for s in _column(rs, 'seconds_pipeline')], 1)} |")
    return "\n".join(lines)


def write_readme_table(readme: str | Path, table: str, sources: list[str],
                       which: str = "sweep") -> None:
    """Replace what stands between the README's `which` markers (sweep or frontier)."""
    readme = Path(readme)
    text = readme.read_text()
    start, end = MARKERS[which]
    if start not in text or end not in text:
        raise ConfigError(f"{readme}: no {start} ... {end} markers to write the table between")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    command = "report" if which == "sweep" else "frontier"   # the budget table: frontier too
    note = (f"<!-- generated by `python scripts/sweep.py {command}` from {', '.join(sources)}; "
            "do not edit by hand -->")
    with atomic_open(readme, "w") as f:
        f.write(f"{head}{start}\n{note}\n{table}\n{end}{tail}")


def merge_frontier_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """`rows` into the CSV at `path`, replacing rows of the same experiment and mark; sorted by
    experiment and budget."""
    merged = _merge_csv(Path(path), rows, lambda r: (r["experiment"], str(r["kimg"])))
    write_csv(sorted(merged, key=lambda r: (r["experiment"], float(r["kimg"]))), path)


def frontier_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per run and budget (kimg), in the order of the CSV. No times: a
    background run's wall time compares with nothing (the budget is the kimg)."""
    lines = ["| run | kimg | fid_classifier | rec_fid_classifier | mse | probe_acc − pixels | "
             "ppl_full_classifier | precision / recall |", "|---|---|---|---|---|---|---|---|"]

    def f(value: Optional[float], spec: str) -> str:
        return "–" if value is None else format(value, spec)

    for r in rows:
        v = {k: _num(r.get(k)) for k in ("fid_classifier", "rec_fid_classifier", "mse", "probe_acc",
                                          "probe_acc_pixels", "ppl_full_classifier",
                                          "precision_classifier", "recall_classifier")}
        gap = (None if None in (v["probe_acc"], v["probe_acc_pixels"])
               else v["probe_acc"] - v["probe_acc_pixels"])
        lines.append(f"| {r['experiment']} | {r['kimg']} | {f(v['fid_classifier'], '.1f')} | "
                     f"{f(v['rec_fid_classifier'], '.1f')} | {f(v['mse'], '.4f')} | {f(gap, '.3f')} | "
                     f"{f(v['ppl_full_classifier'], '.1f')} | {f(v['precision_classifier'], '.3f')} / "
                     f"{f(v['recall_classifier'], '.3f')} |")
    return "\n".join(lines)


def budget_table(rows: list[dict[str, Any]], grid: Grid, default_kimg: float) -> str:
    """Markdown: the frontier's rows as mean ± sd over seeds, one line per configuration, budget
    and feature space. A configuration is a grid candidate's overrides but BUDGET_FREE (so the
    480 and 960 kimg runs of today's default are one), named by its candidates; a seed counted
    at a budget by two runs (a 960 kimg run passes through its 480 kimg sibling's model) counts
    once, its first row in the CSV. Rows of experiments the grid does not name are left out."""
    of_experiment = {name: (cand, o["seed"]) for cand in grid.candidates
                     for name, o in grid.experiments([cand])}
    configs: dict[tuple, list[str]] = {}      # configuration -> its candidates, in CSV order
    groups: dict[tuple, dict[int, dict]] = {}  # (configuration, kimg, space) -> seed -> row
    for r in rows:
        if r["experiment"] not in of_experiment:
            continue
        cand, seed = of_experiment[r["experiment"]]
        overrides = {**grid.common, **grid.candidates[cand]}
        config = tuple(sorted((k, json.dumps(v)) for k, v in overrides.items()
                              if k not in BUDGET_FREE))
        if cand not in configs.setdefault(config, []):
            configs[config].append(cand)
        key = (config, float(r["kimg"]), r.get("featurenet") or UNRECORDED)
        groups.setdefault(key, {}).setdefault(seed, r)
    lines = ["| configuration (candidates) | kimg | × default | seeds | fid_classifier | "
             "rec_fid_classifier | mse | probe_acc − pixels | precision / recall |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (config, kimg, space) in sorted(groups, key=lambda g: (list(configs).index(g[0]), g[1], g[2])):
        by_seed = groups[(config, kimg, space)]
        rs = list(by_seed.values())

        def col(key: str) -> list[float]:
            return _column(rs, key)

        gap = _probe_gaps(rs)
        lines.append(
            f"| {', '.join(configs[config])} | {kimg:g} | {kimg / default_kimg:.3g}× | "
            f"{', '.join(map(str, sorted(by_seed)))} | {_mean_sd(col('fid_classifier'), 1)} | "
            f"{_mean_sd(col('rec_fid_classifier'), 1)} | {_mean_sd(col('mse'), 4)} | "
            f"{_mean_sd(gap, 3)} | {_mean_sd(col('precision_classifier'), 2)} / "
            f"{_mean_sd(col('recall_classifier'), 2)} |")
    return "\n".join(lines)


MARKER_SHAPES = ("o", "s", "^", "D", "v")


def point_styles(n: int, colours: list[str]) -> list[tuple[str, str]]:
    """(colour, marker) for n groups of points: the palette's colours in turn, the marker
    changing each time they run out, so no two of up to len(colours) x 5 groups look alike."""
    return [(colours[i % len(colours)], MARKER_SHAPES[i // len(colours) % len(MARKER_SHAPES)])
            for i in range(n)]


def plot_fid_vs_time(rows: list[dict[str, Any]], out: str | Path) -> None:
    """Each run's FID against its training wall time, one colour per sweep/candidate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    groups: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        t, fid = _num(r.get("train_seconds")), _num(r.get("fid_classifier"))
        if t is not None and fid is not None and _timed(r):
            space = r.get("featurenet") or UNRECORDED
            space = space if space == UNRECORDED else f"featurenet {space[:8]}"
            groups.setdefault(f"{r['sweep']}/{r['candidate']} ({space})", []).append((t / 60, fid))
    styles = point_styles(len(groups), plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for (label, points), (colour, marker) in zip(sorted(groups.items()), styles):
        xs, ys = zip(*points)
        ax.scatter(xs, ys, label=label, s=28, color=colour, marker=marker)
    ax.set_xlabel("training wall time (min, on the machine each run was exported from)")
    ax.set_ylabel("fid_classifier (featurenet space; lower is better)")
    ax.set_title("Quality against training time, one point per run")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    with atomic_open(out, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
