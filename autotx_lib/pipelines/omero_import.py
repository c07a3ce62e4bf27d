"""Import delivered datasets into OMERO, as journal jobs run outside the copy path.

:func:`omero_after_delivery` gives the agent a hook that only *queues* an
``omero-import`` job per delivered dataset (quick, never raises). A
:class:`~autotx_lib.pipelines.jobs.JobRunner` built by :func:`omero_runner` runs the jobs:
:func:`plan_import` turns a job into an :class:`ImportRequest` (paths, target by the
``[omero]`` rule, provenance), and the *import step* carries it out; the real step,
:func:`omero_import_step`, connects and calls
:func:`autotx_lib.imaging.omero.import_files`, which skips datasets already imported.
Tests inject a fake step.

Examples
--------
>>> hook = omero_after_delivery(config, journal)        # doctest: +SKIP
>>> agent = Agent(config, after_delivery=[hook])        # doctest: +SKIP
>>> omero_runner(config, journal).run_once()            # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotx_lib.config import Config, OmeroSettings
from autotx_lib.errors import AutotxError
from autotx_lib.imaging import omero as om
from autotx_lib.journal import Journal
from autotx_lib.pipelines.jobs import (
    CANCELLED,
    Job,
    JobRunner,
    PermanentJobError,
    RetryPolicy,
)

log = logging.getLogger("autotx.pipelines.omero")

KIND = "omero-import"


class DeliveredDataMissingError(AutotxError):
    """The delivered folder is not there (yet); retried (a share may be unmounted)."""

    retryable = True


@dataclass(frozen=True)
class ImportRequest:
    """Everything one import needs; what an import step receives."""

    job_id: int
    dataset: str  # user/name
    paths: tuple[str, ...]
    target: om.ContainerSpec
    transfer: str
    provenance: dict[str, str]
    is_plate: bool
    settings: OmeroSettings


ImportStep = Callable[[ImportRequest], dict[str, Any]]


def _iso(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else value


def omero_payload(config: Config, row: Any) -> dict[str, Any]:
    """What an ``omero-import`` job stores about its dataset (JSON-ready).

    The provenance is fixed at delivery time (instrument, agent version, digest).
    """
    return {
        "dataset_id": row.id, "user": row.user, "name": row.name, "dest_path": row.dest_path,
        "instrument": config.host_alias, "finished_at": _iso(row.finished_at),
        "provenance": om.provenance_map(row, instrument=config.host_alias),
    }


def queue_omero_import(config: Config, journal: Journal, row: Any) -> int | None:
    """Queue an import of a delivered dataset; returns the job id (None: already queued).

    A dataset that already has an ``omero-import`` job (not cancelled) is not queued twice.
    """
    existing = [j for j in journal.jobs_in(["created", "started", "finished", "error"], KIND)
                if j.dataset_id == row.id]
    if existing:
        return None
    return journal.add_job(KIND, row.id, omero_payload(config, row))


def omero_after_delivery(config: Config, journal: Journal | None = None
                         ) -> Callable[[Any], None]:
    """The hook to pass as ``Agent(after_delivery=[...])``: queue an import, never raise.

    Parameters
    ----------
    config : Config
        With ``[omero] enabled = true`` (otherwise the hook does nothing).
    journal : Journal, optional
        Defaults to the config's journal, opened on first use.
    """
    state: dict[str, Journal] = {}

    def queue_omero_import_job(row: Any) -> None:
        if not config.omero.enabled:
            return
        try:
            target_journal = journal or state.get("journal")
            if target_journal is None:
                target_journal = state["journal"] = Journal(config.journal_url)
            job_id = queue_omero_import(config, target_journal, row)
            if job_id is not None:
                target_journal.log("info", "job", f"{row.user}/{row.name}: OMERO import queued "
                                   f"(job {job_id})", row.id)
        except Exception:  # noqa: BLE001 - a hook never blocks or breaks transfers
            log.exception("cannot queue the OMERO import of %s/%s", getattr(row, "user", "?"),
                          getattr(row, "name", "?"))

    return queue_omero_import_job


def _list_files(folder: Path, limit: int = 10000) -> list[Path]:
    found: list[Path] = []
    for root, _dirs, files in os.walk(folder):
        found.extend(Path(root) / f for f in files)
        if len(found) >= limit:
            break
    return found


def plan_import(job: Job, settings: OmeroSettings) -> ImportRequest:
    """Turn an ``omero-import`` job into an :class:`ImportRequest`.

    Raises
    ------
    PermanentJobError
        The payload lacks what an import needs.
    DeliveredDataMissingError
        The delivered folder is missing (retried).
    """
    payload = job.payload
    dest = payload.get("dest_path")
    provenance = payload.get("provenance") or {}
    if not dest or not provenance.get("autotx.manifest_digest"):
        raise PermanentJobError(f"job {job.id} lacks the dataset's destination or manifest "
                                "digest; only verified, delivered datasets can be imported")
    folder = Path(dest)
    if not folder.exists():
        raise DeliveredDataMissingError(f"{folder} does not exist (is the destination mounted?); "
                                        "the import is retried later")
    files = [folder] if folder.is_file() else _list_files(folder)
    is_plate = om.looks_like_plate(files)
    try:
        target = om.target_for(settings, payload, is_plate=is_plate)
    except om.OmeroSettingsError as error:
        raise PermanentJobError(str(error)) from None
    return ImportRequest(job.id, f"{payload.get('user')}/{payload.get('name')}", (str(folder),),
                         target, settings.transfer, dict(provenance), is_plate, settings)


def omero_import_step(request: ImportRequest) -> dict[str, Any]:
    """The real step: connect, find or create the target, import (idempotent)."""
    with om.connect(settings=request.settings) as conn:
        target = om.ensure_container(conn, request.target.kind, *request.target.names)
        ids = om.import_files(conn, list(request.paths), target, transfer=request.transfer,
                              provenance=request.provenance)
    return {"target": str(target), "target_id": target.id,
            "kind": "Plate" if request.is_plate else "Image", "ids": ids,
            "already_imported": not ids}


def make_omero_handler(config: Config, import_step: ImportStep | None = None
                       ) -> Callable[[Job], dict[str, Any]]:
    """The job handler for ``omero-import``: plan, then run ``import_step``."""
    step = import_step or omero_import_step

    def run_omero_import(job: Job) -> dict[str, Any]:
        request = plan_import(job, config.omero)
        return step(request)

    return run_omero_import


def retry_policy(settings: OmeroSettings) -> RetryPolicy:
    """The ``[omero]`` section's retry settings as a :class:`RetryPolicy`."""
    return RetryPolicy(max_attempts=settings.max_attempts, first_seconds=settings.retry_seconds,
                       cap_seconds=settings.max_retry_seconds)


def omero_runner(config: Config, journal: Journal | None = None, *,
                 import_step: ImportStep | None = None, **kwargs: Any) -> JobRunner:
    """A :class:`JobRunner` for ``omero-import`` jobs (``kwargs`` go to JobRunner)."""
    return JobRunner(journal or Journal(config.journal_url),
                     {KIND: make_omero_handler(config, import_step)},
                     policy={KIND: retry_policy(config.omero)}, **kwargs)


__all__ = ["KIND", "ImportRequest", "ImportStep", "DeliveredDataMissingError", "omero_payload",
           "queue_omero_import", "omero_after_delivery", "plan_import", "omero_import_step",
           "make_omero_handler", "retry_policy", "omero_runner", "CANCELLED"]
