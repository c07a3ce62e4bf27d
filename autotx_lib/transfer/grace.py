"""The grace area (``managed/done/``): what rests there, how old it is, and explicit purges.

After a dataset was delivered and verified, the agent moves the original to
``managed/done/<user>/<stamp>__<dataset>`` and leaves it there. :func:`grace_report`
lists those folders with their age and size and flags the ones past
``grace_period_days``; the agent mails that list to the admin (rate limited). Nothing is
ever deleted by the agent: only :func:`purge`, called explicitly (``autotx grace purge
--older-than DAYS --yes``), removes originals, and only those whose delivered copy still
verifies against its manifest.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autotx_lib import journal as J
from autotx_lib.config import Config
from autotx_lib.journal import Journal
from autotx_lib.transfer.copy import read_manifest, verify_manifest
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
            "generated_at": self.generated_at.isoformat(),
            "total_bytes": self.total_bytes,
            "expired_bytes": self.expired_bytes,
            "expired_count": len(self.expired),
            "entries": [asdict(e) for e in self.entries],
        }


@dataclass(frozen=True)
class PurgeSkip:
    """A candidate that was not removed, and why."""

    entry: GraceEntry
    reason: str


@dataclass
class PurgeResult:
    """What :func:`purge` found and did.

    ``candidates`` are the folders older than ``older_than_days``; with ``dry_run`` nothing
    was removed and ``removed`` is empty. ``skipped`` are candidates that are (or would be)
    kept, each with the reason.
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

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "older_than_days": self.older_than_days, "dry_run": self.dry_run,
            "candidates": [asdict(e) for e in self.candidates],
            "removed": [asdict(e) for e in self.removed],
            "skipped": [{"entry": asdict(s.entry), "reason": s.reason} for s in self.skipped],
            "freed_bytes": self.freed_bytes,
        }


def _local_from_utc(value: dt.datetime) -> dt.datetime:
    """A naive UTC time from the journal as naive local time (stamps are local)."""
    return value.replace(tzinfo=dt.UTC).astimezone().replace(tzinfo=None)


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
        algorithm=row.algorithm if row is not None else None)


def _reason_to_keep(entry: GraceEntry, done: Path, *, verify: bool) -> str | None:
    """Why ``entry`` must not be removed (None: its delivered copy is whole)."""
    folder = Path(entry.path)
    if folder.is_symlink() or Path(os.path.abspath(folder)).parent.parent != \
            Path(os.path.abspath(done)):
        return f"{folder} is not a folder directly inside {done}/<user>/"
    if entry.dataset_id is None or not entry.dest_path or not entry.manifest_path:
        return ("the journal has no record of its delivered copy, so it cannot be verified; "
                "check it by hand and remove it yourself if it is safe")
    dest, manifest = Path(entry.dest_path), Path(entry.manifest_path)
    if not dest.is_dir():
        return f"its delivered copy {dest} is missing (destination not mounted, or moved)"
    if not manifest.is_file():
        return f"the manifest {manifest} of its delivered copy is missing"
    try:
        listed = {relpath for relpath, _ in read_manifest(manifest)}
    except (OSError, ValueError, UnicodeDecodeError) as error:
        return f"the manifest {manifest} cannot be read ({error})"
    extra = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                   if not p.is_dir() or p.is_symlink()
                   if str(p.relative_to(folder)) not in listed)
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        return f"{len(extra)} file(s) here are not in the delivered copy's manifest: {shown}"
    if verify:
        try:
            problems = verify_manifest(dest, manifest, entry.algorithm or "xxh3_128")
        except OSError as error:
            return f"its delivered copy {dest} cannot be read to verify it ({error})"
        if problems:
            shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more"
                                                if len(problems) > 3 else "")
            return (f"its delivered copy {dest} does not verify against its manifest "
                    f"({len(problems)} problem(s): {shown})")
    return None


def purge(config: Config, older_than_days: float, *, dry_run: bool = True,
          journal: Journal | None = None, now: dt.datetime | None = None) -> PurgeResult:
    """Remove originals from the grace area that are older than ``older_than_days``.

    Parameters
    ----------
    config : Config
    older_than_days : float
        Only folders whose age (see :class:`GraceEntry`) exceeds this are candidates.
    dry_run : bool
        True (default): only list the candidates, and the ones that would be kept with
        the reason from the checks that need no re-reading. False: re-hash each
        candidate's delivered copy against its manifest and remove the original only when
        every file verifies.
    journal : Journal, optional
        Defaults to the config's; each removal is recorded there as a ``grace-purged`` event.
    now : datetime, optional
        Naive local time to measure ages against.

    Returns
    -------
    result : PurgeResult

    Raises
    ------
    ValueError
        When ``older_than_days`` is negative.

    Notes
    -----
    A candidate is kept when the journal does not know its delivered copy, when that copy
    or its manifest is missing, when the original holds a file the manifest does not list,
    or when the copy does not verify.
    """
    if older_than_days < 0:
        raise ValueError(f"older_than_days must be 0 or more, got {older_than_days}")
    own_journal = journal is None
    journal = journal or Journal(config.journal_url)
    try:
        report = grace_report(config, journal, now)
        done = Path(report.done_folder)
        result = PurgeResult(older_than_days, dry_run)
        result.candidates = [e for e in report.entries if e.age_days > older_than_days]
        for entry in result.candidates:
            reason = _reason_to_keep(entry, done, verify=not dry_run)
            if reason is not None:
                result.skipped.append(PurgeSkip(entry, reason))
                if not dry_run:
                    journal.log("warning", "grace-kept", f"{entry.path} kept: {reason}",
                                entry.dataset_id)
                continue
            if dry_run:
                continue
            try:
                shutil.rmtree(entry.path)
            except OSError as error:
                result.skipped.append(PurgeSkip(entry, f"could not be removed completely "
                                                f"({error})"))
                journal.log("error", "grace-kept", f"{entry.path}: removal failed: {error}",
                            entry.dataset_id)
                continue
            result.removed.append(entry)
            journal.log("info", "grace-purged", f"{entry.path} removed ({entry.file_count} "
                        f"files, {entry.size_bytes} bytes, {entry.age_days:.1f} days old); its "
                        f"delivered copy {entry.dest_path} verified against "
                        f"{entry.manifest_path}", entry.dataset_id)
        return result
    finally:
        if own_journal:
            journal.close()


__all__ = ["GraceEntry", "GraceReport", "PurgeResult", "PurgeSkip", "grace_report", "purge"]
