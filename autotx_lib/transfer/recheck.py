"""Re-read delivered datasets at the destination and check them against what was delivered.

Bit rot, tampering and deletion happen after delivery; ``autotx verify`` (and, with
``[verify] recheck_days``, the agent while it is idle) hashes the delivered copies again
and compares them with the journal's digests and the manifest (see
:mod:`autotx_lib.transfer.integrity`). Nothing is changed at the destination; what no
longer matches is reported, logged and mailed to the admin.

Examples
--------
>>> report = recheck_delivered(config, since=dt.datetime(2026, 11, 1))   # doctest: +SKIP
>>> [(c.user, c.name, c.problems) for c in report.failed]               # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from autotx_lib import journal as J
from autotx_lib.config import Config
from autotx_lib.errors import DestinationError
from autotx_lib.journal import Journal, utcnow
from autotx_lib.transfer.destination import check_destination
from autotx_lib.transfer.destinations import Destination
from autotx_lib.transfer.fanout import marker_setting, open_member_destination
from autotx_lib.transfer.integrity import (
    delivered_at,
    hash_disagreements,
    journal_disagreements,
    listing_disagreements,
    manifest_disagreements,
)

LAST_RECHECK_KEY = "recheck"  # {"at": ISO time of the last full round, "after_id": cursor}


@dataclass(frozen=True)
class DatasetCheck:
    """One delivered dataset, checked again: ``problems`` is empty when it still matches."""

    dataset_id: int
    user: str
    name: str
    dest_path: str
    files: int
    bytes: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every file still matches."""
        return not self.problems


@dataclass
class RecheckReport:
    """The datasets checked, in id order."""

    checked: list[DatasetCheck] = field(default_factory=list)

    @property
    def failed(self) -> list[DatasetCheck]:
        """Datasets that no longer match what was delivered."""
        return [c for c in self.checked if not c.ok]

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {"checked": [asdict(c) for c in self.checked], "failed": len(self.failed)}


def check_delivered_copy(row, files: list, on_file: Callable[[Any], None] | None = None,
                         destination: Destination | None = None) -> list[str]:
    """Every disagreement between one delivered copy and its journal rows and manifest.

    ``destination``: the protocol destination the copy is read through (None: a folder).
    """
    dest = delivered_at(row.dest_path or "", destination)
    try:
        if not dest.is_dir():
            return [f"the delivered copy {dest} is gone (deleted or moved)"]
    except DestinationError as error:
        return [f"the delivered copy {dest} cannot be reached ({error})"]
    manifest = delivered_at(row.manifest_path or "", destination)
    problems = journal_disagreements(files)
    if problems:
        return problems
    problems = manifest_disagreements(manifest, files, row.algorithm, row.manifest_digest)
    problems += listing_disagreements(dest, files, "delivered copy", mtimes=False,
                                      skip=manifest.name)
    return problems + hash_disagreements(dest, files, "delivered copy", row.algorithm, on_file)


def recheck_delivered(config: Config, *, journal: Journal | None = None,
                      since: dt.datetime | None = None, dataset_ids: list[int] | None = None,
                      limit: int | None = None, after_id: int = 0,
                      on_file: Callable[[Any], None] | None = None,
                      destination: str | None = None,
                      opened: Destination | None = None) -> RecheckReport:
    """Hash delivered datasets again and compare them with what was delivered.

    Parameters
    ----------
    config : Config
    journal : Journal, optional
        Defaults to the config's; failures are recorded there as ``recheck-failed`` events.
    since : datetime, optional
        Only datasets delivered at or after this time (naive UTC, as the journal's).
    dataset_ids : list of int, optional
        Only these datasets.
    limit, after_id : int, optional
        At most ``limit`` datasets with an id above ``after_id`` (the agent checks one at
        a time while idle).
    on_file : callable, optional
        Receives each file row once hashed (progress).
    destination : str, optional
        The name of a ``[[destinations]]`` entry to check (default: the primary). Its
        copies are found through the journal's delivery rows; an ``smb://`` destination
        is read through SMB.
    opened : Destination, optional
        That ``smb://`` destination already connected (the agent's); it stays open. By
        default it is opened here and closed at the end.

    Returns
    -------
    report : RecheckReport

    Raises
    ------
    DestinationError
        The destination is not there or not marked as this agent's (not mounted): nothing
        is reported as deleted then.
    ValueError
        ``destination`` names no configured destination.
    """
    own = journal is None
    journal = journal or Journal(config.journal_url)
    number, folder = _destination_folder(config, destination)
    remote = None if folder is not None else \
        opened or open_member_destination(config.targets[number])
    try:
        check_destination(folder if remote is None else remote, journal, config.host_alias,
                          setting=marker_setting(number, config.targets[number].name))
        rows = [r for r in journal.datasets_in([J.DONE]) if r.dest_path and r.id > after_id
                and (since is None or (r.finished_at and _utc(r.finished_at) >= _utc(since)))
                and (dataset_ids is None or r.id in dataset_ids)]
        if number:
            rows = _copies_at(journal, rows, config.targets[number].name)
        report = RecheckReport()
        for row in rows[:limit]:
            files = journal.files_of(row.id)
            problems = check_delivered_copy(row, files, on_file, remote)
            report.checked.append(DatasetCheck(row.id, row.user, row.name, row.dest_path,
                                               len(files), sum(f.size for f in files), problems))
            if problems:
                journal.log("error", "recheck-failed", f"{row.user}/{row.name} at "
                            f"{row.dest_path} no longer matches what was delivered: "
                            + "; ".join(problems[:5]), row.id)
        return report
    finally:
        if remote is not None and opened is None:
            remote.close()
        if own:
            journal.close()


def _destination_folder(config: Config, name: str | None) -> tuple[int, Path | None]:
    """(position, folder) of the destination to check: the named one, or the primary;
    the folder is None for a destination reached through its protocol (smb://)."""
    names = [t.name for t in config.targets]
    if name is None:
        return 0, config.targets[0].local_path
    if name not in names:
        raise ValueError(f"no destination named {name!r}: the configured ones are "
                         f"{', '.join(names)}")
    number = names.index(name)
    return number, config.targets[number].local_path


def _copies_at(journal: Journal, rows: list, name: str) -> list:
    """The datasets' copies at one destination, as rows ``check_delivered_copy`` reads."""
    copies = journal.deliveries_for([r.id for r in rows])
    found = []
    for row in rows:
        delivery = next((d for d in copies[row.id] if d.destination == name
                         and d.state == "delivered"), None)
        if delivery is not None:
            found.append(SimpleNamespace(**{**row._asdict(), "dest_path": delivery.dest_path,
                                            "manifest_path": delivery.manifest_path,
                                            "manifest_digest": delivery.manifest_digest}))
    return found


def _utc(value: dt.datetime) -> dt.datetime:
    """Naive or aware, as aware UTC (the journal's times are UTC)."""
    return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)


def recheck_key(destination: str | None = None) -> str:
    """The journal setting holding the recheck round of one destination (the primary's
    by default)."""
    return LAST_RECHECK_KEY if destination is None else f"{LAST_RECHECK_KEY}:{destination}"


def recheck_due(journal: Journal, every_days: float, now: dt.datetime | None = None,
                destination: str | None = None) -> int | None:
    """The cursor to go on from when a recheck round is due (None: not due)."""
    if every_days <= 0:
        return None
    state = journal.get_setting(recheck_key(destination)) or {}
    after_id = int(state.get("after_id", 0))
    if after_id:  # a round is under way
        return after_id
    last = state.get("at")
    now = now or utcnow()
    if last and _utc(now) - _utc(dt.datetime.fromisoformat(last)) < dt.timedelta(days=every_days):
        return None
    return 0


def record_progress(journal: Journal, report: RecheckReport, after_id: int,
                    destination: str | None = None) -> None:
    """Move the cursor past what was checked; close the round when nothing was left."""
    key = recheck_key(destination)
    if report.checked:
        state = journal.get_setting(key) or {}
        journal.set_setting(key, {**state, "after_id": report.checked[-1].dataset_id})
    else:
        journal.set_setting(key, {"at": utcnow().isoformat(), "after_id": 0})
        where = f" at destination {destination}" if destination else ""
        journal.log("info", "recheck-round", f"every delivered dataset{where} was checked again")


__all__ = ["DatasetCheck", "RecheckReport", "check_delivered_copy", "recheck_delivered",
           "recheck_due", "recheck_key", "record_progress"]
