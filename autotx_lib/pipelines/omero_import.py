"""Import delivered datasets into OMERO: an ``omero-import`` run of the pipeline engine.

:func:`omero_after_delivery` gives the agent a hook that only *records* an
``omero-import`` pipeline run per delivered dataset (quick, never raises); the
:class:`~autotx_lib.pipelines.engine.PipelineEngine` runs it on dask like every other
workflow, with the ``[omero]`` section's retries (``max_attempts``, ``retry_seconds``,
``max_retry_seconds``), and the execution log shows it (``autotx pipelines log -w
omero-import``, ``autotx jobs``). The workflow
(:mod:`autotx_lib.pipelines.workflows.omero_import`) calls :func:`plan_import`, which
turns the run's payload into an :class:`ImportRequest` (paths, target by the ``[omero]``
rule, provenance fixed at delivery), and an *import step* carries it out; the real step,
:func:`omero_import_step`, connects and calls :func:`autotx_lib.imaging.omero.import_files`,
which skips datasets already imported. Tests inject a fake step with
:func:`~autotx_lib.pipelines.workflows.omero_import.omero_import_workflow`.

Journals from before this change may hold ``omero-import`` rows in the old ``jobs``
table: :func:`adopt_legacy_jobs` moves the unfinished ones onto the engine.

Examples
--------
>>> hook = omero_after_delivery(config, journal)        # doctest: +SKIP
>>> agent = Agent(config, after_delivery=[hook])        # doctest: +SKIP
>>> PipelineEngine(config, journal).run_until_idle()    # doctest: +SKIP
"""

from __future__ import annotations

import json
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

log = logging.getLogger("autotx.pipelines.omero")

KIND = "omero-import"


class PermanentImportError(AutotxError):
    """The run cannot succeed by trying again (bad payload, bad ``[omero]`` target)."""

    retryable = False


class DeliveredDataMissingError(AutotxError):
    """The delivered folder is not there (yet); retried (a share may be unmounted)."""

    retryable = True


@dataclass(frozen=True)
class ImportRequest:
    """Everything one import needs; what an import step receives."""

    run_id: int
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
    """What an ``omero-import`` run stores about its dataset (JSON-ready).

    The provenance is fixed at delivery time (instrument, agent version, digest).
    """
    return dataset_payload(row, config.host_alias)


def dataset_payload(row: Any, instrument: str | None) -> dict[str, Any]:
    """:func:`omero_payload` of a journal dataset row, given the instrument's alias."""
    return {
        "dataset_id": row.id, "user": row.user, "name": row.name, "dest_path": row.dest_path,
        "instrument": instrument, "finished_at": _iso(row.finished_at),
        "provenance": om.provenance_map(row, instrument=instrument),
    }


def queue_omero_import(config: Config, journal: Journal, row: Any,
                       registry: Any = None) -> int | None:
    """Record an ``omero-import`` run of a delivered dataset; its id (None: already there).

    A dataset (delivered folder) has one automatic import run: recording it again, by a
    second call or by a ``[[pipelines.rules]]`` rule naming ``omero-import``, adds nothing
    (``autotx pipelines rerun ID`` imports again; the import itself skips what is there).
    """
    from autotx_lib.journal.pipeline_runs import PipelineStore
    from autotx_lib.pipelines.engine import record_run
    from autotx_lib.pipelines.registry import registry_for

    run_id, created = record_run(
        PipelineStore(journal), registry or registry_for(config), KIND, row.dest_path,
        initiator=config.host_alias, settings=config.pipelines, user=row.user,
        dataset_id=row.id, params={"payload": omero_payload(config, row)}, automatic=True,
        max_attempts=config.omero.max_attempts)
    return run_id if created else None


def adopt_legacy_jobs(config: Config, journal: Journal, registry: Any = None) -> list[int]:
    """Move unfinished ``omero-import`` rows of the old ``jobs`` table onto the engine.

    Each becomes a pipeline run with the job's payload (its provenance as queued); the job
    is closed as ``cancelled`` with "moved to pipeline run N", so nothing runs twice and
    nothing queued before an upgrade is lost. Returns the new run ids.
    """
    from autotx_lib.journal.pipeline_runs import PipelineStore
    from autotx_lib.pipelines.engine import record_run
    from autotx_lib.pipelines.registry import registry_for

    store, created = PipelineStore(journal), []
    for job in journal.jobs_in(["created", "error", "started"], KIND):
        if job.state == "error" and job.next_attempt_at is None:
            continue  # it gave up: history, not work
        payload = json.loads(job.payload or "{}")
        if not payload.get("dest_path"):
            continue
        run_id, new = record_run(
            store, registry or registry_for(config), KIND, payload["dest_path"],
            initiator=payload.get("instrument") or config.host_alias,
            settings=config.pipelines, user=payload.get("user"), dataset_id=job.dataset_id,
            params={"payload": payload}, automatic=True,
            max_attempts=config.omero.max_attempts)
        journal.update_job(job.id, state="cancelled", next_attempt_at=None,
                           error=f"moved to pipeline run {run_id}")
        if new:
            created.append(run_id)
    return created


def omero_after_delivery(config: Config, journal: Journal | None = None
                         ) -> Callable[[Any], None]:
    """The hook to pass as ``Agent(after_delivery=[...])``: record an import run, never raise.

    Parameters
    ----------
    config : Config
        With ``[omero] enabled = true`` (otherwise the hook does nothing).
    journal : Journal, optional
        Defaults to the config's journal, opened on first use.
    """
    state: dict[str, Journal] = {}

    def queue_omero_import_run(row: Any) -> None:
        if not config.omero.enabled or not getattr(row, "dest_path", None):
            return
        try:
            target_journal = journal or state.get("journal")
            if target_journal is None:
                target_journal = state["journal"] = Journal(config.journal_url)
            run_id = queue_omero_import(config, target_journal, row)
            if run_id is not None:
                target_journal.log("info", "pipeline", f"{row.user}/{row.name}: OMERO import "
                                   f"queued (run {run_id})", row.id)
        except Exception:  # noqa: BLE001 - a hook never blocks or breaks transfers
            log.exception("cannot queue the OMERO import of %s/%s", getattr(row, "user", "?"),
                          getattr(row, "name", "?"))

    return queue_omero_import_run


def _list_files(folder: Path, limit: int = 10000) -> list[Path]:
    found: list[Path] = []
    for root, _dirs, files in os.walk(folder):
        found.extend(Path(root) / f for f in files)
        if len(found) >= limit:
            break
    return found


def plan_import(payload: dict[str, Any], settings: OmeroSettings, run_id: int = 0
                ) -> ImportRequest:
    """Turn an ``omero-import`` payload (:func:`omero_payload`) into an :class:`ImportRequest`.

    Raises
    ------
    PermanentImportError
        The payload lacks what an import needs, or the target rule does not fit.
    DeliveredDataMissingError
        The delivered folder is missing (retried).
    """
    dest = payload.get("dest_path")
    provenance = payload.get("provenance") or {}
    if not dest or not provenance.get("autotx.manifest_digest"):
        raise PermanentImportError(f"run {run_id} lacks the dataset's destination or manifest "
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
        raise PermanentImportError(str(error)) from None
    return ImportRequest(run_id, f"{payload.get('user')}/{payload.get('name')}", (str(folder),),
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


__all__ = ["KIND", "ImportRequest", "ImportStep", "DeliveredDataMissingError",
           "PermanentImportError", "omero_payload", "dataset_payload", "queue_omero_import", "adopt_legacy_jobs",
           "omero_after_delivery", "plan_import", "omero_import_step"]
