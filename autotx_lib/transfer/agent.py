"""The agent: find finished acquisitions, copy, verify, deliver, keep the original in grace.

Each dataset moves through the states of :mod:`autotx_lib.journal`; every step writes
the journal before and after touching the filesystem, and every step can be repeated
after a crash, so :meth:`Agent.run` simply advances every unfinished dataset until it
reaches a final state (done, unmatched, error) or must wait (destination unavailable).

Examples
--------
>>> from autotx_lib.config import load_config          # doctest: +SKIP
>>> summary = Agent(load_config("autotx.toml")).run(once=True)  # doctest: +SKIP
>>> summary.delivered                                     # doctest: +SKIP
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
from dataclasses import dataclass, field
from pathlib import Path

from autotx_lib import __version__
from autotx_lib import journal as J
from autotx_lib.config import Config
from autotx_lib.errors import (
    CopyInterrupted,
    DestinationError,
    DestinationFullError,
    DestinationLayoutError,
    EmptyDatasetError,
    JournalBusyError,
    JournalError,
    SourceChangedError,
    TransferError,
    UnsafePathError,
)
from autotx_lib.hub.reporter import start_reporter
from autotx_lib.journal import Journal, utcnow
from autotx_lib.journal.instrument_sessions import SessionStore
from autotx_lib.transfer import control
from autotx_lib.transfer import copy as C
from autotx_lib.transfer.agent_lock import AgentLock, lock_paths
from autotx_lib.transfer.destination import check_destination
from autotx_lib.transfer.gate import GateMonitor, blocking_reasons
from autotx_lib.transfer.grace import grace_report
from autotx_lib.transfer.layout import (
    ManagedFolders,
    SourceFile,
    check_name,
    free_name,
    fsync_dir,
    list_dataset,
    make_stamp,
    move_dir,
    parse_stamped,
    stamped_name,
)
from autotx_lib.transfer.live_sync import LiveSync, use_live_copies
from autotx_lib.transfer.notify import Notifier
from autotx_lib.transfer.readiness import check_ready, scan_incoming
from autotx_lib.transfer.recheck import recheck_delivered, recheck_due, record_progress
from autotx_lib.transfer.sessions import LoginFollower, close_if_idle, current_session
from autotx_lib.transfer.status import LIVE_PROGRESS_KEY, WAITING_KEY
from autotx_lib.units import human_bytes

log = logging.getLogger("autotx")

RETRY_BASE_SECONDS = 30.0
HOUSEKEEPING_SECONDS = 3600.0  # grace and free-space checks (their mails are rate limited too)
RETRY_MAX_SECONDS = 3600.0
JOURNAL_BATCH_SECONDS = 0.5
PROGRESS_SECONDS = 1.0  # live byte progress and rate written to the journal this often
RATE_WINDOW_SECONDS = 5.0
MAX_SEAL_ROUNDS = 3  # sources changed after verification this often: wait for quiet instead


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


@dataclass
class RunSummary:
    """What one :meth:`Agent.run` did: dataset ids by outcome."""

    delivered: list[int] = field(default_factory=list)
    unmatched: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    retrying: list[int] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # folders not ready yet, with reason
    paused: list[str] = field(default_factory=list)  # why nothing was started (gate)

    @property
    def ok(self) -> bool:
        """True when nothing failed and nothing is left to retry."""
        return not (self.failed or self.retrying)


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


class Agent:
    """Moves finished datasets from ``incoming`` to ``destination``, verified.

    Parameters
    ----------
    config : Config
        The agent's configuration.
    journal : Journal, optional
        Defaults to ``Journal(config.journal_url)``.
    on_progress : callable, optional
        Receives a :class:`Progress` about twice a second during a copy.
    on_event : callable, optional
        Receives ``(level, message)`` for every journal event (for faces that print them).
    notifier : Notifier, optional
        Queues e-mails (user: delivered, interrupted; admin: quarantines, destination
        problems, low space, grace, start-up, unclean shutdown). Default: from the config
        (no mail when ``email.smtp_host`` is empty).
    after_delivery : list of callables, optional
        Each receives the journal row of every dataset delivered (state "done"); this is
        where :mod:`autotx_lib.pipelines` queues its jobs (OMERO import, plate QC). They
        must be quick (queue work, do not do it) and never raise.
    """

    def __init__(self, config: Config, *, journal: Journal | None = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 on_event: Callable[[str, str], None] | None = None,
                 after_delivery: list[Callable] | None = None,
                 notifier: Notifier | None = None):
        self.config = config
        self.journal = journal or Journal(config.journal_url)
        self.journal.claim(config.agent_id)  # another agent's journal is refused here
        self.folders = ManagedFolders(config.managed)
        self.on_progress = on_progress
        self.on_event = on_event
        self.after_delivery = list(after_delivery or [])
        self.notifier = notifier or Notifier(config, self.journal)
        self._housekeeping_at = 0.0
        self._quiet_until: dict[Path, tuple[float, str]] = {}  # skip re-walking until then
        self._seen: dict[Path, tuple] = {}  # folder -> (TreeState, unchanged since)
        self.stop_requested = threading.Event()
        self._recovering: set[int] = set()
        self._seal_rounds: dict[int, int] = {}
        self._open_session = None
        self._live_sync: LiveSync | None = None
        self._session_ends: dict[str, float] = {}  # user -> when their session ended
        self._login = LoginFollower(config) if config.sessions.follow_login else None
        self._session: int | None = None
        self._bandwidth_cache = (0.0, None)

    # --- the loop ---------------------------------------------------------------------

    def run(self, once: bool = False) -> RunSummary:
        """Run the agent: ``once=True`` processes what is ready now and returns.

        Without ``once`` it polls every ``config.poll_seconds`` until :meth:`stop`.

        Raises
        ------
        AgentRunningError
            Another agent already runs on this managed folder or journal.
        JournalError
            The journal was removed or replaced while the agent ran, or cannot be used.
        """
        self.folders.create()
        self.config.incoming.mkdir(parents=True, exist_ok=True)
        with AgentLock(lock_paths(self.config.managed, self.config.journal_url)):
            return self._run_locked(once)

    def _run_locked(self, once: bool) -> RunSummary:
        self.journal.protect()
        session, unclean = self.journal.start_session(self.config.host_alias, os.getpid(),
                                                      __version__)
        self._session = session
        hub_stop = threading.Event()
        reporter = start_reporter(self.config, self.journal, hub_stop)  # None without [hub]
        if unclean is not None:  # we hold the lock, so that agent is really gone
            self._event("warning", "unclean-shutdown", f"the previous agent session "
                        f"(pid {unclean.pid}, started {unclean.started_at:%Y-%m-%d %H:%M}) "
                        "did not stop cleanly; resuming its work")
            self.notifier.unclean_shutdown(unclean)
        self.notifier.startup_report()
        self._adopt_orphans()
        summary = RunSummary()
        try:
            self._recovering = {row.id for row in self.journal.datasets_in(J.ACTIVE_STATES)}
            while True:
                self._check_journal()
                try:
                    self._one_pass(summary, session, once)
                except JournalBusyError as error:
                    self._busy_journal(error)
                if once or self.stop_requested.is_set():
                    break
                self.journal.heartbeat(session, "paused" if summary.paused else "idle",
                                       "; ".join(summary.paused) or None)
                self.stop_requested.wait(self.config.poll_seconds)
        finally:
            self.journal.end_session(session)
            self.notifier.flush()
            hub_stop.set()  # the reporter sends what is left, then ends
            if reporter is not None:
                reporter.join(self.config.hub.timeout_seconds)
        finished = {*summary.delivered, *summary.unmatched, *summary.failed}
        summary.retrying = [i for i in summary.retrying if i not in finished]
        return summary

    def _check_journal(self) -> None:
        """Stop, telling the admin, when the journal was deleted or replaced under us."""
        try:
            self.journal.check_unchanged()
        except JournalError as error:
            self._event("error", "journal-lost", str(error))
            self.notifier.needs_attention("journal-lost", "its journal was deleted or replaced",
                                          str(error))
            self.notifier.flush()
            raise

    def _one_pass(self, summary: RunSummary, session: int, once: bool) -> None:
        """Claim what is ready, advance every active dataset, housekeeping, mail."""
        self.journal.heartbeat(session, "scanning")
        self._instrument_session_step()
        claimed, summary.waiting = self.scan()
        for dataset_id in claimed:
            self._record_outcome(summary, self.journal.dataset(dataset_id))
        summary.paused = self._gate_blocks() if self._has_work() else []
        for row in self.journal.datasets_in(J.ACTIVE_STATES) if not summary.paused else []:
            if self.stop_requested.is_set():
                break
            if not once and not self._due(row):
                continue
            self.journal.heartbeat(session, "transferring", f"{row.user}/{row.name}")
            self._record_outcome(summary, self.process(row.id))
        self._housekeeping()
        if not summary.paused and not self._has_work():
            self._recheck_one()
        self.notifier.flush()

    def _recheck_one(self) -> None:
        """While idle: hash one delivered dataset again (``[verify] recheck_days``)."""
        after_id = recheck_due(self.journal, self.config.verify.recheck_days)
        if after_id is None:
            return
        try:
            report = recheck_delivered(self.config, journal=self.journal, limit=1,
                                       after_id=after_id)
        except DestinationError as error:
            log.info("recheck postponed: %s", error)
            return
        record_progress(self.journal, report, after_id)
        for failed in report.failed:
            self.notifier.needs_attention(
                "recheck", f"{failed.user}/{failed.name} no longer matches what was delivered",
                f"The delivered copy {failed.dest_path} was hashed again and differs from what "
                "was delivered:\n" + "\n".join(f"  {p}" for p in failed.problems[:20]))

    def _instrument_session_step(self) -> None:
        """Sessions: follow the console login, close an idle session, live sync."""
        if self._login is not None:
            change = self._login.poll()
            if change:
                self._event("info", "session-login", f"session {change} with the console login")
        if close_if_idle(self.config, self.journal) is not None:
            self._event("info", "session-timeout", "the open session was closed: no activity "
                        f"for {self.config.sessions.idle_timeout_minutes:g} min")
        self._open_session = session = current_session(self.journal, self.config.host_alias)
        since = utcnow() - dt.timedelta(days=1)
        self._session_ends = {row.user: row.ended_at.timestamp() for row in
                              SessionStore(self.journal).ended_since(self.config.host_alias,
                                                                     since)}
        sync = self._live_sync
        if sync is not None and (session is None or session.id != sync.session_id):
            self._live_sync = None  # its session ended: one last pass now, before the claim
            session = sync.session()
        if session is None or not self.config.sessions.live_sync:
            return
        if self._gate_blocks():
            if not session.open:
                sync.close()  # no last pass: what is left is copied at delivery
            return  # the acquisition wins: nothing is synced while the gate is closed
        if sync is None or sync.session_id != session.id:
            sync = self._live_sync = LiveSync(self.config, self.journal, session.id)
        gate = sync.throttle = self._gate_monitor().start()
        try:
            step = sync.step(session, should_stop=self.stop_requested.is_set)
        except (TransferError, OSError) as error:
            log.info("live sync postponed: %s", error)
            return
        finally:
            gate.stop()
        if step.copied_files:
            log.info("live sync: %d file(s), %s copied for %s", step.copied_files,
                     human_bytes(step.copied_bytes), session.user)

    @staticmethod
    def _busy_journal(error: JournalBusyError) -> None:
        """Another process holds the journal: say so and try again at the next poll."""
        log.warning("%s; trying again at the next poll", error)

    def _adopt_orphans(self) -> None:
        """Take back what processing/ holds that the journal does not know.

        This happens when the journal was deleted or replaced while datasets were being
        processed: they are queued again (every file is hashed and copied again, nothing
        trusted) and the admin is told.
        """
        known = self.journal.known_processing_paths()
        adopted = []
        for folder in sorted(self.folders.processing.iterdir()):
            if str(folder) in known or folder.is_symlink() or not folder.is_dir():
                continue
            stamp, user, name = parse_stamped(folder.name)
            if user is None:
                self._event("error", "orphan", f"{folder} is in processing/ but was not put "
                            "there by the agent (its name is not <stamp>__<user>__<dataset>); "
                            "left untouched: move it back to incoming/<user>/ by hand")
                continue
            dataset_id = self.journal.add_dataset(
                user=user, name=name, stamp=stamp, state=J.QUEUED,
                incoming_path=str(self.config.incoming / user / name),
                processing_path=str(folder), algorithm=self.config.verify.algorithm)
            adopted.append(f"{user}/{name}")
            self._event("warning", "adopted", f"{user}/{name}: found in {folder} but unknown "
                        "to the journal (journal lost or replaced?); queued again, every file "
                        "is hashed and copied again", dataset_id)
        if adopted:
            self.notifier.needs_attention(
                "adopted", f"{len(adopted)} dataset(s) adopted from processing/",
                "The journal did not know these datasets, which were being processed (was the "
                "journal deleted or replaced?). They are queued again; every file will be "
                "hashed and copied again, and nothing was lost:\n" +
                "\n".join(f"  {a}" for a in adopted))

    def stop(self) -> None:
        """Ask the agent to stop: files under way finish, nothing new starts."""
        self.stop_requested.set()

    # --- the resource gate ------------------------------------------------------------

    def _has_work(self) -> bool:
        return bool(self.journal.datasets_in(J.ACTIVE_STATES))

    def _suspension_reason(self) -> str | None:
        suspended = control.suspension(self.journal)
        return suspended.reason if suspended else None

    def _bandwidth(self) -> float | None:
        """The cap in MB/s: set while running (control.set_bandwidth), else the config's."""
        checked, value = self._bandwidth_cache
        if time.monotonic() - checked > 1.0:
            value = control.effective_bandwidth(self.config, self.journal)
            self._bandwidth_cache = (time.monotonic(), value)
        return value

    def _gate_blocks(self) -> list[str]:
        """Reasons not to start a dataset now (one reading); recorded for `autotx status`."""
        reasons = blocking_reasons(self.config.gate, self.config.destination,
                                   self._suspension_reason())
        if reasons and self._session is not None:
            self.journal.heartbeat(self._session, "paused", "; ".join(reasons))
        return reasons

    def _gate_changed(self, reasons: list[str]) -> None:
        if reasons:
            self._event("warning", "paused", "transfer paused: " + "; ".join(reasons))
        else:
            self._event("info", "resumed", "transfer resumed")
        if self._session is not None:
            self.journal.heartbeat(self._session, "paused" if reasons else "transferring",
                                   "; ".join(reasons) or None)

    def _gate_monitor(self) -> GateMonitor:
        return GateMonitor(self.config.gate, self.config.destination,
                           suspension=self._suspension_reason, on_change=self._gate_changed,
                           stall_seconds=self.config.copy_.stall_seconds,
                           bandwidth=self._bandwidth, interrupted=self.stop_requested.is_set)

    def _housekeeping(self) -> None:
        """Hourly: report low free space and expired grace folders to the admin."""
        if time.monotonic() - self._housekeeping_at < HOUSEKEEPING_SECONDS:
            return
        self._housekeeping_at = time.monotonic()
        checks = [(c.path, c.min_free_mb) for c in self.config.space_monitoring]
        if self.config.gate.min_free_destination_mb:
            checks.append((self.config.destination, self.config.gate.min_free_destination_mb))
        for path, threshold in checks:
            try:
                free_mb = shutil.disk_usage(path).free / 1e6
            except OSError:
                continue
            if free_mb < threshold:
                self._event("warning", "low-space", f"{path}: {free_mb:.0f} MB free, below "
                            f"{threshold} MB")
                self.notifier.low_space(path, free_mb, threshold)
        report = grace_report(self.config, self.journal)
        if report.expired:
            self.notifier.grace_summary(report)

    def _due(self, row) -> bool:
        return row.next_attempt_at is None or row.next_attempt_at <= utcnow()

    @staticmethod
    def _record_outcome(summary: RunSummary, row) -> None:
        target = {J.DONE: summary.delivered, J.UNMATCHED: summary.unmatched,
                  J.ERROR: summary.failed}.get(row.state, summary.retrying)
        if row.id not in target:
            target.append(row.id)

    # --- finding and claiming ---------------------------------------------------------

    def scan(self) -> tuple[list[int], list[str]]:
        """Claim every dataset folder in incoming/ that is ready.

        Returns the ids of the claimed datasets, and the folders still waiting (with why).
        """
        candidates, strays = scan_incoming(self.config.incoming)
        for stray in strays:
            self._report_once("stray", stray)
        known = self.journal.known_incoming_paths()
        claimed: list[int] = []
        waiting: list[dict] = []
        now = time.time()

        def wait(user: str, folder: Path, reason: str, until: float | None) -> None:
            waiting.append({"user": user, "name": folder.name, "path": str(folder),
                            "reason": reason, "until": _utc_iso(until)})

        live_user = self._open_session.user if self._open_session is not None and \
            self.config.sessions.live_sync else None
        for user, folder in candidates:
            if str(folder) in known:
                continue
            if user == live_user:
                wait(user, folder, f"{user}'s session is open: its files are synced live and "
                     "the dataset is delivered when the session ends", None)
                continue
            until, reason = self._quiet_until.get(folder, (0.0, ""))
            ended = self._session_ends.get(user)
            if now < until and ended is None:  # a change can only push this later
                wait(user, folder, reason, until)
                continue
            readiness = self._readiness(folder, now, ended)
            self._seen[folder] = (readiness.state, readiness.unchanged_since)
            if readiness.clock_skew is not None:
                self._report_once("clock-skew", f"{user}/{folder.name}: files are dated in "
                                  "the future (the instrument's or file server's clock is "
                                  "ahead?); quiet is measured by the agent's clock instead")
            if readiness.ready:
                self._quiet_until.pop(folder, None)
                self._seen.pop(folder, None)
                claimed.append(self.claim(user, folder))
            else:
                if readiness.quiet_until is not None:
                    self._quiet_until[folder] = (readiness.quiet_until, readiness.reason)
                wait(user, folder, readiness.reason, readiness.quiet_until)
        current = {folder for _, folder in candidates}
        self._seen = {k: v for k, v in self._seen.items() if k in current}
        if waiting or self.journal.get_setting(WAITING_KEY):
            self.journal.set_setting(WAITING_KEY, waiting)  # for `autotx status` and faces
        return claimed, [f"{w['user']}/{w['name']}: {w['reason']}" for w in waiting]

    def _readiness(self, folder: Path, now: float, session_ended: float | None):
        """Is ``folder`` finished? After its user's session ended (the user said so), a
        folder unchanged since the end needs no quiet period; the marker file and open
        files still count."""
        seen = self._seen.get(folder)
        if session_ended is not None:
            settings = self.config.readiness.model_copy(update={"quiet_seconds": 0.0})
            readiness = check_ready(folder, settings, now=now, seen=seen)
            if not readiness.ready or readiness.state.newest_change <= session_ended:
                return readiness
        return check_ready(folder, self.config.readiness, now=now, seen=seen)

    def _report_once(self, kind: str, message: str) -> None:
        if not self.journal.has_event(kind, message):
            self._event("warning", kind, message)

    def claim(self, user: str, folder: Path) -> int:
        """Take ownership of a ready dataset: move it from incoming/ to processing/."""
        stamp = make_stamp()
        try:
            check_name(user, self.config.incoming)
            check_name(folder.name, folder.parent)
        except UnsafePathError as error:
            return self._claim_unsafe(user, folder, stamp, error)
        processing = free_name(self.folders.processing, stamped_name(stamp, user, folder.name))
        dataset_id = self.journal.add_dataset(
            user=user, name=folder.name, stamp=stamp, state=J.CLAIMING,
            incoming_path=str(folder), processing_path=str(processing),
            algorithm=self.config.verify.algorithm)
        os.rename(folder, processing)
        fsync_dir(processing.parent)
        self.journal.update_dataset(dataset_id, state=J.QUEUED)
        self._event("info", "claimed", f"{user}/{folder.name} is ready; queued", dataset_id)
        return dataset_id

    def _claim_unsafe(self, user: str, folder: Path, stamp: str, error: UnsafePathError) -> int:
        safe_user = _printable(user)
        safe_name = _printable(folder.name)
        dataset_id = self.journal.add_dataset(
            user=safe_user, name=safe_name, stamp=stamp, state=J.QUARANTINING,
            incoming_path=_printable(str(folder)), processing_path=_printable(str(folder)),
            algorithm=self.config.verify.algorithm, error=str(error))
        self._quarantine_from(dataset_id, folder, safe_user, safe_name, stamp, str(error))
        return dataset_id

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

    def _prepare(self, row) -> bool:
        """Check destination and user folder, list the files, start copying."""
        user_folder = self.config.destination / row.user
        self._check_destination()
        if not user_folder.is_dir():
            if not self.config.create_user_dirs:
                listing = list_dataset(Path(row.processing_path))
                self.journal.update_dataset(row.id, state=J.UNMATCHING, error=(
                    f"no folder {user_folder} at the destination"),
                    total_files=len(listing.files), total_bytes=listing.total_bytes)
                return True
            try:
                user_folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise DestinationError(user_folder, str(error)) from None
        source = Path(row.processing_path)
        listing = list_dataset(source)
        if not listing.files:
            raise EmptyDatasetError(source)
        for skipped in listing.skipped:
            self._event("warning", "skipped", f"{row.user}/{row.name}: {skipped}", row.id)
        self._reconcile_files(row.id, listing.files)
        tmp = self.config.tmp_path / row.user / stamped_name(row.stamp, row.name)
        if not any(f.verified for f in self.journal.files_of(row.id)) and tmp.exists():
            shutil.rmtree(tmp)  # a stale partial copy (e.g. journal lost): nothing in it counts
        self.journal.update_dataset(
            row.id, state=J.COPYING, tmp_path=str(tmp), total_files=len(listing.files),
            total_bytes=listing.total_bytes, attempts=row.attempts + 1,
            started_at=row.started_at or utcnow(), error=None)
        return True

    def _check_destination(self) -> None:
        check_destination(self.config.destination, self.journal, self.config.host_alias)

    def _reconcile_files(self, dataset_id: int, listed: list[SourceFile]) -> list[str]:
        """Bring the journal's file rows in line with the source; returns what changed."""
        known = {f.relpath: f for f in self.journal.files_of(dataset_id)}
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
        source = Path(row.processing_path)
        tmp = Path(row.tmp_path)
        self._check_destination()
        self._recheck_verified(row, tmp, rehash=row.id in self._recovering)
        self._recovering.discard(row.id)
        self._take_live_copies(row, tmp)
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

        def on_file(result: C.CopiedFile) -> None:
            batch.append({"relpath": result.relpath, "digest": result.digest,
                          "size": result.size, "mtime_ns": result.mtime_ns,
                          "copies": result.copies})
            state["files"] += 1
            if time.monotonic() - state["flushed"] > JOURNAL_BATCH_SECONDS:
                flush()

        def tick() -> None:
            if batch and time.monotonic() - state["flushed"] > JOURNAL_BATCH_SECONDS:
                flush()  # progress visible to `autotx status` at least twice a second
            publish_progress()
            if self.on_progress is not None:
                self.on_progress(Progress(row.id, row.user, row.name, state["files"],
                                          len(rows), counter.value, row.total_bytes, started))

        gate = self._gate_monitor().start()
        try:
            C.copy_files(todo, source, tmp, row.algorithm, workers=self.config.copy_.workers,
                         verify=self.config.verify.mode,
                         max_attempts=self.config.copy_.max_attempts_per_file,
                         on_file=on_file, on_bytes=counter.add,
                         should_stop=self.stop_requested.is_set, tick=tick, throttle=gate)
        except CopyInterrupted:
            pass  # checkpointed below: what was verified is in the journal
        finally:
            gate.stop()
            flush()
            tick()
            self.journal.set_setting(LIVE_PROGRESS_KEY, None)
        if self.stop_requested.is_set() and state["files"] < len(rows):
            self.notifier.transfer_interrupted(self.journal.dataset(row.id))
            return False  # checkpointed: verified files are in the journal
        return self._seal(row, tmp, listed)

    def _take_live_copies(self, row, tmp: Path) -> None:
        """Files live-synced during a session and unchanged since: moved, not copied."""
        taken = use_live_copies(self.config, self.journal, row.user, row.name,
                                Path(row.processing_path), tmp, self.journal.files_of(row.id))
        if taken:
            done = [f for f in self.journal.files_of(row.id) if f.verified]
            self.journal.mark_verified(row.id, taken, sum(f.size for f in done) +
                                       sum(t["size"] for t in taken), len(done) + len(taken))
            self._event("info", "live-synced", f"{row.user}/{row.name}: {len(taken)} file(s) "
                        "were synced during the session and are taken over unchanged", row.id)

    def _recheck_verified(self, row, tmp: Path, rehash: bool) -> None:
        """Check that files verified earlier are still intact in tmp; re-copy those that are not.

        After a crash (``rehash``) their content is hashed again, since a power loss can
        leave a file of the right size but wrong content; otherwise size is checked.
        """
        bad = []
        for entry in self.journal.files_of(row.id):
            if not entry.verified:
                continue
            target = tmp / entry.relpath
            if not target.is_file() or target.stat().st_size != entry.size or \
                    (rehash and C.hash_file(target, row.algorithm) != entry.digest):
                bad.append(entry.relpath)
        if bad:
            self.journal.reset_files(row.id, bad)
            self._event("warning", "recheck", f"{row.user}/{row.name}: {len(bad)} file(s) "
                        "copied earlier are missing or changed in the tmp area; copying them again",
                        row.id)

    def _sources_changed_since_verified(self, row) -> bool:
        """Re-list the source: a file changed or added after it was verified is copied again.

        Raises
        ------
        SourceChangedError
            The source kept changing for ``MAX_SEAL_ROUNDS`` rounds: wait for quiet.
        """
        changed = self._reconcile_files(row.id, list_dataset(Path(row.processing_path)).files)
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

    def _seal(self, row, tmp: Path, relpaths: set[str]) -> bool:
        """All files verified: write the manifest, sync, and pick the final name."""
        if self._sources_changed_since_verified(row):
            return True  # still COPYING: the changed files are copied in the next round
        entries = [(r.relpath, r.digest) for r in self.journal.files_of(row.id)]
        try:
            manifest = C.write_manifest(tmp, entries, row.algorithm, taken=relpaths)
            C.sync_filesystem(tmp)
        except OSError as error:
            raise DestinationError(tmp, str(error)) from None
        digest = C.hash_file(manifest, row.algorithm)
        dest = free_name(self.config.destination / row.user, row.name)
        self.journal.update_dataset(row.id, state=J.DELIVERING, dest_path=str(dest),
                                    manifest_path=str(dest / manifest.name),
                                    manifest_digest=digest)
        return True

    def _deliver(self, row) -> bool:
        """One rename makes the dataset appear whole at the destination."""
        tmp, dest = Path(row.tmp_path), Path(row.dest_path)
        self._check_destination()  # an unmounted share must not look like a lost tmp copy
        if tmp.is_dir():
            if os.path.lexists(dest):  # taken since the name was chosen: never overwrite
                dest = free_name(dest.parent, row.name)
                self.journal.update_dataset(row.id, dest_path=str(dest),
                                            manifest_path=str(dest / Path(row.manifest_path).name))
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
            self.journal.reset_files(row.id)
            self.journal.update_dataset(row.id, state=J.QUEUED, error="the verified copy "
                                        "vanished from the destination's tmp area; copying again")
            self._event("error", "lost-tmp", f"{row.user}/{row.name}: the verified copy "
                        "vanished from the tmp area before delivery; copying again", row.id)
            return True
        if dest.name != row.name:
            self._event("warning", "renamed", f"{row.user}/{row.name} already existed at the "
                        f"destination; delivered as {dest.name}", row.id)
        self.journal.update_dataset(row.id, state=J.DELIVERED)
        return True

    def _finish(self, row) -> bool:
        """Move the source to the grace area (managed/done/)."""
        source = Path(row.processing_path)
        target = self.folders.done / row.user / stamped_name(row.stamp, row.name)
        if source.exists():
            target = move_dir(source, target)
        elif row.final_path:
            target = Path(row.final_path)
        self.journal.update_dataset(row.id, state=J.DONE, final_path=str(target),
                                    finished_at=utcnow(), next_attempt_at=None)
        self._event("info", "delivered", f"{row.user}/{row.name}: {row.total_files} files, "
                    f"{human_bytes(row.total_bytes)} delivered to {row.dest_path}, verified "
                    f"({row.algorithm}); the original rests in {target}", row.id)
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

    def _event(self, level: str, kind: str, message: str, dataset_id: int | None = None) -> None:
        self.journal.log(level, kind, message, dataset_id)
        getattr(log, "warning" if level == "warning" else level)(message)
        if self.on_event is not None:
            self.on_event(level, message)


def _utc_iso(when: float | None) -> str | None:
    """A ``time.time()`` value as aware UTC ISO text (None stays None)."""
    if when is None:
        return None
    return dt.datetime.fromtimestamp(when, dt.UTC).isoformat(timespec="seconds")


def _printable(text: str) -> str:
    """Text safe for the journal and the filesystem, even from a name that is not UTF-8."""
    cleaned = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return "".join(ch if ch.isprintable() else "_" for ch in cleaned).replace("\ufffd", "_")
