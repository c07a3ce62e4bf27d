"""What runs after a dataset arrives: workflows on dask, and the OMERO import job.

The glue between :mod:`autotx_lib.transfer` and :mod:`autotx_lib.imaging`. The agent
only records what is due (:func:`pipeline_hooks`):

- ``[[pipelines.rules]]`` record a workflow run per matching delivered dataset; a
  :class:`~autotx_lib.pipelines.engine.PipelineEngine` runs them on dask distributed
  (a thread of the agent with ``[pipelines] run_in_agent``, or ``autotx pipelines serve``),
  with an execution log and statistics (:mod:`autotx_lib.pipelines.log`);
- ``[omero] enabled`` queues an OMERO import job, run by a
  :class:`~autotx_lib.pipelines.jobs.JobRunner` (``autotx jobs``) as before.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable
from typing import Any

from autotx_lib.config import Config
from autotx_lib.journal import Journal
from autotx_lib.pipelines.jobs import JobRunner

_log = logging.getLogger("autotx.pipelines")

_runners: dict[str, JobRunner] = {}
_runners_lock = threading.Lock()


def job_runner(config: Config, journal: Journal | None = None, **kwargs: Any) -> JobRunner:
    """A runner for every job kind the configuration enables (``kwargs`` go to JobRunner).

    Examples
    --------
    >>> job_runner(config).run_once()        # doctest: +SKIP
    """
    from autotx_lib.pipelines import omero_import

    journal = journal or Journal(config.journal_url)
    handlers: dict[str, Callable] = {}
    policies = {}
    if config.omero.enabled:
        handlers[omero_import.KIND] = omero_import.make_omero_handler(
            config, kwargs.pop("import_step", None))
        policies[omero_import.KIND] = omero_import.retry_policy(config.omero)
    kwargs.pop("import_step", None)
    return JobRunner(journal, handlers, policy=policies, **kwargs)


def pipeline_hooks(config: Config, journal: Journal | None = None, *,
                   start_runner: bool = True) -> list[Callable[[Any], None]]:
    """The after-delivery hooks for ``Agent(after_delivery=...)`` that ``config`` enables.

    With ``[omero] enabled`` this queues an import per delivered dataset and, when
    ``[omero] run_in_agent`` (the default) and ``start_runner``, starts one job runner
    thread in this process (stopped at exit); otherwise ``autotx jobs run`` runs the jobs.
    Empty when nothing is enabled.
    """
    hooks: list[Callable[[Any], None]] = []
    if config.pipelines.rules:
        hooks.append(pipelines_after_delivery(config, journal))
        if start_runner and config.pipelines.run_in_agent:
            start_background_engine(config)
    if config.omero.enabled:
        from autotx_lib.pipelines.omero_import import omero_after_delivery

        hooks.append(omero_after_delivery(config, journal))
        if start_runner and config.omero.run_in_agent:
            start_background_runner(config)
    return hooks


def start_background_runner(config: Config, poll_seconds: float = 10.0) -> JobRunner:
    """Start (once per journal) a job runner thread in this process; returns it."""
    with _runners_lock:
        runner = _runners.get(config.journal_url)
        if runner is None:
            runner = _runners[config.journal_url] = job_runner(config)
            atexit.register(runner.stop, 2.0)
        runner.start(poll_seconds)
        _log.info("post-delivery job runner started")
        return runner


_engines: dict[str, Any] = {}


def pipelines_after_delivery(config: Config, journal: Journal | None = None
                             ) -> Callable[[Any], None]:
    """The hook for ``Agent(after_delivery=...)``: record the runs the rules ask for.

    Quick and never raising: rules look at names only (the journal's file list), and a
    run is a journal row; nothing runs on the copy path. Two agents recording the same
    run (same workflow, same delivered folder) share one row.
    """
    from autotx_lib.journal.pipeline_runs import PipelineStore
    from autotx_lib.pipelines.engine import record_run
    from autotx_lib.pipelines.registry import registry_for
    from autotx_lib.pipelines.rules import DatasetInfo, matching_rules

    state: dict[str, Any] = {}

    def record_pipeline_runs(row: Any) -> None:
        try:
            if "store" not in state:
                state["journal"] = journal or Journal(config.journal_url)
                state["store"] = PipelineStore(state["journal"])
                state["registry"] = registry_for(config)
            if not row.dest_path:
                return
            names = tuple(r.relpath.rsplit("/", 1)[-1]
                          for r in state["journal"].files_of(row.id, limit=20000))
            info = DatasetInfo(user=row.user, name=row.name, path=row.dest_path,
                               instrument=config.host_alias, files=names, dataset_id=row.id)
            for rule in matching_rules(config.pipelines.rules, info):
                run_id, created = record_run(
                    state["store"], state["registry"], rule.workflow, row.dest_path,
                    initiator=config.host_alias, settings=config.pipelines, user=row.user,
                    dataset_id=row.id, params=rule.params, timeout_s=rule.timeout_seconds,
                    automatic=True)
                if created:
                    state["journal"].log("info", "pipeline", f"{row.user}/{row.name}: "
                                         f"{rule.workflow} run {run_id} due", row.id)
        except Exception:  # noqa: BLE001 - a hook never blocks or breaks transfers
            _log.exception("cannot record the pipeline runs of %s/%s",
                          getattr(row, "user", "?"), getattr(row, "name", "?"))

    return record_pipeline_runs


def start_background_engine(config: Config, poll_seconds: float = 2.0) -> Any:
    """Start (once per journal) a pipeline engine thread in this process; returns it."""
    from autotx_lib.pipelines.engine import PipelineEngine

    with _runners_lock:
        engine = _engines.get(config.journal_url)
        if engine is None:
            engine = _engines[config.journal_url] = PipelineEngine(config)
            atexit.register(engine.stop, 2.0)
        engine.start(poll_seconds)
        _log.info("pipeline engine started")
        return engine


__all__ = ["pipeline_hooks", "job_runner", "start_background_runner",
           "pipelines_after_delivery", "start_background_engine"]
