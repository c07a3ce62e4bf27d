"""The destination proves it is the destination: a marker file at its top.

A share that is not mounted usually leaves its empty mount point behind; writing there
fills the local disk and, worse, looks like a delivery. So the destination carries a
marker file, ``.autotx-destination``, holding its identity. The agent writes it at first
use (or ``autotx destination init`` does), records the identity in its journal, and
checks both before every dataset: a missing marker, or one with another identity, means
"not the destination (not mounted?)", and the dataset waits.

Every function takes a folder path or any :class:`~autotx_lib.transfer.destinations.Destination`
(an SMB share too); the marker logic itself lives in the protocol's base class.

Examples
--------
>>> marker = init_destination(Path("/mnt/storage"), journal, agent="LSM880")  # doctest: +SKIP
>>> check_destination(Path("/mnt/storage"), journal, agent="LSM880")          # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autotx_lib.errors import DestinationError, DestinationNotMountedError
from autotx_lib.journal import Journal
from autotx_lib.transfer.destinations.base import MARKER_NAME, Destination, other_marker_reason
from autotx_lib.transfer.destinations.url import open_destination

SETTING = "destination_id"


def read_marker(destination: Path | Destination) -> dict[str, Any] | None:
    """The marker's content, or None when there is no (readable, valid) marker."""
    try:
        return open_destination(destination).read_marker()
    except (OSError, ValueError, DestinationError):  # unreachable or unreadable: absent
        return None


def init_destination(destination: Path | Destination, journal: Journal, agent: str, *,
                     force: bool = False, setting: str = SETTING) -> dict[str, Any]:
    """Mark ``destination`` as this agent's destination (idempotent).

    Parameters
    ----------
    destination : Path or Destination
        The destination folder (mounted), or an opened destination.
    journal : Journal
        Where the destination's identity is recorded.
    agent : str
        Who wrote the marker (the host alias), stored in it.
    force : bool
        Accept a destination whose marker differs from the one this journal knows
        (the storage was replaced on purpose).
    setting : str
        The journal setting holding the identity (one per destination; the primary's by
        default).

    Returns
    -------
    marker : dict
        The marker in force (``id``, ``created_by``, ``created_at``).

    Raises
    ------
    DestinationError
        The folder is missing (DestinationMissing) or the marker cannot be written.
    DestinationNotMountedError
        The marker belongs to another destination and ``force`` is False.
    """
    dest = open_destination(destination)
    dest._check_reachable()
    expected = journal.get_setting(setting)
    marker = dest.read_marker()
    if marker is None:
        marker = dest.write_marker(agent)
    elif expected and marker["id"] != expected and not force:
        raise DestinationNotMountedError(dest.url, other_marker_reason(marker, expected) +
                                         " (storage replaced on purpose? then use --force)")
    journal.set_setting(setting, marker["id"])
    return marker


def check_destination(destination: Path | Destination, journal: Journal, agent: str, *,
                      setting: str = SETTING) -> None:
    """Raise unless ``destination`` is this agent's destination and writable.

    At first use (no marker, and none recorded in the journal) the marker is written.

    Raises
    ------
    DestinationMissing
        Missing, not mounted, server unreachable.
    DestinationNotMountedError
        The marker is missing although this agent wrote one before, or it names another
        destination: the share is most likely not mounted.
    DestinationReadOnly, DestinationPermission, DestinationAuth
        Not writable; credentials refused.
    """
    dest = open_destination(destination)
    expected = journal.get_setting(setting)
    marker = dest.check(expected)
    if marker is None or not expected:
        init_destination(dest, journal, agent, setting=setting)


__all__ = ["MARKER_NAME", "check_destination", "init_destination", "read_marker"]
