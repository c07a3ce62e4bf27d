"""What a workflow receives (:class:`RunContext`) and what a run sends back (:class:`RunReport`).

Both are plain, picklable data: the engine builds a context, a dask worker calls
:func:`execute_run` with it, and only the report (result items, step log, mails to
send) comes back. The engine alone writes the journal.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Exception types taken as passing conditions (retried with backoff) when they carry no
#: ``retryable`` attribute of their own.
RETRYABLE_TYPES: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)


@dataclass
class RunContext:
    """Everything a workflow function needs about its run.

    Attributes
    ----------
    run_id, attempt : int
    workflow, version : str
    dataset_path : str
        The delivered folder (read it; never write into it: it must match its manifest).
    results_dir : str
        A folder of this run's own (reports, previews); created before the call.
    user, dataset : str or None
        Owner and dataset name, when known.
    dataset_id : int or None
        The journal's dataset id, when the run is about a delivered dataset.
    params : dict
        From the rule or the command line.
    sections : dict
        Sections of the engine's configuration, as plain data (``sections["omero"]``):
        what a workflow needs of the agent's settings, read where the engine runs.
    """

    run_id: int
    workflow: str
    version: str
    dataset_path: str
    results_dir: str
    user: str | None = None
    dataset: str | None = None
    dataset_id: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1
    sections: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    mails: list[dict[str, str]] = field(default_factory=list)

    @property
    def path(self) -> Path:
        """``dataset_path`` as a Path."""
        return Path(self.dataset_path)

    @property
    def results(self) -> Path:
        """``results_dir`` as a Path."""
        return Path(self.results_dir)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[dict[str, Any]]:
        """Record a step: its start, duration, status and message (set ``record["message"]``).

        An exception inside marks the step ``error`` and goes on up.
        """
        record: dict[str, Any] = {"name": name, "started_at": dt.datetime.now(dt.UTC),
                                  "status": "finished", "message": None}
        started = time.perf_counter()
        try:
            yield record
        except BaseException as error:
            record["status"] = "error"
            record["message"] = record["message"] or describe_error(error)
            raise
        finally:
            record["duration_s"] = time.perf_counter() - started
            self.steps.append(record)

    def mail_user(self, subject: str, body: str) -> None:
        """Ask the engine to mail the dataset's owner (through the journal's outbox)."""
        self.mails.append({"subject": subject, "body": body})

    def map(self, function: Callable[..., Any], items: Sequence[Any]) -> list[Any]:
        """``[function(item) for item in items]``, fanned out as dask tasks when on a worker.

        On a dask worker the run leaves its worker slot while the tasks run
        (``worker_client``), so even a one-worker cluster makes progress.
        """
        client_scope = _worker_client()
        if client_scope is None:
            return [function(item) for item in items]
        with client_scope as client:
            futures = client.map(function, list(items), pure=False)
            return client.gather(futures)

    def worker_client(self) -> contextlib.AbstractContextManager[Any]:
        """A dask client for fanning out from inside the run (a null context off a worker)."""
        return _worker_client() or contextlib.nullcontext(None)


def _worker_client() -> contextlib.AbstractContextManager[Any] | None:
    try:
        from distributed import get_worker, worker_client
        get_worker()
    except (ImportError, ValueError):
        return None
    return worker_client()


@dataclass
class RunReport:
    """What an attempt sends back to the engine (plain data only)."""

    status: str  # finished or error
    results: list[tuple[str, str, str]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    mails: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None
    retryable: bool = False
    duration_s: float = 0.0


def describe_error(error: BaseException) -> str:
    """``Type: message`` (at most 2000 characters)."""
    text = str(error).strip() or repr(error)
    return f"{type(error).__name__}: {text}"[:2000]


def is_retryable(error: BaseException) -> bool:
    """Whether an error may heal by itself (an unmounted share, a lost connection)."""
    flag = getattr(error, "retryable", None)
    if flag is not None:
        return bool(flag)
    return isinstance(error, RETRYABLE_TYPES)


def execute_run(function: Callable[[RunContext], Any], context: RunContext) -> RunReport:
    """Run one attempt of a workflow (on a dask worker); never raises.

    The folder must exist; the function's return must be a mapping of plain values.
    """
    started = time.perf_counter()
    try:
        if not Path(context.dataset_path).exists():
            raise DatasetMissingError(
                f"{context.dataset_path} does not exist (deleted or moved, or its share is "
                "not mounted); when it is back: autotx pipelines rerun "
                f"{context.run_id}")
        Path(context.results_dir).mkdir(parents=True, exist_ok=True)
        returned = function(context)
        if returned is None:
            returned = {}
        if not isinstance(returned, dict):
            raise TypeError(f"the workflow returned a {type(returned).__name__}; return a dict "
                            "of result items (or None)")
        items = typed_items(returned)
    except Exception as error:  # noqa: BLE001 - every failure is reported, none escapes
        return RunReport("error", [], context.steps, [], describe_error(error),
                         is_retryable(error), time.perf_counter() - started)
    return RunReport("finished", items, context.steps, context.mails, None, False,
                     time.perf_counter() - started)


def typed_items(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(key, kind, json)`` of each result item; raises TypeError on what JSON cannot hold."""
    items = []
    for key, value in results.items():
        if isinstance(value, bool):
            kind = "bool"
        elif isinstance(value, int):
            kind = "int"
        elif isinstance(value, float):
            kind = "float"
        elif isinstance(value, str) or value is None:
            kind = "str"
        else:
            kind = "json"
        try:
            items.append((str(key), kind, json.dumps(value, allow_nan=True)))
        except (TypeError, ValueError):
            raise TypeError(f"result {key!r} is a {type(value).__name__}, which the log cannot "
                            "hold; return numbers, text, booleans, or lists/dicts of them"
                            ) from None
    return items


class DatasetMissingError(Exception):
    """The dataset's folder is gone before its run started (not retried)."""

    retryable = False


__all__ = ["RunContext", "RunReport", "execute_run", "describe_error", "is_retryable",
           "DatasetMissingError", "RETRYABLE_TYPES", "typed_items"]
