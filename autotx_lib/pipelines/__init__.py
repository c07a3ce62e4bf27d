"""What runs after a dataset arrives: workflows on dask, with an execution log.

The glue between :mod:`autotx_lib.transfer` and :mod:`autotx_lib.imaging`. The agent
only records what is due (:func:`pipeline_hooks`):

- ``[[pipelines.rules]]`` record a workflow run per matching delivered dataset;
- ``[omero] enabled`` records an ``omero-import`` run per delivered dataset
  (:mod:`autotx_lib.pipelines.omero_import`).

One :class:`~autotx_lib.pipelines.engine.PipelineEngine` runs them all on dask
distributed (a thread of the agent with ``[pipelines] run_in_agent`` or ``[omero]
run_in_agent``, or ``autotx pipelines serve``), with an execution log and statistics
(:mod:`autotx_lib.pipelines.log`).
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable
from typing import Any

from autotx_lib.config import Config
from autotx_lib.journal import Journal

_log = logging.getLogger("autotx.pipelines")

_engines_lock = threading.Lock()


def pipeline_hooks(config: Config, journal: Journal | None = None, *,
                   start_runner: bool = True) -> list[Callable[[Any], None]]:
    """The after-delivery hooks for ``Agent(after_delivery=...)`` that ``config`` enables.

    ``[[pipelines.rules]]`` record the runs they match; ``[omero] enabled`` records an
    import run per delivered dataset (and moves import jobs left in the old ``jobs``
    table onto the engine). With ``start_runner`` and ``run_in_agent`` (of
    ``[pipelines]`` for rules, of ``[omero]`` for the import) one engine thread starts in
    this process (stopped at exit); otherwise ``autotx pipelines serve`` runs them.
    Empty when nothing is enabled.
    """
    hooks: list[Callable[[Any], None]] = []
    if config.pipelines.rules:
        hooks.append(pipelines_after_delivery(config, journal))
        if start_runner and config.pipelines.run_in_agent:
            start_background_engine(config)
    if config.omero.enabled:
        from autotx_lib.pipelines.omero_import import adopt_legacy_jobs, omero_after_delivery

        hooks.append(omero_after_delivery(config, journal))
        try:
            adopt_legacy_jobs(config, journal or Journal(config.journal_url))
        except Exception:  # noqa: BLE001 - never stops the agent; tried again next start
            _log.exception("cannot move the old OMERO import jobs onto the pipeline engine")
        if start_runner and config.omero.run_in_agent:
            start_background_engine(config)  # once per journal: shared with the rules' runs
    return hooks


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

    with _engines_lock:
        engine = _engines.get(config.journal_url)
        if engine is None:
            engine = _engines[config.journal_url] = PipelineEngine(config)
            atexit.register(engine.stop, 2.0)
        engine.start(poll_seconds)
        _log.info("pipeline engine started")
        return engine


__all__ = ["pipeline_hooks", "pipelines_after_delivery", "start_background_engine"]
