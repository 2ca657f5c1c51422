"""MLflow, as DESIGN.md's "one run per pipeline configuration". The only module that imports mlflow.

Every stage opens the run tagged with the configuration's run key (a hash of the resolved params
and the code), creating it and logging the flattened params once when it is new. So `dvc repro`
and `dvc exp run` with the same params and code continue one run, and any change starts another.

A tracking server that goes away mid-stage does not stop training: metrics that cannot be sent
wait in `.alae/runs/<run key>/pending_metrics.jsonl` and are sent, in order and with their
original steps and times, at the next log call that gets through, or when any stage of the same
run opens it again. A stage that ends with metrics still waiting fails, saying so.

Several stages may write one SQLite store at once (`dvc queue start -j N`): creating the store, the
experiment and a run happen under a file lock beside the database, and every client call is retried
with backoff while SQLite says "database is locked".
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar

from alae import STARTED
from alae.codedeps import PROJECT_DIR, code_files
from alae.config import Params
from alae.errors import Stopped, UserError
from alae.io import files_digest

EXPERIMENT = "alae"
KEY_TAG = "alae.run_key"
# MLflow 3 opens an experiment in its GenAI (traces) view unless told this is model training:
# UIs that read the experiment's kind take it from this tag (the "Machine learning" kind);
# MLflow 3.17's UI follows its GenAI / Machine learning switch instead, or the URL's
# `workflowType` (`experiment_url`).
KIND_TAG = "mlflow.experimentKind"
KIND = "custom_model_development"
# The runs table's columns: MLflow 3.17's UI opens an experiment tag `mlflow.sharedViewState.<key>`
# (JSON of its view state) when the URL names `viewStateShareKey=<key>` (`experiment_url`); the
# table then shows the results and losses first, not only names and dates. Columns of metrics a
# run lacks (the other feature space) stay empty.
VIEW_KEY = "alae-runs"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
VIEW_COLUMNS = [*(f"metrics.`{m}`" for m in (
    "fid_classifier", "rec_fid_classifier", "fid_inception", "rec_fid_inception", "mse",
    "probe_acc", "loss_d", "loss_g", "lae", "train_seconds")),
    *(f"params.`{p}`" for p in ("lr", "train.kimg", "model.kind", "seed"))]
VIEW = json.dumps({"selectedColumns": VIEW_COLUMNS, "orderByKey": "attributes.start_time",
                   "orderByAsc": False})
SQLITE = "sqlite:///"
PENDING = "pending_metrics.jsonl"  # in the run's working folder: metrics not yet sent
# SQLite already waits 20 s for a lock (MLflow sets busy_timeout) but gives up at once when two
# transactions deadlock upgrading a read lock; 8 tries with backoff add up to about half a minute.
LOCK_ATTEMPTS = 8
LOCK_BACKOFF_S = 0.25
T = TypeVar("T")


def run_dir(key: str, root: Optional[Path] = None) -> Path:
    """The run's git-ignored working folder: resumable checkpoints, metrics waiting to be sent."""
    return (root or repo_root()) / ".alae" / "runs" / key


def repo_root() -> Path:
    """`DVC_ROOT` first: under `dvc exp run --temp/--queue` git would name a throw-away copy."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    git = _git("rev-parse", "--show-toplevel", cwd=Path.cwd())
    return Path(git).resolve() if git else Path.cwd().resolve()


def tracking_uri(root: Optional[Path] = None) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{(root or repo_root()) / 'mlflow.db'}"


def code_digest(project_dir: Path = PROJECT_DIR) -> str:
    """The code as DVC sees it (alae/codedeps.py): a change here is a change DVC reruns for."""
    return files_digest(code_files(project_dir), project_dir)


def run_key(params: Params, project_dir: Path = PROJECT_DIR) -> str:
    blob = json.dumps(params.to_dict(), sort_keys=True) + code_digest(project_dir)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """MLflow's own client retries for minutes; a dead server must fail the stage at once."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"MLFLOW_TRACKING_URI {uri}: tracking server not reachable ({e})") from None


def _is_locked(error: BaseException) -> bool:
    """SQLite's busy errors, however MLflow wraps them (an MlflowException around SQLAlchemy's
    OperationalError, or the OperationalError itself while the store is being set up)."""
    seen: set[int] = set()
    e: Optional[BaseException] = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = str(e)
        if "database is locked" in text or "database table is locked" in text:
            return True
        e = e.__cause__ or e.__context__
    return False


def retry_locked(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)`, tried again with exponential backoff (and jitter, so two workers do
    not collide again in step) while the store is locked; other errors pass through at once.
    A failed SQLite transaction is rolled back, so trying it again cannot log anything twice."""
    for attempt in range(LOCK_ATTEMPTS):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if not _is_locked(e):
                raise
            if attempt == LOCK_ATTEMPTS - 1:
                raise UserError(f"MLflow store still locked after {LOCK_ATTEMPTS} tries ({what}): "
                                "too many parallel writers for SQLite; use a tracking server "
                                "(README: Team mode)") from None
            time.sleep(LOCK_BACKOFF_S * 2 ** attempt * (1 + random.random()))
    raise AssertionError("unreachable")


class RetryingClient:
    """An MlflowClient whose every method call goes through `retry_locked`."""

    def __init__(self, client: Any):
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return retry_locked(name, attr, *args, **kwargs)

        return call


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """For a SQLite store, hold an exclusive `flock` on `<db>.lock` beside the database.

    Two processes opening a store that does not exist yet would both run MLflow's schema
    migrations and fail ("Online migration expected to match one row"); two creating the
    experiment or the run of one configuration would create two. Other stores (a tracking server,
    PostgreSQL) order this themselves."""
    if not uri.startswith(SQLITE):
        yield
        return
    lock = Path(uri[len(SQLITE):] + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class PipelineRun:
    """The MLflow run of one pipeline configuration, as the stages use it.

    Metrics never stop a stage: what cannot be sent waits in the run's pending file (appended,
    fsync'ed) and is sent first at the next attempt; after a failure the store is left alone for
    `RETRY_SECONDS`, so a dead server costs one timeout, not one per tick. Everything else
    (artifacts, tags, reading back) raises a one-line UserError when the store is away.
    """

    RETRY_SECONDS = 30.0

    def __init__(self, client: Any, run_id: str, key: str, workdir: Path, uri: str = ""):
        """`client` is an MlflowClient, wrapped here so every call retries a locked store."""
        self.client = client if isinstance(client, RetryingClient) else RetryingClient(client)
        self.run_id, self.key, self.uri = run_id, key, uri
        self.workdir = workdir
        self.pending = workdir / PENDING
        self._retry_at = 0.0
        self._warned = False

    def log_metrics(self, metrics: dict[str, float], step: Optional[int] = None) -> None:
        """Log now, or keep them for later if the store cannot be reached (never lost)."""
        record = {"t": int(time.time() * 1000), "step": int(step or 0),
                  "metrics": {k: float(v) for k, v in metrics.items()}}
        if self.send_pending():
            try:
                self._send([record])
                return
            except Exception as e:  # noqa: BLE001 - any transport or store error: keep them
                self._unreachable(e)
        self.pending.parent.mkdir(parents=True, exist_ok=True)
        with open(self.pending, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def send_pending(self, force: bool = False) -> bool:
        """Send what waits in the pending file, in order; True when nothing waits any more.
        Within `RETRY_SECONDS` of a failure it does not try, unless `force`."""
        if not self.pending.is_file():
            return True
        if not force and time.monotonic() < self._retry_at:
            return False
        records = [json.loads(line) for line in self.pending.read_text().splitlines() if line]
        try:
            self._send(records)
        except Exception as e:  # noqa: BLE001
            self._unreachable(e)
            return False
        self.pending.unlink()
        print(f"tracking: sent {len(records)} waiting metric records to {self.uri}",
              file=sys.stderr)
        self._warned = False
        return True

    def pending_count(self) -> int:
        if not self.pending.is_file():
            return 0
        return sum(1 for line in self.pending.read_text().splitlines() if line)

    def _send(self, records: list[dict]) -> None:
        from mlflow.entities import Metric

        batch = [Metric(k, v, r["t"], r["step"]) for r in records for k, v in r["metrics"].items()]
        for i in range(0, len(batch), 1000):  # MLflow's per-request limit
            self.client.log_batch(self.run_id, metrics=batch[i:i + 1000])

    def _unreachable(self, error: Exception) -> None:
        self._retry_at = time.monotonic() + self.RETRY_SECONDS
        if not self._warned:
            print(f"warning: tracking store {self.uri} not reachable ({_first_line(error)}); "
                  f"metrics wait in {self.pending} and are sent when it is back", file=sys.stderr)
            self._warned = True

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - transport and store errors alike
            raise UserError(f"tracking store {self.uri}: {what} failed ({_first_line(e)}); run "
                            "the stage again when the store is back (a finished training is "
                            "not repeated)") from None

    def log_image(self, image: Any, key: str, step: int) -> None:
        """An image the MLflow UI can step through (uint8 HxW or HxWxC)."""
        self._call(f"logging image {key!r}", self.client.log_image, self.run_id, image,
                   key=key, step=int(step))

    def logged_image_steps(self, key: str) -> set[int]:
        """Steps already stored for an image key (MLflow names them `images/<key>+step+<n>+...`)."""
        steps = set()
        for info in self._call("listing images", self.client.list_artifacts, self.run_id, "images"):
            name = Path(info.path).name
            if name.startswith(f"{key}+step+"):
                steps.add(int(name.split("+")[2]))
        return steps

    def log_artifact(self, path: str | Path, artifact_path: Optional[str] = None) -> None:
        self._call(f"storing artifact {path}", self.client.log_artifact, self.run_id, str(path),
                   artifact_path)

    def set_tags(self, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self._call(f"setting tag {k}", self.client.set_tag, self.run_id, k, str(v))

    def logged_steps(self, metric: str) -> set[int]:
        """Steps of `metric` the run holds, counting those still waiting to be sent."""
        history = self._call(f"reading {metric}", self.client.get_metric_history, self.run_id,
                             metric)
        steps = {m.step for m in history}
        if self.pending.is_file():
            for line in self.pending.read_text().splitlines():
                record = json.loads(line) if line else {}
                if metric in record.get("metrics", {}):
                    steps.add(record["step"])
        return steps


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]


def _git(*args: str, cwd: Path) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _experiment_id(client: Any, uri: str) -> str:
    from mlflow.exceptions import MlflowException

    # A SQLite store keeps its artifacts beside it (the default: both at the repo root), not in
    # ./mlruns of whatever folder a stage happened to start in.
    location = None
    if uri.startswith(SQLITE):
        location = (Path(uri[len(SQLITE):]).parent / "mlartifacts").as_uri()
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        if location is not None and exp.artifact_location != location:
            _move_artifact_locations(uri[len(SQLITE):], exp.experiment_id, exp.artifact_location,
                                     location)
        for tag, value in ((KIND_TAG, KIND), (VIEW_TAG, VIEW)):
            if exp.tags.get(tag) != value:  # created before the tag was set (so) here
                client.set_experiment_tag(exp.experiment_id, tag, value)
        return exp.experiment_id
    try:
        return client.create_experiment(EXPERIMENT, artifact_location=location,
                                        tags={KIND_TAG: KIND, VIEW_TAG: VIEW})
    except MlflowException:  # another process created it a moment ago (a server, not SQLite)
        exp = client.get_experiment_by_name(EXPERIMENT)
        if exp is None:
            raise
        return exp.experiment_id


def project_experiment(uri: str) -> str:
    """The id of the `alae` experiment in the store at `uri`, created or brought up to date (its
    tags and artifact location) as a stage would."""
    from mlflow.tracking import MlflowClient

    with store_lock(uri):
        client = RetryingClient(retry_locked("open store", MlflowClient, tracking_uri=uri))
        return _experiment_id(client, uri)


def experiment_url(ui: str, experiment_id: str) -> str:
    """The experiment's page in the MLflow UI at `ui`, on its runs table (not the traces view),
    with the results and losses as columns (VIEW)."""
    return (f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}"
            "&workflowType=machine_learning")


def _move_artifact_locations(db: str, exp_id: str, old: str, new: str) -> None:
    """MLflow stores absolute artifact locations: after the repository (and its store) moved or
    was copied, new runs would write into the old folder. A store of this project's layout
    (`mlartifacts/` beside the database) is pointed at the folder beside it now, runs included;
    any other location is not ours to change."""
    import sqlite3

    if not (old.startswith("file://") and old.rstrip("/").endswith("/mlartifacts")):
        raise UserError(f"{db}: experiment {EXPERIMENT!r} keeps its artifacts at {old}, not "
                        f"beside the store ({new}): move them there, or set MLFLOW_TRACKING_URI "
                        "to the store they belong to")
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con, con:
        con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                    (new, int(exp_id)))
        con.execute("UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) "
                    "WHERE experiment_id = ? AND substr(artifact_uri, 1, ?) = ?",
                    (new, len(old) + 1, int(exp_id), len(old), old))
    print(f"MLflow store {db} was moved: artifact locations changed from {old} to {new}",
          file=sys.stderr)


def _tags(key: str, root: Path) -> dict[str, str]:
    tags = {KEY_TAG: key}
    commit = os.environ.get("DVC_EXP_BASELINE_REV") or _git("rev-parse", "HEAD", cwd=root)
    if commit:
        tags["git.commit"] = commit
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
        tags["mlflow.runName"] = os.environ["DVC_EXP_NAME"]
    return tags


@contextlib.contextmanager
def pipeline_run(params: Params, stage: str) -> Iterator[PipelineRun]:
    """Open (or create) the run of this configuration for one stage; mark it FAILED, with the
    error as a tag, if the stage raises, and FINISHED when it succeeds."""
    import logging

    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    # Store-creation and schema-migration chatter would bury the stage's own one-line errors.
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # It logs a traceback for every "database is locked" before raising it; the raise is enough
    # (retried, or a one-line error), and parallel queue workers would print one per wait.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

    root = repo_root()
    uri = tracking_uri(root)
    check_reachable(uri)
    if uri.startswith(("http://", "https://")):
        # MLflow's defaults (7 retries, 120 s timeouts) would stall training for minutes per
        # call while a server is away; our own pending file does the waiting instead.
        for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"),
                            ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                            ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")):
            os.environ.setdefault(name, value)
    key = run_key(params)
    with store_lock(uri):
        client = RetryingClient(retry_locked("open store", MlflowClient, tracking_uri=uri))
        exp_id = _experiment_id(client, uri)
        found = client.search_runs([exp_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'",
                                   max_results=1)
        if found:
            run_id = found[0].info.run_id
            client.update_run(run_id, status="RUNNING")
        else:
            run_id = client.create_run(exp_id, run_name=f"alae-{key[:8]}").info.run_id
            flat = [Param(k, json.dumps(v) if not isinstance(v, str) else v)
                    for k, v in sorted(params.flat().items())]
            client.log_batch(run_id, params=flat)
    run = PipelineRun(client, run_id, key, run_dir(key, root), uri)
    run.set_tags(_tags(key, root))
    run.send_pending(force=True)  # what an earlier stage of this run could not send
    try:
        yield run
        # Wall time per stage, so a sweep can weigh quality against the whole pipeline's cost.
        run.log_metrics({f"stage_seconds_{stage}": time.monotonic() - STARTED})
    except BaseException as e:
        killed = isinstance(e, (KeyboardInterrupt, Stopped))
        try:
            client.set_tag(run_id, "alae.error", f"{stage}: {e}"[:5000])
            client.set_terminated(run_id, status="KILLED" if killed else "FAILED")
        except Exception as tracking_error:  # noqa: BLE001 - the stage's own error matters more
            print(f"warning: could not mark the MLflow run {run_id} "
                  f"({type(tracking_error).__name__})", file=sys.stderr)
        raise
    if not run.send_pending(force=True):
        raise UserError(f"{stage}: its outputs are written, but {run.pending_count()} metric "
                        f"records still wait in {run.pending} for the tracking store {uri}: "
                        "run the stage again (or `dvc repro`) when it is back (a finished training is not repeated)")
    client.set_tag(run_id, "alae.error", "")
    client.set_terminated(run_id, status="FINISHED")


def exported_runs(exp_name_prefix: str, uri: Optional[str] = None) -> list[dict[str, Any]]:
    """Every run of this project's experiment whose `dvc.exp_name` starts with the prefix, as
    flat records (params as logged, metrics' last values, tags, start time): what a sweep
    commits, since neither the MLflow store nor DVC's experiment refs travel with a clone."""
    from mlflow.tracking import MlflowClient

    uri = uri or tracking_uri()
    check_reachable(uri)
    client = RetryingClient(retry_locked("open store", MlflowClient, tracking_uri=uri))
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        raise UserError(f"{uri}: no MLflow experiment {EXPERIMENT!r} (nothing has run yet)")
    runs = client.search_runs([exp.experiment_id], max_results=5000,
                              filter_string=f"tags.`dvc.exp_name` LIKE '{exp_name_prefix}%'")
    return [{"exp_name": r.data.tags.get("dvc.exp_name", ""), "run_key": r.data.tags.get(KEY_TAG, ""),
             "commit": r.data.tags.get("git.commit", ""), "status": r.info.status,
             "start_time": r.info.start_time, "params": dict(r.data.params),
             "metrics": dict(r.data.metrics)} for r in runs]
