"""The grace area (``managed/done/``): what rests there, how old it is, and explicit purges.

After a dataset was delivered and verified, the agent moves the original to
``managed/done/<user>/<stamp>__<dataset>`` and leaves it there. :func:`grace_report`
lists those folders with their age and size and flags the ones past
``grace_period_days``; the agent mails that list to the admin (rate limited). Nothing is
ever deleted by the agent: only :func:`purge`, called explicitly (``autotx grace purge
--older-than DAYS --yes``), removes originals, and only those where the journal's file
digests, the delivered copy's manifest, and fresh hashes of both the delivered copy and the
original all agree (see :func:`purge`).

Examples
--------
>>> report = grace_report(config)                            # doctest: +SKIP
>>> [(e.user, e.name, round(e.age_days)) for e in report.expired]   # doctest: +SKIP
>>> purge(config, 60).candidates                             # dry run: deletes nothing  # doctest: +SKIP
>>> purge(config, 60, dry_run=False).removed                 # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autotx_lib import journal as J
from autotx_lib.config import Config
from autotx_lib.errors import DestinationError
from autotx_lib.journal import Journal, as_utc
from autotx_lib.transfer.destinations import Destination
from autotx_lib.transfer.fanout import open_member_destination
from autotx_lib.transfer.integrity import (
    delivered_at,
    hash_disagreements,
    journal_disagreements,
    listing_disagreements,
    manifest_disagreements,
)
from autotx_lib.transfer.layout import ManagedFolders

STAMP_FORMAT = "%Y-%m-%d_%H-%M-%S"  # layout.make_stamp, local time


@dataclass(frozen=True)
class GraceEntry:
    """One original resting in ``managed/done/<user>/``.

    ``age_days`` counts from the delivery time the journal recorded (``finished_at``), else
    from the folder's time stamp, else from its modification time (``age_source`` says
    which). ``dest_path`` and ``manifest_path`` are the delivered copy, when the journal
    knows it.
    """

    path: str
    user: str
    name: str
    stamp: str | None
    age_days: float
    age_source: str  # "delivered", "stamp" or "mtime"
    size_bytes: int
    file_count: int
    expired: bool
    dataset_id: int | None = None
    dest_path: str | None = None
    manifest_path: str | None = None
    algorithm: str | None = None
    manifest_digest: str | None = None


@dataclass(frozen=True)
class GraceReport:
    """Every folder in the grace area, oldest first, with the grace period it was judged by."""

    done_folder: str
    grace_period_days: int
    generated_at: dt.datetime
    entries: list[GraceEntry] = field(default_factory=list)

    @property
    def expired(self) -> list[GraceEntry]:
        """Entries older than the grace period."""
        return [e for e in self.entries if e.expired]

    @property
    def by_user(self) -> dict[str, list[GraceEntry]]:
        """Entries grouped by user (users sorted, entries oldest first)."""
        groups: dict[str, list[GraceEntry]] = {}
        for entry in sorted(self.entries, key=lambda e: (e.user, -e.age_days)):
            groups.setdefault(entry.user, []).append(entry)
        return groups

    @property
    def total_bytes(self) -> int:
        """Size of everything in the grace area."""
        return sum(e.size_bytes for e in self.entries)

    @property
    def expired_bytes(self) -> int:
        """Size of the expired entries (what a purge at the grace period could free)."""
        return sum(e.size_bytes for e in self.expired)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "done_folder": self.done_folder,
            "grace_period_days": self.grace_period_days,
            "generated_at": _utc_iso(self.generated_at),  # naive is local; JSON says UTC
            "total_bytes": self.total_bytes,
            "expired_bytes": self.expired_bytes,
            "expired_count": len(self.expired),
            "entries": [asdict(e) for e in self.entries],
        }


@dataclass(frozen=True)
class PurgeSkip:
    """A candidate that was not removed, and why: one line per file that disagrees."""

    entry: GraceEntry
    reasons: list[str]

    @property
    def reason(self) -> str:
        """The reasons on one line (the first five, and how many more)."""
        more = len(self.reasons) - 5
        return "; ".join(self.reasons[:5]) + (f"; and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class PurgeProgress:
    """Hashing progress of a real purge, handed to the ``on_progress`` callback per file.

    The totals cover both sides (original and delivered copy) of every candidate that
    passed the checks without hashing.
    """

    entry: GraceEntry
    relpath: str
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int


@dataclass
class PurgeResult:
    """What :func:`purge` found and did.

    ``candidates`` are the folders older than ``older_than_days``; with ``dry_run`` nothing
    was removed and ``removed`` is empty. ``skipped`` are candidates that are (or would be)
    kept, each with its reasons.
    """

    older_than_days: float
    dry_run: bool
    candidates: list[GraceEntry] = field(default_factory=list)
    removed: list[GraceEntry] = field(default_factory=list)
    skipped: list[PurgeSkip] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        """Bytes removed (0 in a dry run)."""
        return sum(e.size_bytes for e in self.removed)

    @property
    def ok(self) -> bool:
        """True when no candidate was skipped."""
        return not self.skipped

    @property
    def hashed(self) -> bool:
        """True when files were hashed (a real run); a dry run compares without hashing."""
        return not self.dry_run

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "older_than_days": self.older_than_days, "dry_run": self.dry_run,
            "hashed": self.hashed,
            "candidates": [asdict(e) for e in self.candidates],
            "removed": [asdict(e) for e in self.removed],
            "skipped": [{"entry": asdict(s.entry), "reason": s.reason, "reasons": s.reasons}
                        for s in self.skipped],
            "freed_bytes": self.freed_bytes,
        }


def _utc_iso(local: dt.datetime) -> str:
    """A naive local time (the report's ``now``) as ISO text in UTC, with its zone."""
    return local.astimezone(dt.UTC).isoformat()


def _local_from_utc(value: dt.datetime) -> dt.datetime:
    """A UTC time from the journal as naive local time (stamps and ``now`` are local)."""
    return as_utc(value).astimezone().replace(tzinfo=None)


def _parse_stamp(folder_name: str) -> tuple[str | None, str]:
    """``2026-11-23_22-41-07__exp1`` -> (stamp, dataset name); (None, name) if no stamp."""
    stamp, sep, name = folder_name.partition("__")
    if sep:
        try:
            dt.datetime.strptime(stamp, STAMP_FORMAT)
            return stamp, name
        except ValueError:
            pass
    return None, folder_name


def _tree_size(folder: Path) -> tuple[int, int]:
    """(bytes, files) below ``folder``, symlinks not followed."""
    total = count = 0
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    else:
                        total += entry.stat(follow_symlinks=False).st_size
                        count += 1
        except OSError:
            continue
    return total, count


def _done_rows(journal: Journal) -> dict[str, Any]:
    """Journal rows of delivered datasets, by the path of their original in grace."""
    return {os.path.abspath(row.final_path): row for row in journal.datasets_in([J.DONE])
            if row.final_path}


def grace_report(config: Config, journal: Journal | None = None,
                 now: dt.datetime | None = None) -> GraceReport:
    """List what rests in ``managed/done/``, by user, with age, size and expiry.

    Parameters
    ----------
    config : Config
        ``managed`` locates the grace area; ``grace_period_days`` decides what is expired.
    journal : Journal, optional
        Where delivery times and delivered copies are looked up; defaults to the config's.
    now : datetime, optional
        Naive local time to measure ages against (default: now).

    Returns
    -------
    report : GraceReport
        Entries oldest first; a folder the journal does not know is still listed (age from
        its stamp or modification time, no delivered copy).
    """
    now = now or dt.datetime.now()
    done = ManagedFolders(config.managed).done
    own_journal = journal is None
    journal = journal or Journal(config.journal_url)
    try:
        rows = _done_rows(journal)
    finally:
        if own_journal:
            journal.close()
    entries = []
    user_dirs = sorted(p for p in done.iterdir() if p.is_dir()) if done.is_dir() else []
    for user_dir in user_dirs:
        for folder in sorted(user_dir.iterdir()):
            if not folder.is_dir() or folder.is_symlink():
                continue
            entries.append(_entry(folder, user_dir.name, rows.get(os.path.abspath(folder)),
                                  config.grace_period_days, now))
    entries.sort(key=lambda e: -e.age_days)
    return GraceReport(str(done), config.grace_period_days, now, entries)


def _entry(folder: Path, user: str, row, grace_days: int, now: dt.datetime) -> GraceEntry:
    stamp, name = _parse_stamp(folder.name)
    if row is not None and row.finished_at is not None:
        since, source = _local_from_utc(row.finished_at), "delivered"
    elif stamp is not None:
        since, source = dt.datetime.strptime(stamp, STAMP_FORMAT), "stamp"
    else:
        since, source = dt.datetime.fromtimestamp(folder.stat().st_mtime), "mtime"
    age_days = max((now - since).total_seconds() / 86400.0, 0.0)
    if row is not None and row.state == J.DONE:  # the journal counted it: no walk needed
        size, count = row.total_bytes, row.total_files
    else:
        size, count = _tree_size(folder)
    return GraceEntry(
        path=str(folder), user=user, name=row.name if row is not None else name, stamp=stamp,
        age_days=age_days, age_source=source, size_bytes=size, file_count=count,
        expired=age_days > grace_days,
        dataset_id=row.id if row is not None else None,
        dest_path=row.dest_path if row is not None else None,
        manifest_path=row.manifest_path if row is not None else None,
        algorithm=row.algorithm if row is not None else None,
        manifest_digest=row.manifest_digest if row is not None else None)


def _record_reason(entry: GraceEntry, done: Path, remote: Destination | None) -> str | None:
    """Why ``entry`` cannot even be compared (None: the journal and both folders are there)."""
    folder = Path(entry.path)
    if folder.is_symlink() or Path(os.path.abspath(folder)).parent.parent != \
            Path(os.path.abspath(done)):
        return f"{folder} is not a folder directly inside {done}/<user>/"
    if entry.dataset_id is None or not entry.dest_path or not entry.manifest_path:
        return ("the journal has no record of its delivered copy, so it cannot be verified; "
                "check it by hand and remove it yourself if it is safe")
    dest = delivered_at(entry.dest_path, remote)
    manifest = delivered_at(entry.manifest_path, remote)
    if not dest.is_dir():
        return f"its delivered copy {dest} is missing (destination not mounted, or moved)"
    if not manifest.is_file():
        return f"the manifest {manifest} of its delivered copy is missing"
    return None


def _cheap_reasons(entry: GraceEntry, done: Path, rows: list[Any],
                   remote: Destination | None) -> list[str]:
    """Every disagreement found without hashing a data file (empty: go on to hash)."""
    try:
        reason = _record_reason(entry, done, remote)
    except DestinationError as error:  # an smb:// primary that does not answer
        return [f"its delivered copy cannot be reached ({error})"]
    if reason is not None:
        return [reason]
    reasons = journal_disagreements(rows)
    if reasons:  # without every digest the other comparisons mean little
        return reasons
    manifest = delivered_at(entry.manifest_path or "", remote)
    return (manifest_disagreements(manifest, rows, entry.algorithm or "xxh3_128",
                                   entry.manifest_digest)
            + listing_disagreements(Path(entry.path), rows, "original", mtimes=True)
            + listing_disagreements(delivered_at(entry.dest_path or "", remote), rows,
                                    "delivered copy", mtimes=False, skip=manifest.name))


def _hash_reasons(entry: GraceEntry, rows: list[Any], remote: Destination | None,
                  hashed: Callable[[GraceEntry, Any], None]) -> list[str]:
    """Hash every file of the original and of the delivered copy against the journal."""
    algorithm = entry.algorithm or "xxh3_128"
    return [reason for side, folder in (("original", Path(entry.path)),
                                        ("delivered copy",
                                         delivered_at(entry.dest_path or "", remote)))
            for reason in hash_disagreements(folder, rows, side, algorithm,
                                             lambda row: hashed(entry, row))]


class _ProgressCounter:
    """Counts hashed files and bytes and hands each step to the caller's callback."""

    def __init__(self, files_total: int, bytes_total: int,
                 callback: Callable[[PurgeProgress], None] | None):
        self.files_total, self.bytes_total, self.callback = files_total, bytes_total, callback
        self.files_done = self.bytes_done = 0

    def __call__(self, entry: GraceEntry, row: Any) -> None:
        self.files_done += 1
        self.bytes_done += row.size
        if self.callback is not None:
            self.callback(PurgeProgress(entry, row.relpath, self.files_done, self.files_total,
                                        self.bytes_done, self.bytes_total))


def _keep(result: PurgeResult, journal: Journal, entry: GraceEntry, reasons: list[str],
          level: str = "warning") -> None:
    skip = PurgeSkip(entry, reasons)
    result.skipped.append(skip)
    if not result.dry_run:
        journal.log(level, "grace-kept", f"{entry.path} kept: {skip.reason}", entry.dataset_id)


def _remove(result: PurgeResult, journal: Journal, entry: GraceEntry, rows: list[Any],
            remote: Destination | None, hashed: _ProgressCounter) -> None:
    """Hash both sides, look once more for changes made meanwhile, then remove the original."""
    reasons = _hash_reasons(entry, rows, remote, hashed) or \
        listing_disagreements(Path(entry.path), rows, "original", mtimes=True)
    if reasons:
        _keep(result, journal, entry, reasons)
        return
    try:
        shutil.rmtree(entry.path)
    except OSError as error:
        _keep(result, journal, entry, [f"could not be removed completely ({error})"], "error")
        return
    result.removed.append(entry)
    journal.log("info", "grace-purged", f"{entry.path} removed ({entry.file_count} files, "
                f"{entry.size_bytes} bytes, {entry.age_days:.1f} days old); it and its "
                f"delivered copy {entry.dest_path} hashed as the journal recorded, and "
                f"{entry.manifest_path} agreed", entry.dataset_id)


def purge(config: Config, older_than_days: float, *, dry_run: bool = True,
          journal: Journal | None = None, now: dt.datetime | None = None,
          on_progress: Callable[[PurgeProgress], None] | None = None) -> PurgeResult:
    """Remove originals from the grace area that are older than ``older_than_days``.

    Parameters
    ----------
    config : Config
    older_than_days : float
        Only folders whose age (see :class:`GraceEntry`) exceeds this are candidates.
    dry_run : bool
        True (default): remove nothing; run every check that needs no hashing and name
        what would be kept. False: also hash every file of the original and of the
        delivered copy, and remove the original only when nothing disagrees.
    journal : Journal, optional
        Defaults to the config's; each removal is recorded there as a ``grace-purged``
        event, each original kept as ``grace-kept``.
    now : datetime, optional
        Naive local time to measure ages against.
    on_progress : callable, optional
        Receives a :class:`PurgeProgress` after each file hashed (real runs only).

    Returns
    -------
    result : PurgeResult
        Each original kept has one line per disagreement, naming the file and why.

    Raises
    ------
    ValueError
        When ``older_than_days`` is negative.

    Notes
    -----
    The journal's file rows (relpath, size, mtime, digest) are the reference. Without
    hashing: every row has a digest; the manifest is the file delivered (its digest) and
    lists exactly the journal's files with the journal's digests; the original holds
    exactly those files with the journal's sizes and mtimes; the delivered copy holds
    exactly those files (besides the manifest) with the journal's sizes. Then, in a real
    run, every file of both sides is hashed and must equal the journal's digest, and the
    original is listed once more just before it is removed. Any disagreement keeps it.
    """
    if older_than_days < 0:
        raise ValueError(f"older_than_days must be 0 or more, got {older_than_days}")
    own_journal = journal is None
    journal = journal or Journal(config.journal_url)
    # an smb:// primary: the delivered copies are read through its protocol
    remote = open_member_destination(config.primary) if config.destination is None else None
    try:
        report = grace_report(config, journal, now)
        result = PurgeResult(older_than_days, dry_run)
        result.candidates = [e for e in report.entries if e.age_days > older_than_days]
        passed = []
        for entry in result.candidates:
            rows = journal.files_of(entry.dataset_id) if entry.dataset_id is not None else []
            reasons = _cheap_reasons(entry, Path(report.done_folder), rows, remote)
            if reasons:
                _keep(result, journal, entry, reasons)
            else:
                passed.append((entry, rows))
        if not dry_run:
            hashed = _ProgressCounter(sum(2 * len(rows) for _, rows in passed),
                                      sum(2 * r.size for _, rows in passed for r in rows),
                                      on_progress)
            for entry, rows in passed:
                _remove(result, journal, entry, rows, remote, hashed)
        return result
    finally:
        if remote is not None:
            remote.close()
        if own_journal:
            journal.close()


__all__ = ["GraceEntry", "GraceReport", "PurgeProgress", "PurgeResult", "PurgeSkip", "grace_report",
           "purge"]
