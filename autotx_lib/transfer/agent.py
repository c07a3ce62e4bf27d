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
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from autotx_lib import __version__
from autotx_lib import journal as J
from autotx_lib.config import Config, DestinationSettings
from autotx_lib.errors import (
    DestinationAuth,
    DestinationError,
    DestinationSettingsError,
    JournalBusyError,
    JournalError,
    TransferError,
    UnsafePathError,
)
from autotx_lib.hub.reporter import start_reporter
from autotx_lib.journal import Journal, utcnow
from autotx_lib.journal.instrument_sessions import SessionStore
from autotx_lib.transfer import control
from autotx_lib.transfer.agent_lock import AgentLock, lock_paths
from autotx_lib.transfer.destinations import Destination
from autotx_lib.transfer.destinations.free_space import record_free_space
from autotx_lib.transfer.fanout import Member, bandwidth_cap, open_member_destination
from autotx_lib.transfer.gate import GateMonitor, blocking_reasons, prime_cpu_meter
from autotx_lib.transfer.grace import grace_report
from autotx_lib.transfer.layout import (
    ManagedFolders,
    check_name,
    free_name,
    fsync_dir,
    make_stamp,
    parse_stamped,
    stamped_name,
)
from autotx_lib.transfer.live_sync import LiveSync
from autotx_lib.transfer.notify import Notifier
from autotx_lib.transfer.readiness import check_ready, scan_incoming
from autotx_lib.transfer.recheck import recheck_delivered, recheck_due, record_progress
from autotx_lib.transfer.sessions import LoginFollower, close_if_idle, current_session
from autotx_lib.transfer.status import WAITING_KEY
from autotx_lib.transfer.steps import DatasetSteps, Progress
from autotx_lib.units import human_bytes

log = logging.getLogger("autotx")

HOUSEKEEPING_SECONDS = 3600.0  # grace and free-space checks (their mails are rate limited too)


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


class Agent(DatasetSteps):
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
        self._opened: dict[str, Destination] = {}  # destination name -> its connection

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
            self._close_destinations()
        finished = {*summary.delivered, *summary.unmatched, *summary.failed}
        summary.retrying = [i for i in summary.retrying if i not in finished]
        return summary

    def _close_destinations(self) -> None:
        """Log off the shares this run opened (they connect again if used later); a run
        that ends must not leave connections, and their server-side sessions, behind."""
        for destination in self._opened.values():
            try:
                destination.close()
            except Exception as error:  # noqa: BLE001 - closing must not hide the run's outcome
                log.warning("closing destination %s: %s", destination.url, error)

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
        prime_cpu_meter()  # the gate check after the scan then reads CPU without waiting
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
            self._catch_up_idle()
            self._recheck_one()
        self.notifier.flush()

    def _catch_up_idle(self) -> None:
        """While idle: optional destinations that missed a dataset get their copy."""
        if len(self.config.targets) > 1 and not self._gate_blocks():
            self.catch_up_one()

    def _recheck_one(self) -> None:
        """While idle: hash one delivered dataset again (``[verify] recheck_days``), at the
        first destination whose round is due (the primary's first; an smb:// one is read
        through SMB)."""
        for number, target in enumerate(self.config.targets):
            name = None if number == 0 else target.name
            after_id = recheck_due(self.journal, self.config.verify.recheck_days,
                                   destination=name)
            if after_id is None:
                continue
            try:
                opened = self._destination(target) if target.local_path is None else None
                report = recheck_delivered(self.config, journal=self.journal, limit=1,
                                           after_id=after_id, destination=name,
                                           opened=opened)
            except DestinationError as error:
                log.info("recheck of %s postponed: %s", target.name, error)
                continue
            record_progress(self.journal, report, after_id, destination=name)
            for failed in report.failed:
                self.notifier.needs_attention(
                    "recheck", f"{failed.user}/{failed.name} no longer matches what was "
                    f"delivered to {target.name}", f"The delivered copy {failed.dest_path} was "
                    "hashed again and differs from what was delivered:\n"
                    + "\n".join(f"  {p}" for p in failed.problems[:20]))
            return

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

    def _gate_monitor(self, members: Sequence[Member] = ()) -> GateMonitor:
        """The gate watching one copy; the bandwidth cap is the lowest of the agent's and
        those of the destinations written."""
        return GateMonitor(self.config.gate, self.config.destination,
                           suspension=self._suspension_reason, on_change=self._gate_changed,
                           stall_seconds=self.config.copy_.stall_seconds,
                           bandwidth=lambda: bandwidth_cap(self._bandwidth(), members),
                           interrupted=self.stop_requested.is_set)

    def _destination(self, settings: DestinationSettings) -> Destination:
        """One configured destination, opened once (an SMB share keeps its connection)."""
        if settings.name not in self._opened:
            try:
                self._opened[settings.name] = open_member_destination(settings)
            except DestinationSettingsError as error:  # e.g. its password variable unset
                raise DestinationAuth(settings.url, str(error)) from None
        return self._opened[settings.name]

    def _free_bytes(self, settings: DestinationSettings,
                    destination: Destination | None = None) -> int:
        """A destination's free bytes, asked now (a share through the agent's connection),
        and recorded with the time for the hub heartbeat
        (:mod:`~autotx_lib.transfer.destinations.free_space`).

        Raises
        ------
        DestinationError
            The destination cannot be asked (unreachable, credentials refused).
        """
        free = (destination or self._destination(settings)).free_bytes()
        record_free_space(self.journal, settings.name, free)
        return free

    def _housekeeping(self) -> None:
        """Hourly: report low free space and expired grace folders to the admin.

        The watched folders (``space_monitoring``) and every destination are measured; a
        destination below its floor (its ``min_free_mb``; for the primary also
        ``gate.min_free_destination_mb``) is reported, an ``smb://`` share too (asked through
        the agent's connection). A destination that cannot be asked is skipped (logged at
        debug level): the copies report it when it matters.
        """
        if time.monotonic() - self._housekeeping_at < HOUSEKEEPING_SECONDS:
            return
        self._housekeeping_at = time.monotonic()
        for check in self.config.space_monitoring:
            try:
                free_mb = shutil.disk_usage(check.path).free / 1e6
            except OSError:
                continue
            self._report_low_space(check.path, free_mb, check.min_free_mb)
        for number, settings in enumerate(self.config.targets):
            floor = settings.min_free_mb
            if number == 0:
                floor = max(floor, self.config.gate.min_free_destination_mb)
            try:
                free_mb = self._free_bytes(settings) / 1e6
            except (DestinationError, OSError) as error:
                log.debug("free space of destination %s not measured: %s", settings.name,
                          error)
                continue
            self._report_low_space(settings.local_path or settings.url, free_mb, floor)
        report = grace_report(self.config, self.journal)
        if report.expired:
            self.notifier.grace_summary(report)

    def _report_low_space(self, where: Path | str, free_mb: float, threshold: int) -> None:
        if threshold and free_mb < threshold:
            self._event("warning", "low-space", f"{where}: {free_mb:.0f} MB free, below "
                        f"{threshold} MB")
            self.notifier.low_space(where, free_mb, threshold)

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
