"""The destination proves it is the destination: a marker file at its top.

A share that is not mounted usually leaves its empty mount point behind; writing there
fills the local disk and, worse, looks like a delivery. So the destination carries a
marker file, ``.autotx-destination``, holding its identity. The agent writes it at first
use (or ``autotx destination init`` does), records the identity in its journal, and
checks both before every dataset: a missing marker, or one with another identity, means
"not the destination (not mounted?)", and the dataset waits.

Examples
--------
>>> marker = init_destination(Path("/mnt/storage"), journal, agent="LSM880")  # doctest: +SKIP
>>> check_destination(Path("/mnt/storage"), journal, agent="LSM880")          # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from pathlib import Path
from typing import Any

from autotx_lib.errors import DestinationError, DestinationNotMountedError
from autotx_lib.journal import Journal

MARKER_NAME = ".autotx-destination"
SETTING = "destination_id"


def read_marker(destination: Path) -> dict[str, Any] | None:
    """The marker's content, or None when there is no (readable, valid) marker."""
    try:
        data = json.loads((destination / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("id"), str) else None


def _write_marker(destination: Path, agent: str) -> dict[str, Any]:
    marker = {"id": str(uuid.uuid4()), "created_by": agent,
              "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "note": "written by autotx: marks this folder as a transfer destination; "
                      "do not remove (agents wait while it is missing)"}
    tmp = destination / f"{MARKER_NAME}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(marker, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, destination / MARKER_NAME)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise DestinationError(destination, f"cannot write its marker file ({error.strerror})"
                               ) from None
    return marker


def init_destination(destination: Path, journal: Journal, agent: str, *,
                     force: bool = False) -> dict[str, Any]:
    """Mark ``destination`` as this agent's destination (idempotent).

    Parameters
    ----------
    destination : Path
        The destination folder (mounted).
    journal : Journal
        Where the destination's identity is recorded.
    agent : str
        Who wrote the marker (the host alias), stored in it.
    force : bool
        Accept a destination whose marker differs from the one this journal knows
        (the storage was replaced on purpose).

    Returns
    -------
    marker : dict
        The marker in force (``id``, ``created_by``, ``created_at``).

    Raises
    ------
    DestinationError
        The folder is missing or the marker cannot be written.
    DestinationNotMountedError
        The marker belongs to another destination and ``force`` is False.
    """
    if not destination.is_dir():
        raise DestinationError(destination, "missing or not mounted")
    expected = journal.get_setting(SETTING)
    marker = read_marker(destination)
    if marker is None:
        marker = _write_marker(destination, agent)
    elif expected and marker["id"] != expected and not force:
        raise DestinationNotMountedError(destination, _other_marker(marker, expected) +
                                         " (storage replaced on purpose? then use --force)")
    journal.set_setting(SETTING, marker["id"])
    return marker


def _other_marker(marker: dict[str, Any], expected: str) -> str:
    return (f"its marker file names destination {marker['id']} (made by "
            f"{marker.get('created_by', '?')}), but this agent delivers to {expected}: another "
            "share seems to be mounted here")


def check_destination(destination: Path, journal: Journal, agent: str) -> None:
    """Raise unless ``destination`` is this agent's destination and writable.

    At first use (no marker, and none recorded in the journal) the marker is written.

    Raises
    ------
    DestinationError
        Missing or not writable.
    DestinationNotMountedError
        The marker is missing although this agent wrote one before, or it names another
        destination: the share is most likely not mounted.
    """
    if not destination.is_dir():
        raise DestinationError(destination, "missing or not mounted")
    expected = journal.get_setting(SETTING)
    marker = read_marker(destination)
    if marker is None and expected:
        raise DestinationNotMountedError(destination, f"its marker file {MARKER_NAME} is "
                                         f"missing (this agent wrote one there, id {expected}), "
                                         "so the share is probably not mounted")
    if marker is not None and expected and marker["id"] != expected:
        raise DestinationNotMountedError(destination, _other_marker(marker, expected))
    if not os.access(destination, os.W_OK):
        raise DestinationError(destination, "not writable")
    if marker is None or not expected:
        init_destination(destination, journal, agent)


__all__ = ["MARKER_NAME", "check_destination", "init_destination", "read_marker"]
