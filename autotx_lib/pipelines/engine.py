"""The pipeline engine: runs due workflow runs on dask distributed and writes their log.

The agent never runs workflows: its after-delivery hook only records a due run in the
journal (:func:`record_run`). A :class:`PipelineEngine` (a thread of the agent, or
``autotx pipelines serve``) claims due runs, submits each as a dask future (a
:class:`~autotx_lib.pipelines.context.RunContext` in, a
:class:`~autotx_lib.pipelines.context.RunReport` out) and records what happened: status,
duration, result items, the step log, mails for the user.

- Timeouts: a run still going after its timeout is cancelled and marked ``timeout``.
- Retries: a retryable error (an unreachable share, a lost connection, an engine that
  stopped mid-run) is tried again after a capped exponential backoff.
- Cancel: ``autotx pipelines cancel ID`` marks the run in the journal; the engine cancels
  its future.
- A worker that dies under a run (out of memory, killed) ends it as ``error``:
  "worker died"; a run ``started`` by an engine that is gone is marked when the next
  engine starts.
- The scheduler unreachable: runs wait in ``created``; the engine tries again later.

Examples
--------
>>> engine = PipelineEngine(config)                           # doctest: +SKIP
>>> run_id = engine.record("previews", "/store/alice/stack1") # doctest: +SKIP
>>> engine.run_until_idle()                                   # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotx_lib.config import Config, PipelinesSettings
from autotx_lib.errors import AutotxError
from autotx_lib.journal import Journal
from autotx_lib.journal.pipeline_runs import (
    CANCELLED,
    ERROR,
    FINISHED,
    STARTED,
    TIMEOUT,
    PipelineStore,
    aware,
    utcnow,
)
from autotx_lib.pipelines.context import RunContext, RunReport, describe_error, execute_run
from autotx_lib.pipelines.registry import Registry, WorkflowNotFoundError, registry_for

log = logging.getLogger("autotx.pipelines")


class SchedulerUnreachableError(AutotxError):
    """The dask scheduler cannot be reached; runs wait and are tried again."""

    retryable = True


def results_root(config: Config) -> Path:
    """Where run results go: ``[pipelines] results_dir``, default ``managed/results``."""
    return config.pipelines.results_dir or config.managed / "results"


def run_results_dir(root: Path, user: str | None, dataset: str, run_id: int) -> Path:
    """``<root>/<user>/<dataset>/<run id>``: one folder per run, never inside the data."""
    return root / (user or "_") / dataset / str(run_id)


def dedup_key(workflow: str, path: str | os.PathLike) -> str:
    """The identity of an automatic run: workflow and the delivered folder."""
    return f"{workflow}@{os.path.normpath(os.path.abspath(path))}"


def retry_delay(settings: Any, attempt: int) -> float:
    """Seconds before retrying after failed attempt number ``attempt`` (capped doubling).

    ``settings`` has ``retry_seconds`` and ``max_retry_seconds``: ``[pipelines]``, or
    ``[omero]`` for ``omero-import`` runs (:func:`retry_settings`).
    """
    return float(min(settings.max_retry_seconds,
                     settings.retry_seconds * 2 ** max(0, attempt - 1)))


def retry_settings(config: Config, workflow: str) -> Any:
    """The section whose retry delays a workflow's runs use.

    ``omero-import`` keeps the ``[omero]`` section's (``retry_seconds``,
    ``max_retry_seconds``), as when it ran as a job; every other workflow ``[pipelines]``.
    """
    if workflow == "omero-import":
        return config.omero
    return config.pipelines


def record_run(store: PipelineStore, registry: Registry, workflow: str,
               path: str | os.PathLike, *, initiator: str, settings: PipelinesSettings,
               user: str | None = None, dataset_id: int | None = None,
               params: dict[str, Any] | None = None, timeout_s: float | None = None,
               automatic: bool = False, rerun_of: int | None = None,
               max_attempts: int | None = None) -> tuple[int, bool]:
    """Record a due run; returns ``(run id, created)``.

    ``automatic`` runs (from rules) are deduplicated by workflow and folder: two agents
    recording the same run get the same id. The workflow must be known now (its
    version is recorded); a workflow missing later fails its run with a clear error.
    ``max_attempts`` defaults to ``settings.max_attempts``.
    """
    item = registry.get(workflow)
    folder = os.path.normpath(os.path.abspath(path))
    return store.add_run(
        workflow=workflow, version=item.version, dataset_path=folder, initiator=initiator,
        dataset_id=dataset_id, user=user if user is not None else Path(folder).parent.name,
        params=params, dedup_key=dedup_key(workflow, folder) if automatic else None,
        max_attempts=max_attempts or settings.max_attempts, timeout_s=timeout_s or settings.timeout_seconds,
        rerun_of=rerun_of)


def record_all_delivered(config: Config, journal: Journal, workflow: str, *,
                         since: dt.datetime | None = None, params: dict[str, Any] | None = None,
                         initiator: str = "cli", registry: Registry | None = None
                         ) -> tuple[list[int], int]:
    """Record a run of ``workflow`` on every delivered dataset (delivered since ``since``).

    Like a rule's runs, these are deduplicated: a dataset that already has a run of this
    workflow is skipped (``autotx pipelines rerun ID`` runs one again). Returns the new
    run ids and how many datasets were skipped.
    """
    from autotx_lib.journal import DELIVERED, DONE

    store = PipelineStore(journal)
    registry = registry or registry_for(config)
    created, skipped = [], 0
    for row in journal.datasets_in([DELIVERED, DONE]):
        if not row.dest_path or (since is not None and row.finished_at is not None
                                 and aware(row.finished_at) < since):
            continue
        run_id, new = record_run(store, registry, workflow, row.dest_path, initiator=initiator,
                                 settings=config.pipelines, user=row.user, dataset_id=row.id,
                                 params=params, automatic=True)
        if new:
            created.append(run_id)
        else:
            skipped += 1
    return created, skipped


def cancel_run(journal: Journal, run_id: int) -> bool:
    """Cancel a run that has not ended; True when it was cancelled.

    A run under way is cancelled by its engine at its next look (its result is dropped).
    """
    return PipelineStore(journal).cancel(run_id)


def rerun(config: Config, journal: Journal, run_id: int, *, initiator: str = "cli",
          registry: Registry | None = None) -> int:
    """Record a new run of the same workflow, folder and params as run ``run_id``."""
    store = PipelineStore(journal)
    row = store.run(run_id)
    if row is None:
        raise KeyError(f"no pipeline run {run_id}; `autotx pipelines log` lists them")
    return record_run(store, registry or registry_for(config), row.workflow, row.dataset_path,
                      initiator=initiator, settings=config.pipelines, user=row.user,
                      dataset_id=row.dataset_id, params=json.loads(row.params or "{}"),
                      timeout_s=row.timeout_s, rerun_of=row.id)[0]


# --- the shared local cluster ------------------------------------------------------------

_local: dict[str, Any] = {}
_local_lock = threading.Lock()


def shared_local_cluster(n_workers: int) -> Any:
    """A LocalCluster started once per process and reused (closed at exit)."""
    from autotx_lib.imaging.plate import start_local_cluster

    with _local_lock:
        cluster = _local.get("cluster")
        if cluster is None or cluster.status.name in ("closed", "closing", "failed"):
            cluster = _local["cluster"] = start_local_cluster(n_workers)
            atexit.register(cluster.close)
        return cluster


@dataclass
class Tally:
    """What ended while an engine ran: counts, and one line per failed run."""

    finished: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class _Active:
    future: Any
    row: Any
    attempt: int
    version: str
    started: float
    timeout_s: float | None


class PipelineEngine:
    """Runs due pipeline runs on dask and records them in the journal.

    Parameters
    ----------
    config : Config
        ``[pipelines]`` (scheduler, timeouts, retries, results folder), ``[email]``.
    journal : Journal, optional
        Default: the config's journal.
    client : distributed.Client, optional
        Use this client (tests, notebooks); else ``[pipelines] scheduler`` or the shared
        local cluster.
    registry : Registry, optional
        Default: the config's workflows.
    max_active : int
        Runs in flight at once (more wait in ``created``).
    stale_engine_seconds : float
        An engine whose heartbeat is older than this is taken as gone.
    connect_timeout_s : float, optional
        Default ``[pipelines] connect_timeout_seconds``.

    Notes
    -----
    A run that times out is cancelled, but Python cannot stop a function half-way: on a
    worker it goes on until it returns, holding its worker thread. Give hanging work its own
    timeouts (``subprocess.run(..., timeout=...)``), or restart the workers.
    """

    def __init__(self, config: Config, journal: Journal | None = None, *, client: Any = None,
                 registry: Registry | None = None, max_active: int = 200,
                 stale_engine_seconds: float = 300.0, connect_timeout_s: float | None = None):
        self.config = config
        self.settings = config.pipelines
        self.journal = journal or Journal(config.journal_url)
        self.store = PipelineStore(self.journal)
        self.registry = registry or registry_for(config)
        self._client = client
        self._owns_client = False
        self.max_active = max_active
        self.stale_engine_seconds = stale_engine_seconds
        self.connect_timeout_s = connect_timeout_s or self.settings.connect_timeout_seconds
        self._unreachable_until = 0.0  # after a failed connection, wait before the next
        self.engine_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.active: dict[int, _Active] = {}
        self.stop_requested = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._registered = False
        self._last_heartbeat = 0.0
        self.tally = Tally()  # what ended since this engine started
        # what a workflow may read of the agent's settings on its worker (the [omero]
        # section holds no password: only where to find one)
        self._sections = {"omero": config.omero.model_dump(mode="json"),
                          "journal_url": self.journal.url, "instrument": config.host_alias}

    # --- recording ---------------------------------------------------------------------

    def record(self, workflow: str, path: str | os.PathLike, *, initiator: str = "python",
               params: dict[str, Any] | None = None, **kwargs: Any) -> int:
        """Record a run of ``workflow`` on ``path`` (due now); returns its id."""
        return record_run(self.store, self.registry, workflow, path, initiator=initiator,
                          settings=self.settings, params=params, **kwargs)[0]

    # --- the dask client ------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The dask client (connected on first use).

        Raises
        ------
        SchedulerUnreachableError
            ``[pipelines] scheduler`` cannot be reached (runs wait; tried again later).
        """
        if self._client is None:
            from distributed import Client

            address = self.settings.scheduler
            if time.monotonic() < self._unreachable_until:
                raise SchedulerUnreachableError(f"the dask scheduler {address} was unreachable "
                                                "a moment ago; due runs wait")
            try:
                if address:
                    self._client = Client(address, timeout=self.connect_timeout_s,
                                          set_as_default=False)
                else:
                    self._client = Client(shared_local_cluster(self.settings.local_workers),
                                          set_as_default=False)
            except (OSError, TimeoutError) as error:
                self._unreachable_until = time.monotonic() + 30.0
                raise SchedulerUnreachableError(
                    f"the dask scheduler {address} cannot be reached ({describe_error(error)});"
                    " due runs wait and are tried again. Check [pipelines] scheduler and that "
                    "the scheduler is running") from None
            self._owns_client = True
        return self._client

    # --- one pass --------------------------------------------------------------------------

    def start_engine(self) -> int:
        """Register this engine and mark runs left ``started`` by engines that are gone."""
        if self._registered:
            return 0
        self.store.register_engine(self.engine_id, socket.gethostname(), os.getpid())
        self._registered = True
        self._last_heartbeat = time.monotonic()
        return self.recover_orphans()

    def recover_orphans(self) -> int:
        """Runs ``started`` by an engine that stopped or went quiet: retried or failed."""
        engines = self.store.engines()
        stale = utcnow() - dt.timedelta(seconds=self.stale_engine_seconds)
        count = 0
        for row in self.store.started_runs():
            if row.engine == self.engine_id and row.id in self.active:
                continue
            owner = engines.get(row.engine or "")
            gone = (owner is None or owner.stopped_at is not None
                    or aware(owner.heartbeat_at) < stale or _dead_here(owner))
            if not gone:
                continue
            text = (f"the engine {row.engine} running this run stopped before it ended "
                    "(agent or `autotx pipelines serve` killed)")
            self._record([self._failure(row, row.attempts, text, True, None)])
            count += 1
        return count

    def submit_due(self) -> int:
        """Claim due runs and submit them to dask; returns how many were submitted.

        Raises SchedulerUnreachableError (before claiming anything) when the scheduler
        cannot be reached.
        """
        room = self.max_active - len(self.active)
        if room <= 0:
            return 0
        rows = self.store.due(utcnow(), limit=room)
        if not rows:
            return 0
        client = self.client
        failed, batch = [], []
        for row in self.store.claim_many(rows, self.engine_id):
            try:
                batch.append(self._prepare(row))
            except WorkflowNotFoundError as error:
                failed.append(self._failure(row, row.attempts + 1, f"{error} (recorded with "
                                            f"version {row.version})", False, 0.0))
        self._record(failed)
        if batch:  # one call for all: the client's per-call cost is paid once
            futures = client.map(execute_run, [b[1] for b in batch], [b[2] for b in batch],
                                 key=[b[3] for b in batch], pure=False)
            now = time.monotonic()
            for (row, item, context, _key), future in zip(batch, futures, strict=True):
                self.active[row.id] = _Active(future, row, context.attempt, item.version, now,
                                              row.timeout_s)
                future.add_done_callback(lambda _future: self._wake.set())
        return len(batch)

    def _prepare(self, row: Any) -> tuple[Any, Any, RunContext, str]:
        attempt = row.attempts + 1
        item = self.registry.get(row.workflow)
        dataset = Path(row.dataset_path).name
        results_dir = run_results_dir(results_root(self.config), row.user, dataset, row.id)
        context = RunContext(run_id=row.id, workflow=row.workflow, version=item.version,
                             dataset_path=row.dataset_path, results_dir=str(results_dir),
                             user=row.user, dataset=dataset, dataset_id=row.dataset_id,
                             params=json.loads(row.params or "{}"), attempt=attempt,
                             sections=self._sections)
        return row, item, context, f"autotx-run-{row.id}-{attempt}-{uuid.uuid4().hex[:6]}"

    def poll(self, wait_s: float = 0.0) -> int:
        """Wait up to ``wait_s`` for a run to end; record ended, timed-out, cancelled runs.

        Everything that ended is written in one transaction. Returns how many runs ended.
        """
        if not self.active:
            return 0
        if wait_s > 0 and not any(a.future.done() for a in self.active.values()):
            self._wake.wait(wait_s)  # set by a future's done callback
        self._wake.clear()
        cancelled = {i for i, s in self.store.statuses(self.active).items() if s == CANCELLED}
        now = time.monotonic()
        outcomes, mails, ended = [], [], 0
        reports = self._gather([a.future for a in self.active.values()
                                if a.future.status == "finished"])
        for run_id, active in list(self.active.items()):
            if run_id in cancelled:
                active.future.cancel()
            elif active.future.done():
                outcome, sent = self._collect(active, reports.get(active.future.key))
                outcomes.append(outcome)
                mails.append((active.row, sent))
            elif active.timeout_s and now - active.started > active.timeout_s:
                active.future.cancel()
                outcomes.append(self._outcome(
                    active.row, active.attempt, TIMEOUT, now - active.started,
                    error=f"still running after its timeout of {active.timeout_s:g} s; "
                          "cancelled (raise [pipelines] timeout_seconds or the rule's)",
                    version=active.version,
                    event=("warning", f"{active.row.workflow} run {run_id} timed out")))
            else:
                continue
            del self.active[run_id]
            ended += 1
        written = dict(zip([o["run_id"] for o in outcomes], self._record(outcomes),
                           strict=True))
        for row, sent in mails:
            if written.get(row.id):
                for mail in sent:
                    self._mail(row, mail)
        return ended

    @staticmethod
    def _outcome(row: Any, attempt: int, status: str, duration_s: float | None, *,
                 error: str | None = None, version: str | None = None,
                 next_attempt_at: dt.datetime | None = None, steps: Any = (),
                 results: Any = None, event: tuple[str, str] | None = None) -> dict[str, Any]:
        return dict(run_id=row.id, attempt=attempt, status=status, duration_s=duration_s,
                    error=error, version=version, next_attempt_at=next_attempt_at,
                    steps=list(steps), results=results,
                    event=(event[0], event[1], row.dataset_id) if event else None)

    def _gather(self, futures: list[Any]) -> dict[str, Any]:
        """The results of finished futures, fetched in one call (by future key)."""
        if not futures:
            return {}
        try:
            results = self._client.gather(futures, errors="raise")
        except Exception:  # noqa: BLE001 - one bad result: fetch them one by one instead
            return {}
        return {f.key: r for f, r in zip(futures, results, strict=True)}

    def _collect(self, active: _Active, report: RunReport | None
                 ) -> tuple[dict[str, Any], list[dict[str, str]]]:
        row = active.row
        elapsed = time.monotonic() - active.started
        if report is None:
            try:
                report = active.future.result()
            except Exception as error:  # noqa: BLE001 - the worker's fate becomes the run's
                return self._failure(row, active.attempt, _explain_future_error(error),
                                     False, elapsed, active.version), []
        if report.status != FINISHED:
            return self._failure(row, active.attempt, report.error or "failed",
                                 report.retryable, report.duration_s, active.version,
                                 report.steps), []
        # the duration is the workflow's own (measured on the worker), without queueing
        return self._outcome(row, active.attempt, FINISHED, report.duration_s,
                             version=active.version,
                             steps=report.steps, results=report.results), report.mails

    def _failure(self, row: Any, attempt: int, text: str, retryable: bool,
                 duration_s: float | None, version: str | None = None,
                 steps: Any = ()) -> dict[str, Any]:
        """The outcome of a failed attempt: retried later when retryable and tries are left."""
        retry_at = None
        if retryable and attempt < row.max_attempts:
            delay = retry_delay(retry_settings(self.config, row.workflow), attempt)
            retry_at = utcnow() + dt.timedelta(seconds=delay)
            event = ("warning", f"{row.workflow} run {row.id} failed (attempt {attempt} of "
                     f"{row.max_attempts}), retried at {retry_at:%H:%M:%S} UTC: {text}")
        else:
            event = ("error", f"{row.workflow} run {row.id} failed: {text}")
        log.warning("%s run %s failed: %s", row.workflow, row.id, text)
        return self._outcome(row, attempt, ERROR, duration_s, error=text, version=version,
                             next_attempt_at=retry_at, steps=steps, event=event)

    def _record(self, outcomes: list[dict[str, Any]]) -> list[bool]:
        written = self.store.record_outcomes(outcomes) if outcomes else []
        for outcome, done in zip(outcomes, written, strict=True):
            if not done:
                continue
            if outcome["status"] == FINISHED:
                self.tally.finished += 1
            else:
                self.tally.failed += 1
                retry = outcome["next_attempt_at"]
                self.tally.errors.append(
                    f"run {outcome['run_id']} {outcome['status']}: {outcome['error']}"
                    + (f" (retried at {retry:%H:%M:%S} UTC)" if retry else ""))
        return written

    def _mail(self, row: Any, mail: dict[str, str]) -> None:
        if not row.user or not self.config.email.smtp_host:
            return
        from autotx_lib.transfer.notify import Notifier

        try:
            notifier = Notifier(self.config, self.journal)
            address = notifier.user_address(row.user)
            if address:
                self.journal.queue_mail("pipeline", address,
                                        self.config.email.subject_prefix + mail["subject"],
                                        mail["body"])
        except Exception:  # noqa: BLE001 - a mail never fails a finished run
            log.exception("cannot queue the mail of run %s", row.id)

    # --- loops -------------------------------------------------------------------------------

    def run_once(self, wait_s: float = 0.0) -> int:
        """Recover, submit what is due, record what ended; returns runs ended.

        An unreachable scheduler is logged and leaves the runs waiting.
        """
        self.start_engine()
        self._heartbeat()
        try:
            self.submit_due()
        except SchedulerUnreachableError as error:
            log.warning("%s", error)
        return self.poll(wait_s)

    def run_until_idle(self, timeout_s: float | None = None, poll_s: float = 0.2) -> Tally:
        """Run until nothing is due or in flight (retries planned later do not count).

        Returns what ended during this call. Raises SchedulerUnreachableError when runs
        are due and the scheduler is down.
        """
        before = Tally(self.tally.finished, self.tally.failed, list(self.tally.errors))
        self.start_engine()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            self._heartbeat()
            self.submit_due()
            if not self.active:
                return Tally(self.tally.finished - before.finished,
                             self.tally.failed - before.failed,
                             self.tally.errors[len(before.errors):])
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.active)} runs still in flight")
            self.poll(poll_s)

    def _heartbeat(self) -> None:
        """Every 10 s: say this engine is alive, and mark runs of engines that are not."""
        if self._registered and time.monotonic() - self._last_heartbeat > 10:
            self.store.engine_heartbeat(self.engine_id)
            self._last_heartbeat = time.monotonic()
            self.recover_orphans()

    def run_forever(self, poll_seconds: float = 2.0) -> None:
        """Loop until :meth:`stop`; journal or scheduler trouble is logged, never fatal."""
        while not self.stop_requested.is_set():
            try:
                ended = self.run_once(wait_s=poll_seconds if self.active else 0.0)
            except Exception:  # noqa: BLE001 - e.g. the database briefly unreachable
                log.exception("pipeline engine: trying again")
                ended = 0
            if not self.active and not ended:
                self.stop_requested.wait(poll_seconds)

    def start(self, poll_seconds: float = 2.0) -> threading.Thread:
        """Run :meth:`run_forever` in a daemon thread."""
        if self._thread is not None and self._thread.is_alive():
            return self._thread
        self.stop_requested.clear()
        self._thread = threading.Thread(target=self.run_forever, args=(poll_seconds,),
                                        name="autotx-pipelines", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the loop; runs in flight stay ``started`` and are marked by the next engine."""
        self.stop_requested.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._registered:
            self.store.engine_stopped(self.engine_id)
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None


def _dead_here(engine: Any) -> bool:
    """An engine of this host whose process is gone."""
    if engine.host != socket.gethostname() or engine.pid == os.getpid():
        return False
    try:
        import psutil

        return not psutil.pid_exists(engine.pid)
    except ImportError:
        return False


def _explain_future_error(error: BaseException) -> str:
    name = type(error).__name__
    if name == "KilledWorker":
        return ("worker died while running it (out of memory, or killed); the run is not "
                f"retried: give the workers more memory, or fix the workflow ({error})")[:2000]
    if name == "CancelledError":
        return "cancelled by dask (the scheduler restarted, or the client closed)"
    return ("the result could not be brought back from the worker: "
            + describe_error(error))


__all__ = ["PipelineEngine", "Tally", "record_run", "record_all_delivered", "cancel_run", "rerun", "results_root", "run_results_dir", "dedup_key",
           "retry_delay", "retry_settings", "shared_local_cluster", "SchedulerUnreachableError", "STARTED"]
