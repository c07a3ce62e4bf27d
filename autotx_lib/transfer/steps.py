"""The steps that advance one dataset: prepare, copy, seal, deliver, finish (or quarantine).

Each step reads the dataset's journal row, does one filesystem step and writes the journal
before and after it, so any step can be repeated after a crash. A dataset goes to every
configured destination in rounds (:mod:`autotx_lib.transfer.fanout`): one read of the
source for all destinations due now, each copy verified on its own, one delivery row per
destination; the original moves to the grace area once every required destination holds
its verified copy.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autotx_lib import __version__
from autotx_lib import journal as J
from autotx_lib.errors import (
    CopyInterrupted,
    DestinationError,
    DestinationFullError,
    DestinationLayoutError,
    DestinationNameTaken,
    EmptyDatasetError,
    SourceChangedError,
    TransferError,
    UnreadableFileError,
    UnsafePathError,
    VerificationError,
)
from autotx_lib.journal import utcnow
from autotx_lib.transfer import copy as C
from autotx_lib.transfer.destination import check_destination
from autotx_lib.transfer.destinations import Destination
from autotx_lib.transfer.fanout import (
    Member,
    Replicas,
    copy_between,
    due_now,
    member_for,
    relative_to,
    replicate_file,
    replicate_files,
    shown_path,
    tmp_location,
)
from autotx_lib.transfer.fanout import marker_setting as _marker_setting
from autotx_lib.transfer.layout import (
    SourceFile,
    free_name,
    fsync_dir,
    list_dataset,
    move_dir,
    stamped_name,
)
from autotx_lib.transfer.live_sync import use_live_copies
from autotx_lib.transfer.names import check_storable
from autotx_lib.transfer.readiness import scan_incoming
from autotx_lib.transfer.status import LIVE_PROGRESS_KEY
from autotx_lib.units import human_bytes

log = logging.getLogger("autotx")

RETRY_BASE_SECONDS = 30.0
RETRY_MAX_SECONDS = 3600.0
JOURNAL_BATCH_SECONDS = 0.5
PROGRESS_SECONDS = 1.0  # live byte progress and rate written to the journal this often
RATE_WINDOW_SECONDS = 5.0
MAX_SEAL_ROUNDS = 3  # sources changed after verification this often: wait for quiet instead
CATCH_UP_LOOK_SECONDS = 5.0  # a catch-up looks for new acquisitions in incoming/ this often
ROUND_WAIT_SECONDS = 60.0  # a dataset waiting for a destination's window looks again this often


@dataclass(frozen=True)
class Progress:
    """Live progress of the dataset being copied, handed to the ``on_progress`` callback."""

    dataset_id: int
    user: str
    name: str
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    started: float  # time.monotonic() at the start of this copy attempt


class RateMeter:
    """The copy rate over the last few seconds (a mean since the start hides pauses)."""

    def __init__(self, window: float = RATE_WINDOW_SECONDS):
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, when: float, total_bytes: int) -> float | None:
        """Record the byte count at ``when``; returns bytes/s over the window (None: unknown)."""
        self._samples.append((when, total_bytes))
        while len(self._samples) > 2 and when - self._samples[1][0] >= self.window:
            self._samples.popleft()
        first_time, first_bytes = self._samples[0]
        if when - first_time < 0.5:
            return None
        return (total_bytes - first_bytes) / (when - first_time)


class _CopyCounter:
    """Bytes copied so far, shared by the copy threads."""

    def __init__(self, start: int = 0):
        self.value = start
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n



class DatasetSteps:
    """The dataset steps of :class:`~autotx_lib.transfer.agent.Agent` (a mixin: it uses the
    agent's config, journal, notifier and events)."""

    # --- advancing one dataset --------------------------------------------------------

    def process(self, dataset_id: int):
        """Advance one dataset until it is final or must wait; returns its journal row."""
        steps = {
            J.CLAIMING: self._resume_claim, J.QUEUED: self._prepare, J.COPYING: self._copy,
            J.DELIVERING: self._deliver, J.DELIVERED: self._finish,
            J.UNMATCHING: self._unmatch, J.QUARANTINING: self._quarantine,
        }
        while True:
            row = self.journal.dataset(dataset_id)
            if row.state not in steps or self.stop_requested.is_set():
                return row
            try:
                advanced = steps[row.state](row)
            except DestinationError as error:
                self._retry_later(row, str(error), error=error)
                return self.journal.dataset(dataset_id)
            except SourceChangedError as error:
                self._retry_later(row, str(error), delay=max(self.config.readiness.quiet_seconds,
                                                            RETRY_BASE_SECONDS))
                return self.journal.dataset(dataset_id)
            except TransferError as error:
                self.journal.update_dataset(dataset_id, state=J.QUARANTINING, error=str(error))
                continue
            except OSError as error:  # unexpected I/O trouble: keep the data, try again later
                self._retry_later(row, f"{error.__class__.__name__}: {error}.")
                return self.journal.dataset(dataset_id)
            if not advanced:
                return self.journal.dataset(dataset_id)

    def _resume_claim(self, row) -> bool:
        if Path(row.processing_path).exists():
            self.journal.update_dataset(row.id, state=J.QUEUED)
            return True
        state_note = "it is still in incoming/ and will be claimed again" \
            if Path(row.incoming_path).exists() else "it is gone"
        self.journal.update_dataset(row.id, state=J.VANISHED,
                                    error=f"claim interrupted; {state_note}")
        self._event("warning", "vanished", f"{row.user}/{row.name}: claim interrupted; "
                    f"{state_note}", row.id)
        return False

    # --- the destinations of a dataset ----------------------------------------------------

    def _deliveries(self, row) -> list:
        """The dataset's delivery rows, one per configured destination, in config order.

        A dataset from before deliveries existed gets them here: its primary copy counts as
        under way (or delivered) as the dataset row says.
        """
        targets = self.config.targets
        fresh = not self.journal.deliveries_of(row.id)
        rows = self.journal.ensure_deliveries(row.id, [(t.name, t.required) for t in targets])
        if fresh and row.state not in (J.CLAIMING, J.QUEUED):
            delivered = row.state in (J.DELIVERED, J.DONE)
            self.journal.update_delivery(
                rows[0].id, state="delivered" if delivered else "copying",
                tmp_path=row.tmp_path, dest_path=row.dest_path, manifest_path=row.manifest_path,
                manifest_digest=row.manifest_digest, delivered_at=utcnow() if delivered else None)
            rows = self.journal.ensure_deliveries(row.id, [(t.name, t.required) for t in targets])
        return rows

    def _members(self, row) -> list[Member]:
        """The destinations in the dataset's current round (deliveries being copied)."""
        return [Member(delivery, settings, number, self._destination(settings))
                for number, (delivery, settings) in
                enumerate(zip(self._deliveries(row), self.config.targets, strict=True))
                if delivery.state == "copying"]

    def _check_member(self, member: Member) -> None:
        """Raise the typed DestinationError unless the member is reachable, marked, writable."""
        check_destination(member.destination, self.journal, self.config.host_alias,
                          setting=_marker_setting(member.number, member.name))

    def _drop(self, row, member: Member, error: DestinationError) -> None:
        """A destination failed: it leaves the round and is tried again later; the others
        go on."""
        if isinstance(error, DestinationFullError):
            self._remove_tmp(member)
        self._delivery_failed(row, member.delivery.id, member.describe(), error)

    def _delivery_failed(self, row, delivery_id: int, shown: str, error: DestinationError) -> None:
        delivery = self.journal.delivery(delivery_id)
        delay = min(RETRY_BASE_SECONDS * 2 ** delivery.attempts, RETRY_MAX_SECONDS)
        self.journal.update_delivery(delivery.id, state="pending", error=str(error),
                                     attempts=delivery.attempts + 1,
                                     next_attempt_at=utcnow() + dt.timedelta(seconds=delay))
        self._event("warning", "destination-failed", f"{row.user}/{row.name}: destination "
                    f"{delivery.destination}: {error} The other destinations go on; "
                    f"{delivery.destination} is tried again in {delay:.0f} s.", row.id)
        self.notifier.destination_problem(f"destination {shown}: {error}")

    def _remove_tmp(self, member: Member) -> None:
        if not member.delivery.tmp_path or member.destination is None:
            return
        if member.root is not None:
            shutil.rmtree(member.delivery.tmp_path, ignore_errors=True)
        else:
            try:
                member.destination.remove_tree(member.delivery.tmp_path)
            except (DestinationError, OSError) as error:
                log.info("could not remove %s at %s: %s", member.delivery.tmp_path,
                         member.name, error)

    def _between_rounds(self, row, waiting: list[str]) -> bool:
        """No destination left in this round: delivered when every required destination
        is, else wait for the next round (the files are copied again then)."""
        names = {t.name for t in self.config.targets}
        left = [d for d in self.journal.deliveries_of(row.id)
                if d.required and d.state != "delivered" and d.destination in names]
        if not left:
            self.journal.update_dataset(row.id, state=J.DELIVERED, error=None,
                                        next_attempt_at=None)
            return True
        soonest = min((d.next_attempt_at for d in left if d.next_attempt_at is not None),
                      default=None)
        when = max(soonest or utcnow(), utcnow() + dt.timedelta(seconds=ROUND_WAIT_SECONDS))
        settings = {t.name: t for t in self.config.targets}
        reason = "waiting for destination " + "; ".join(
            waiting or [f"{d.destination}: {due_now(settings[d.destination], d) or d.error or 'not written yet'}"
                        for d in left])
        if any(d.state == "delivered" for d in self.journal.deliveries_of(row.id)):
            self.journal.reset_files(row.id)  # the next round copies afresh to those left
        if row.error != reason:
            self._event("info", "waiting-destination", f"{row.user}/{row.name}: {reason}; "
                        "the original stays in processing/ until then", row.id)
        self.journal.update_dataset(row.id, state=J.QUEUED, error=reason, next_attempt_at=when)
        return False

    # --- the steps ------------------------------------------------------------------------

    def _prepare(self, row) -> bool:
        """Choose the destinations of this round, check them, list the files, start copying."""
        waiting, candidates = [], []
        pending = [(number, delivery, settings) for number, (delivery, settings) in
                   enumerate(zip(self._deliveries(row), self.config.targets, strict=True))
                   if delivery.state != "delivered"]
        for number, delivery, settings in pending:
            why = due_now(settings, delivery)
            if why:
                waiting.append(f"{settings.name}: {why}")
                continue
            try:
                destination = self._destination(settings)
            except DestinationError as error:  # its settings are unusable (credentials)
                if len(pending) == 1:
                    raise
                self._delivery_failed(row, delivery.id, settings.name, error)
                continue
            candidates.append(Member(delivery, settings, number, destination))
        members = self._usable(row, candidates)
        if not members:
            return self._between_rounds(row, waiting)
        if self._primary_answers(members) and not self._user_folder_ready(row):
            return True  # UNMATCHING: no copy anywhere for a user the storage does not know
        members = self._with_user_folders(row, members)
        source = Path(row.processing_path)
        listing = list_dataset(source)
        if not listing.files:
            raise EmptyDatasetError(source)
        for skipped in listing.skipped:
            self._event("warning", "skipped", f"{row.user}/{row.name}: {skipped}", row.id)
        members = self._storable(row, members, [f.relpath for f in listing.files])
        if not members:  # only optional ones were due, and none can take these names
            return self._between_rounds(row, waiting)
        self._reconcile_files(row.id, listing.files)
        fresh = not self.journal.any_verified(row.id)
        stamped = stamped_name(row.stamp, row.name)
        for member in members:
            tmp = tmp_location(self.config, member.settings, row.user, stamped)
            self.journal.update_delivery(member.delivery.id, state="copying", tmp_path=tmp)
            if fresh:  # a stale partial copy (e.g. journal lost): nothing in it counts
                member.delivery = self.journal.delivery(member.delivery.id)
                self._remove_tmp(member)
        first = tmp_location(self.config, members[0].settings, row.user, stamped)
        self.journal.update_dataset(
            row.id, state=J.COPYING, tmp_path=first, total_files=len(listing.files),
            total_bytes=listing.total_bytes, attempts=row.attempts + 1,
            started_at=row.started_at or utcnow(), error=None)
        return True

    def _keep(self, row, members: list[Member], check: Callable[[Member], bool]
              ) -> list[Member]:
        """The members that ``check`` keeps (returns True for).

        A member whose check raises a DestinationError leaves the round until its next
        attempt and the others go on; with one member, or when none is left, that error is
        raised (the dataset waits, as with one destination).
        """
        kept, failure = [], None
        for member in members:
            try:
                if check(member):
                    kept.append(member)
            except DestinationError as error:
                if len(members) == 1:
                    raise
                failure = error
                self._drop(row, member, error)
        if not kept and failure is not None:
            raise failure
        return kept

    def _usable(self, row, candidates: list[Member]) -> list[Member]:
        """The candidates that answer (reachable, marked, writable, above their floor)."""
        def answers(member: Member) -> bool:
            self._check_member(member)
            self._check_free_space(member, row)
            return True

        return self._keep(row, candidates, answers)

    def _primary_answers(self, members: list[Member]) -> bool:
        """Whether the primary destination is there (checked already when in the round)."""
        if members[0].number == 0:
            return True
        try:
            self._check_destination()
        except DestinationError:
            return False  # unknown: the user's folder there is checked when it is due
        return True

    def _with_user_folders(self, row, members: list[Member]) -> list[Member]:
        """The members after the primary get the user's folder; one that cannot leaves."""
        def folder_made(member: Member) -> bool:
            if member.number != 0:
                self._make_user_folder(member, row.user)
            return True

        return self._keep(row, members, folder_made)

    def _storable(self, row, members: list[Member], relpaths: list[str]) -> list[Member]:
        """The members that can store every name of the dataset as it is.

        Raises UnsafePathError (the dataset is quarantined) when the primary or a required
        destination cannot: two names it would merge, or a name it refuses. An optional one
        that cannot leaves the round for good (the admin is told once); one that cannot be
        asked leaves it until its next attempt.
        """
        def storable(member: Member) -> bool:
            try:
                check_storable(member.destination, member.name, row.name, relpaths)
            except UnsafePathError as error:
                if member.number == 0 or member.settings.required:
                    raise
                self._catch_up_failed(row, member, f"{error.reason} ({error.path})", final=True)
                return False
            return True

        return self._keep(row, members, storable)

    def _check_free_space(self, member: Member, row) -> None:
        """Raise DestinationFullError when the dataset would eat into the destination's
        free-space floor (``min_free_mb``; for an smb:// primary also the gate's
        ``min_free_destination_mb``, which the gate samples only on a folder)."""
        floor = member.settings.min_free_mb * 1_000_000
        if member.number == 0 and member.root is None:
            floor = max(floor, self.config.gate.min_free_destination_mb * 1_000_000)
        if floor and self._free_bytes(member.settings, member.destination) - \
                row.total_bytes < floor:
            raise DestinationFullError(member.destination.url, row.total_bytes + floor)

    def _make_user_folder(self, member: Member, user: str) -> None:
        if member.root is not None:
            try:
                (member.root / user).mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise DestinationError(member.root / user, str(error)) from None
        else:
            member.destination.make_dirs(user)

    def _user_folder_ready(self, row) -> bool:
        """The primary destination has the user's folder (made when create_user_dirs);
        otherwise the dataset goes to unmatched/ and False is returned."""
        if self._primary_has_folder(row.user):
            return True
        if not self.config.create_user_dirs:
            listing = list_dataset(Path(row.processing_path))
            self.journal.update_dataset(row.id, state=J.UNMATCHING, error=(
                f"no folder {self.config.primary_shown}/{row.user} at the destination"),
                total_files=len(listing.files), total_bytes=listing.total_bytes)
            return False
        primary = Member(None, self.config.primary, 0, self._primary())
        self._make_user_folder(primary, row.user)
        return True

    def _primary_has_folder(self, user: str) -> bool:
        if self.config.destination is not None:
            return (self.config.destination / user).is_dir()
        try:
            return self._primary().stat(user).is_dir
        except FileNotFoundError:
            return False

    def _primary(self) -> Destination:
        """The primary destination, through its protocol."""
        return self._destination(self.config.primary)

    def _check_destination(self) -> None:
        where = self.config.destination if self.config.destination is not None else \
            self._primary()
        check_destination(where, self.journal, self.config.host_alias)

    def _reconcile_files(self, dataset_id: int, listed: list[SourceFile],
                         rows: list | None = None) -> list[str]:
        """Bring the journal's file rows (``rows`` if the caller read them already) in line
        with the source; returns what changed."""
        known = {f.relpath: f for f in (self.journal.files_of(dataset_id) if rows is None
                                        else rows)}
        if not known:
            self.journal.add_files(dataset_id, [(f.relpath, f.size, f.mtime_ns) for f in listed])
            return []
        changed = [f.relpath for f in listed if f.relpath in known and
                   (known[f.relpath].size, known[f.relpath].mtime_ns) != (f.size, f.mtime_ns)]
        new = [(f.relpath, f.size, f.mtime_ns) for f in listed if f.relpath not in known]
        if changed:
            self.journal.reset_files(dataset_id, changed)
        if new:
            self.journal.add_files(dataset_id, new)
        return changed + [relpath for relpath, _, _ in new]

    def _copy(self, row) -> bool:
        members = self._members(row)
        if not members:  # a round that lost every destination: choose again
            self.journal.update_dataset(row.id, state=J.QUEUED)
            return True
        members = self._usable(row, members)
        try:
            return self._copy_round(row, members)
        except DestinationError as error:
            failed = member_for(error, members)
            if failed is None or len(members) == 1:
                raise
            self._drop(row, failed, error)
            return True  # still COPYING: the others go on

    def _copy_round(self, row, members: list[Member]) -> bool:
        source = Path(row.processing_path)
        rows = self.journal.files_of(row.id)
        if self._recheck_verified(row, members, rows, rehash=row.id in self._recovering):
            rows = self.journal.files_of(row.id)
        self._recovering.discard(row.id)
        if [m.number for m in members] == [0] and members[0].root is not None and \
                self._take_live_copies(row, members[0].tmp, rows):
            # staged copies live on a folder primary only
            rows = self.journal.files_of(row.id)
        listed = {r.relpath for r in rows}
        todo = [SourceFile(r.relpath, r.size, r.mtime_ns) for r in rows if not r.verified]
        done_files = len(rows) - len(todo)
        done_bytes = sum(r.size for r in rows if r.verified)
        counter = _CopyCounter(done_bytes)
        state = {"files": done_files, "flushed": time.monotonic(), "live": 0.0}
        batch: list[dict] = []
        started = time.monotonic()
        meter = RateMeter()
        local = [m for m in members if m.root is not None]
        remote = [m for m in members if m.root is None]

        def flush() -> None:
            self.journal.mark_verified(row.id, batch, counter.value, state["files"])
            batch.clear()
            state["flushed"] = time.monotonic()

        def publish_progress() -> None:
            """Bytes, even inside one large file, and the recent rate: for status and faces."""
            now = time.monotonic()
            rate = meter.add(now, counter.value)
            if now - state["live"] < PROGRESS_SECONDS:
                return
            state["live"] = now
            flush()
            self.journal.set_setting(LIVE_PROGRESS_KEY, {
                "dataset_id": row.id, "copied_bytes": counter.value,
                "rate_bytes_per_s": rate, "at": utcnow().isoformat()})

        def verified(result: C.CopiedFile) -> None:
            """A file every destination of the round holds, checked."""
            batch.append({"relpath": result.relpath, "digest": result.digest,
                          "size": result.size, "mtime_ns": result.mtime_ns,
                          "copies": result.copies})
            state["files"] += 1
            if time.monotonic() - state["flushed"] > JOURNAL_BATCH_SECONDS:
                flush()

        def tick() -> None:
            replicas.collect()
            if batch and time.monotonic() - state["flushed"] > JOURNAL_BATCH_SECONDS:
                flush()  # progress visible to `autotx status` at least twice a second
            publish_progress()
            if self.on_progress is not None:
                self.on_progress(Progress(row.id, row.user, row.name, state["files"],
                                          len(rows), counter.value, row.total_bytes, started))

        gate = self._gate_monitor(members).start()
        # the protocol destinations (smb://) are written alongside, from the same source
        replicas = Replicas(remote if local else remote[1:], source, row.algorithm, verified,
                            throttle=gate.throttle, workers=self.config.copy_.workers)
        try:
            self._make_remote_folders(remote, todo)
            if local:
                C.copy_files(todo, source, [m.tmp for m in local], row.algorithm,
                             workers=self.config.copy_.workers, verify=self.config.verify.mode,
                             max_attempts=self.config.copy_.max_attempts_per_file,
                             on_file=replicas.add, on_bytes=counter.add,
                             should_stop=self.stop_requested.is_set, tick=tick, throttle=gate)
            else:
                self._copy_through_protocol(row, todo, remote[0], replicas.add, counter, tick,
                                            gate)
            replicas.finish()
        except CopyInterrupted:
            pass  # checkpointed below: what was verified is in the journal
        finally:
            replicas.close()
            gate.stop()
            flush()
            tick()
            self.journal.set_setting(LIVE_PROGRESS_KEY, None)
        if self.stop_requested.is_set() and state["files"] < len(rows):
            self.notifier.transfer_interrupted(self.journal.dataset(row.id))
            return False  # checkpointed: verified files are in the journal
        return self._seal(row, members, listed)

    @staticmethod
    def _make_remote_folders(remote: list[Member], todo: list[SourceFile]) -> None:
        if not remote:
            return
        folders = sorted({Path(f.relpath).parent.as_posix() for f in todo} - {"."})
        for member in remote:
            member.destination.make_dirs(member.delivery.tmp_path)
            for folder in folders:
                member.destination.make_dirs(f"{member.delivery.tmp_path}/{folder}")

    def _copy_through_protocol(self, row, todo, first: Member, on_file, counter, tick,
                               gate) -> None:
        """No local destination in the round: the first remote one reads and hashes the
        source (``copy.workers`` files at once); ``on_file`` hands each file on to the
        others (checked against that digest)."""
        for copied in replicate_files(todo, Path(row.processing_path), first, row.algorithm,
                                      workers=self.config.copy_.workers, throttle=gate.throttle,
                                      should_stop=self.stop_requested.is_set):
            if copied is not None:
                counter.add(copied.size)
                on_file(copied)
            tick()

    def _take_live_copies(self, row, tmp: Path, rows: list) -> bool:
        """Files live-synced during a session and unchanged since: moved, not copied.

        ``rows`` are the dataset's file rows; returns whether any file was taken over.
        """
        taken = use_live_copies(self.config, self.journal, row.user, row.name,
                                Path(row.processing_path), tmp, rows)
        if taken:
            done = [f for f in rows if f.verified]
            self.journal.mark_verified(row.id, taken, sum(f.size for f in done) +
                                       sum(t["size"] for t in taken), len(done) + len(taken))
            self._event("info", "live-synced", f"{row.user}/{row.name}: {len(taken)} file(s) "
                        "were synced during the session and are taken over unchanged", row.id)
        return bool(taken)

    def _recheck_verified(self, row, members: list[Member], rows: list, rehash: bool) -> bool:
        """Check that files verified earlier (of the file ``rows``) are still intact at every
        destination of the round; re-copy those that are not (returns whether any).

        After a crash (``rehash``) a local copy's content is hashed again, since a power
        loss can leave a file of the right size but wrong content; otherwise, and for a
        destination reached through the protocol, the size is checked.
        """
        bad = set()
        verified = [entry for entry in rows if entry.verified]
        for member in members:
            for entry in verified:
                if not self._intact(member, entry, row.algorithm, rehash):
                    bad.add(entry.relpath)
        if bad:
            self.journal.reset_files(row.id, sorted(bad))
            self._event("warning", "recheck", f"{row.user}/{row.name}: {len(bad)} file(s) "
                        "copied earlier are missing or changed in the tmp area; copying them again",
                        row.id)
        return bool(bad)

    @staticmethod
    def _intact(member: Member, entry, algorithm: str, rehash: bool) -> bool:
        if member.root is None:
            try:
                return member.destination.stat(
                    f"{member.delivery.tmp_path}/{entry.relpath}").size == entry.size
            except FileNotFoundError:
                return False
        target = member.tmp / entry.relpath
        return target.is_file() and target.stat().st_size == entry.size and \
            (not rehash or C.hash_file(target, algorithm) == entry.digest)

    def _sources_changed_since_verified(self, row, rows: list) -> bool:
        """Re-list the source: a file changed or added after it was verified (``rows``: the
        journal's file rows) is copied again.

        Raises
        ------
        SourceChangedError
            The source kept changing for ``MAX_SEAL_ROUNDS`` rounds: wait for quiet.
        """
        changed = self._reconcile_files(row.id, list_dataset(Path(row.processing_path)).files,
                                        rows)
        if not changed:
            self._seal_rounds.pop(row.id, None)
            return False
        rounds = self._seal_rounds[row.id] = self._seal_rounds.get(row.id, 0) + 1
        self._event("warning", "source-changed", f"{row.user}/{row.name}: {len(changed)} "
                    f"file(s) changed or appeared after verification (e.g. {changed[0]}); "
                    "copying them again", row.id)
        if rounds >= MAX_SEAL_ROUNDS:
            self._seal_rounds.pop(row.id, None)
            raise SourceChangedError(Path(row.processing_path) / changed[0], rounds)
        return True

    def _seal(self, row, members: list[Member], relpaths: set[str]) -> bool:
        """All files verified: write each destination's manifest, sync, pick the final name."""
        rows = self.journal.files_of(row.id)
        if self._sources_changed_since_verified(row, rows):
            return True  # still COPYING: the changed files are copied in the next round
        entries = [(r.relpath, r.digest) for r in rows]
        sealed = 0
        for member in members:
            try:
                self._seal_member(row, member, entries, relpaths)
                sealed += 1
            except DestinationError as error:
                if len(members) == 1:
                    raise
                self._drop(row, member, error)
        if not sealed:
            return True  # every destination left the round: choose again
        self.journal.update_dataset(row.id, state=J.DELIVERING)
        return True

    def _seal_member(self, row, member: Member, entries, relpaths: set[str]) -> None:
        """Write one destination's manifest and choose the dataset's final name there."""
        tmp = member.delivery.tmp_path
        if member.root is not None:
            try:
                manifest = C.write_manifest(Path(tmp), entries, row.algorithm, taken=relpaths)
                C.sync_filesystem(Path(tmp))
            except OSError as error:
                raise DestinationError(tmp, str(error)) from None
            digest = C.hash_file(manifest, row.algorithm)
            dest = str(free_name(member.root / row.user, row.name))
            name = manifest.name
        else:
            name, data = C.manifest_content(entries, row.algorithm, relpaths)
            member.destination.write_bytes(f"{tmp}/{name}", data)
            member.destination.sync(tmp)
            digest = C.new_hasher(row.algorithm)
            digest.update(data)
            digest = digest.hexdigest()
            dest = member.destination.free_name(row.user, row.name)
        manifest_path = f"{dest}/{name}"
        self.journal.update_delivery(member.delivery.id, dest_path=dest,
                                     manifest_path=manifest_path, manifest_digest=digest)
        if member.number == 0:
            self.journal.update_dataset(row.id, dest_path=shown_path(member, dest),
                                        manifest_path=shown_path(member, manifest_path),
                                        manifest_digest=digest)

    def _deliver(self, row) -> bool:
        """One rename per destination makes the dataset appear whole there."""
        members = self._members(row)
        if not members:
            return self._between_rounds(row, [])
        for member in members:
            if not member.delivery.dest_path:  # not sealed (joined after a crash): next round
                self.journal.update_delivery(member.delivery.id, state="pending")
                continue
            try:
                placed = self._rename_into_place(row, member)
            except DestinationError as error:
                if len(members) == 1 or isinstance(error, DestinationLayoutError):
                    raise
                self._drop(row, member, error)
                continue
            if placed is None:  # the verified copy vanished: copy again
                self._tmp_lost(row, member)
                return True
            self.journal.update_delivery(member.delivery.id, state="delivered", dest_path=placed,
                                         delivered_at=utcnow(), error=None,
                                         next_attempt_at=None)
            if Path(placed).name != row.name:
                self._event("warning", "renamed", f"{row.user}/{row.name} already existed at "
                            f"destination {member.name}; delivered as {Path(placed).name}",
                            row.id)
            if len(self.config.targets) > 1:
                self._event("info", "delivered-to", f"{row.user}/{row.name}: verified copy "
                            f"delivered to {member.name} ({placed})", row.id)
        return self._between_rounds(row, [])

    def _rename_into_place(self, row, member: Member) -> str | None:
        """Rename the member's tmp copy to its final name; the name, or None when lost."""
        tmp, dest = member.delivery.tmp_path, member.delivery.dest_path
        manifest = Path(member.delivery.manifest_path).name
        if member.root is None:
            return self._rename_remote(row, member, tmp, dest, manifest)
        self._check_member(member)  # an unmounted share must not look like a lost tmp copy
        tmp, dest = Path(tmp), Path(dest)
        if tmp.is_dir():
            if os.path.lexists(dest):  # taken since the name was chosen: never overwrite
                dest = free_name(dest.parent, row.name)
                self._renamed(row, member, str(dest), manifest)
            try:
                os.rename(tmp, dest)
            except OSError as error:
                if error.errno == errno.EXDEV:
                    raise DestinationLayoutError(dest.parent, (
                        f"{dest.parent} is on another filesystem than the tmp area {tmp.parent} "
                        "(a separate mount under the destination?), so the dataset cannot be "
                        "renamed into place. Mount the user folder elsewhere or remove the "
                        "mount; the verified copy waits in the tmp area")) from None
                raise
            fsync_dir(dest.parent)
        elif not dest.is_dir():
            return None
        return str(dest)

    def _rename_remote(self, row, member: Member, tmp: str, dest: str, manifest: str
                       ) -> str | None:
        self._check_member(member)
        if member.destination.exists(tmp):
            while True:
                try:
                    member.destination.rename(tmp, dest)
                    break
                except DestinationNameTaken:  # never overwrite: take the next free name
                    dest = member.destination.free_name(row.user, row.name)
                    self._renamed(row, member, dest, manifest)
            member.destination.sync(row.user)
        elif not member.destination.exists(dest):
            return None
        return dest

    def _renamed(self, row, member: Member, dest: str, manifest: str) -> None:
        self.journal.update_delivery(member.delivery.id, dest_path=dest,
                                     manifest_path=f"{dest}/{manifest}")
        if member.number == 0:
            self.journal.update_dataset(row.id, dest_path=shown_path(member, dest),
                                        manifest_path=shown_path(member, f"{dest}/{manifest}"))

    def _tmp_lost(self, row, member: Member) -> None:
        self.journal.reset_files(row.id)
        for delivery in self.journal.deliveries_of(row.id):
            if delivery.state == "copying":
                self.journal.update_delivery(delivery.id, state="pending")
        self.journal.update_dataset(row.id, state=J.QUEUED, error="the verified copy "
                                    "vanished from the destination's tmp area; copying again")
        self._event("error", "lost-tmp", f"{row.user}/{row.name}: the verified copy vanished "
                    f"from the tmp area of destination {member.name} before delivery; copying "
                    "again", row.id)

    def _finish(self, row) -> bool:
        """Move the source to the grace area (managed/done/)."""
        source = Path(row.processing_path)
        target = self.folders.done / row.user / stamped_name(row.stamp, row.name)
        if source.exists():
            target = move_dir(source, target)
        elif row.final_path:
            target = Path(row.final_path)
        self.journal.update_dataset(row.id, state=J.DONE, final_path=str(target),
                                    finished_at=utcnow(), next_attempt_at=None, error=None)
        self._event("info", "delivered", f"{row.user}/{row.name}: {row.total_files} files, "
                    f"{human_bytes(row.total_bytes)} delivered to {row.dest_path}, verified "
                    f"({row.algorithm}); the original rests in {target}", row.id)
        later = [d.destination for d in self._deliveries(self.journal.dataset(row.id))
                 if d.state != "delivered"]
        if later:
            self._event("info", "catch-up", f"{row.user}/{row.name}: destination(s) "
                        f"{', '.join(later)} (optional) will get their copy later, from "
                        f"{target}", row.id)
        delivered = self.journal.dataset(row.id)
        first = self.journal.files_of(row.id, limit=50)  # the mail names the first few
        self.notifier.transfer_finished(delivered, [f.relpath for f in first])
        for hook in self.after_delivery:
            try:
                hook(delivered)
            except Exception as error:  # noqa: BLE001 - a hook never blocks transfers
                self._event("error", "hook-failed", f"{row.user}/{row.name}: after-delivery "
                            f"step {getattr(hook, '__name__', hook)} failed: {error}", row.id)
        return False

    # --- optional destinations catch up ---------------------------------------------------

    def catch_up_one(self) -> bool:
        """Give one optional destination that missed a delivered dataset its copy.

        The copy is read from the original in the grace area or, once that is gone, from
        the primary destination's delivered copy (a folder, or an ``smb://`` share read
        through the agent's connection), and every file is checked against the digests
        that were delivered. Returns whether one was attempted.
        """
        targets = {t.name: (number, t) for number, t in enumerate(self.config.targets)}
        for delivery in self.journal.catch_ups():
            if delivery.destination not in targets:
                continue  # a destination no longer configured
            number, settings = targets[delivery.destination]
            if due_now(settings, delivery):
                continue
            row = self.journal.dataset(delivery.dataset_id)
            try:
                destination = self._destination(settings)
            except DestinationError as error:
                self._catch_up_failed(row, Member(delivery, settings, number, None), str(error))
                return True
            self._catch_up(row, Member(delivery, settings, number, destination))
            return True
        return False

    def _catch_up(self, row, member: Member) -> None:
        name = f"{row.user}/{row.name}"
        try:
            source = self._catch_up_source(row)
        except DestinationError as error:  # the primary share does not answer: later
            self._catch_up_failed(row, member, f"the delivered copy {row.dest_path} cannot "
                                  f"be read now: {error}")
            return
        if source is None:
            self._catch_up_failed(row, member, f"neither the original ({row.final_path}) nor "
                                  f"the delivered copy ({row.dest_path}) is there any more",
                                  final=True)
            return
        shown = source if isinstance(source, Path) else row.dest_path
        files = self.journal.files_of(row.id)
        stamped = stamped_name(row.stamp, row.name)
        tmp = tmp_location(self.config, member.settings, row.user, stamped)
        self.journal.update_delivery(member.delivery.id, tmp_path=tmp)
        member.delivery = self.journal.delivery(member.delivery.id)
        gate = self._gate_monitor([member]).start()
        try:
            self._check_member(member)
            self._check_free_space(member, row)
            check_storable(member.destination, member.name, row.name, [f.relpath for f in files])
            self._make_user_folder(member, row.user)
            self._remove_tmp(member)
            self._copy_for_catch_up(row, member, source, files, gate)
            entries = [(f.relpath, f.digest) for f in files]
            self._seal_member(row, member, entries, {f.relpath for f in files})
            member.delivery = self.journal.delivery(member.delivery.id)
            placed = self._rename_into_place(row, member)
        except CopyInterrupted:
            self._remove_tmp(member)
            self._event("info", "catch-up-paused", f"{name}: the copy to destination "
                        f"{member.name} stopped for new acquisitions; it starts again when "
                        "the agent is idle", row.id)
            return
        except (DestinationError, OSError) as error:
            self._catch_up_failed(row, member, str(error))
            return
        except (VerificationError, SourceChangedError, UnreadableFileError) as error:
            self._catch_up_failed(row, member, f"{shown} no longer matches what was "
                                  f"delivered: {error}", final=True)
            return
        except UnsafePathError as error:  # names this destination would merge or refuse
            self._catch_up_failed(row, member, error.reason + f" ({error.path})", final=True)
            return
        finally:
            gate.stop()
        self.journal.update_delivery(member.delivery.id, state="delivered", dest_path=placed,
                                     delivered_at=utcnow(), error=None, next_attempt_at=None)
        self._event("info", "caught-up", f"{name}: destination {member.name} caught up from "
                    f"{shown}; verified copy delivered to {placed}", row.id)

    def _catch_up_source(self, row) -> Path | str | None:
        """Where a catch-up reads: the original in grace or the primary's delivered copy
        as a folder (a Path), the delivered copy's path on an ``smb://`` primary (a str,
        read through the agent's connection), or None when neither is there any more.

        Raises
        ------
        DestinationError
            The primary share does not answer or is not this agent's (its marker): whether
            the copy is there cannot be told now.
        """
        if row.final_path and Path(row.final_path).is_dir():
            return Path(row.final_path)
        if self.config.destination is not None:
            return Path(row.dest_path) if row.dest_path and Path(row.dest_path).is_dir() \
                else None
        primary = next((d for d in self.journal.deliveries_of(row.id)
                        if d.destination == self.config.primary.name and d.dest_path), None)
        if primary is None:
            return None
        self._check_destination()  # a share replaced must not look like a lost copy
        try:
            return primary.dest_path if self._primary().stat(primary.dest_path).is_dir \
                else None
        except FileNotFoundError:
            return None

    def _copy_for_catch_up(self, row, member: Member, source: Path | str, files,
                           gate) -> None:
        """Copy every file, checked against the delivered digests (``source``: see
        :meth:`_catch_up_source`).

        Raises CopyInterrupted when the agent stops or a new acquisition appears in
        incoming/: a catch-up never holds up the primary deliveries for long.
        """
        todo = [SourceFile(f.relpath, f.size, f.mtime_ns) for f in files]
        expected = {f.relpath: f.digest for f in files}
        should_stop = self._new_work_appeared()
        if isinstance(source, str):  # the delivered copy on the primary share
            self._copy_from_primary_share(row, member, source, todo, expected, should_stop,
                                          gate)
            return
        if member.root is None:
            self._make_remote_folders([member], todo)
            for entry in todo:
                if should_stop():
                    raise CopyInterrupted()
                replicate_file(source / entry.relpath, member.destination,
                               f"{member.delivery.tmp_path}/{entry.relpath}", row.algorithm,
                               expected=expected[entry.relpath], throttle=gate.throttle)
            return
        copied = C.copy_files(todo, source, [member.tmp], row.algorithm,
                              workers=self.config.copy_.workers,
                              verify=self.config.verify.mode, throttle=gate,
                              max_attempts=self.config.copy_.max_attempts_per_file,
                              should_stop=should_stop)
        if len(copied) < len(todo):
            raise CopyInterrupted()
        for result in copied:
            if result.digest != expected[result.relpath]:
                raise VerificationError(source / result.relpath, expected[result.relpath],
                                        result.digest)

    def _copy_from_primary_share(self, row, member: Member, folder: str, todo, expected,
                                 should_stop, gate) -> None:
        """Each file read from the primary share, checked against its delivered digest,
        written to the member through its protocol (a folder member's too) and read back."""
        primary, tmp = self._primary(), relative_to(member, member.delivery.tmp_path)
        target = member.destination
        for sub in sorted({Path(f.relpath).parent.as_posix() for f in todo} | {"."}):
            target.make_dirs(tmp if sub == "." else f"{tmp}/{sub}")
        for entry in todo:
            if should_stop():
                raise CopyInterrupted()
            copy_between(primary, f"{folder}/{entry.relpath}", target,
                         f"{tmp}/{entry.relpath}", row.algorithm,
                         expected=expected[entry.relpath], throttle=gate.throttle)

    def _new_work_appeared(self) -> Callable[[], bool]:
        """A check, cheap enough to call often: has the agent been asked to stop, or has a
        folder appeared in incoming/ since now? (incoming/ is looked at every few seconds.)"""
        before = {str(p) for _, p in scan_incoming(self.config.incoming)[0]}
        looked = [time.monotonic()]

        def should_stop() -> bool:
            if self.stop_requested.is_set():
                return True
            if time.monotonic() - looked[0] < CATCH_UP_LOOK_SECONDS:
                return False
            looked[0] = time.monotonic()
            return bool({str(p) for _, p in scan_incoming(self.config.incoming)[0]} - before)
        return should_stop

    def _catch_up_failed(self, row, member: Member, reason: str, final: bool = False) -> None:
        """Try again later (much later when the source itself is the problem); say it once."""
        delivery = member.delivery
        delay = RETRY_MAX_SECONDS * 24 if final else \
            min(RETRY_BASE_SECONDS * 2 ** delivery.attempts, RETRY_MAX_SECONDS)
        self._remove_tmp(member)
        self.journal.update_delivery(delivery.id, state="pending", error=reason,
                                     attempts=delivery.attempts + 1,
                                     next_attempt_at=utcnow() + dt.timedelta(seconds=delay))
        if delivery.error != reason:
            level = "error" if final else "warning"
            self._event(level, "catch-up-failed", f"{row.user}/{row.name}: destination "
                        f"{member.name} could not catch up: {reason}; next attempt in "
                        f"{delay:.0f} s", row.id)
            if final:
                self.notifier.needs_attention(
                    "catch-up", f"{row.user}/{row.name} cannot be copied to {member.name}",
                    reason)

    def _unmatch(self, row) -> bool:
        source = Path(row.processing_path)
        target = self.folders.unmatched / row.user / stamped_name(row.stamp, row.name)
        if source.exists():
            target = move_dir(source, target)
        self.journal.update_dataset(row.id, state=J.UNMATCHED, final_path=str(target),
                                    finished_at=utcnow())
        self._event("warning", "unmatched", f"{row.user}/{row.name}: no folder for user "
                    f"{row.user!r} at the destination; moved to {target}. Create the user's "
                    "folder at the destination and move the dataset back to incoming/.", row.id)
        return False

    def _quarantine(self, row) -> bool:
        source = Path(row.processing_path)
        self._quarantine_from(row.id, source, row.user, row.name, row.stamp, row.error or "")
        return False

    def _quarantine_from(self, dataset_id: int, source: Path, user: str, name: str,
                         stamp: str, reason: str) -> None:
        row = self.journal.dataset(dataset_id)
        if row.tmp_path and Path(row.tmp_path).exists():
            shutil.rmtree(row.tmp_path, ignore_errors=True)
        for member in self._members(row):
            self._remove_tmp(member)
            self.journal.update_delivery(member.delivery.id, state="pending")
        target = self.folders.error / user / stamped_name(stamp, name)
        if os.path.lexists(source):
            target = move_dir(source, target)
        reason_file = target.parent / f"{target.name}.reason.txt"
        reason_file.write_text(f"{reason}\n\nQuarantined by autotx {__version__} on "
                               f"{dt.datetime.now():%Y-%m-%d %H:%M:%S}. Nothing was deleted.\n",
                               encoding="utf-8")
        self.journal.update_dataset(dataset_id, state=J.ERROR, final_path=str(target),
                                    finished_at=utcnow())
        self._event("error", "quarantined", f"{user}/{name}: {reason} -> {target}", dataset_id)
        self.notifier.dataset_quarantined(self.journal.dataset(dataset_id))

    def _retry_later(self, row, reason: str, delay: float | None = None,
                     error: Exception | None = None) -> None:
        """Back off exponentially; a partial tmp copy on a full disk is removed.

        A destination laid out so that delivery cannot work (:class:`DestinationLayoutError`)
        keeps the dataset in its state (nothing is copied or sealed again), waits the longest
        delay and is reported once.
        """
        if delay is None:
            delay = min(RETRY_BASE_SECONDS * 2 ** max(row.attempts - 1, 0), RETRY_MAX_SECONDS)
        if isinstance(error, DestinationFullError) and row.tmp_path and \
                Path(row.tmp_path).exists():
            shutil.rmtree(row.tmp_path, ignore_errors=True)
            self.journal.reset_files(row.id)
        if isinstance(error, DestinationLayoutError):
            first = row.error != reason
            self.journal.update_dataset(row.id, error=reason, next_attempt_at=utcnow() +
                                        dt.timedelta(seconds=RETRY_MAX_SECONDS))
            if first:
                self._event("error", "needs-admin", f"{row.user}/{row.name}: {reason}", row.id)
                self.notifier.destination_problem(reason)
            return
        when = utcnow() + dt.timedelta(seconds=delay)
        self.journal.update_dataset(row.id, state=J.QUEUED, error=reason, next_attempt_at=when,
                                    attempts=row.attempts + (row.state == J.QUEUED))
        self._event("warning", "retry", f"{row.user}/{row.name}: {reason} Next attempt in "
                    f"{delay:.0f} s.", row.id)
        if isinstance(error, DestinationError):
            self.notifier.destination_problem(reason)

