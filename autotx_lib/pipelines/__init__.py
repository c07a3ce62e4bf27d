"""What runs after a dataset arrives: post-delivery jobs (first of them: OMERO import).

The glue between :mod:`autotx_lib.transfer` and :mod:`autotx_lib.imaging`. The agent
only queues jobs (:func:`pipeline_hooks`); a :class:`~autotx_lib.pipelines.jobs.JobRunner`
runs them outside the copy path, in a thread of the agent (``[omero] run_in_agent``) or
with ``autotx jobs run``.
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

log = logging.getLogger("autotx.pipelines")

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
        log.info("post-delivery job runner started")
        return runner


__all__ = ["pipeline_hooks", "job_runner", "start_background_runner"]
