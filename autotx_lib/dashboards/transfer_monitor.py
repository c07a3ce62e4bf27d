"""TransferMonitor: the AutoTx tray application, as a live Jupyter dashboard.

It reads the journal (:func:`autotx_lib.transfer.status.status`), so it watches an agent
running in another process or on another machine sharing the journal. Its buttons call
:func:`~autotx_lib.transfer.control.suspend`, :func:`~autotx_lib.transfer.control.resume`
and :func:`~autotx_lib.transfer.submit.submit`; nothing is decided here.

Examples
--------
>>> from autotx_lib.dashboards import TransferMonitor     # doctest: +SKIP
>>> monitor = TransferMonitor("autotx.toml")               # doctest: +SKIP
>>> monitor.widget                                          # doctest: +SKIP
>>> monitor.close()   # stops the background updates      # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import getpass
import html
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from autotx_lib._optional import require
from autotx_lib.config import Config, load_config
from autotx_lib.dashboards._format import (
    Markup,
    badge,
    html_table,
    human_bytes,
    human_duration,
    local_time,
)
from autotx_lib.dashboards._refresh import PeriodicRefresh
from autotx_lib.journal import Journal
from autotx_lib.transfer import control
from autotx_lib.transfer.requeue import requeue
from autotx_lib.transfer.status import Status, status
from autotx_lib.transfer.submit import submit

log = logging.getLogger("autotx.dashboards")

#: Colours of the agent's states.
STATE_COLOURS = {
    "transferring": "#1f77b4", "idle": "#2ca02c", "scanning": "#17becf", "paused": "#ff7f0e",
    "suspended": "#d62728", "stopped": "#7f7f7f", "not running": "#7f7f7f",
    "never started": "#7f7f7f", "starting": "#17becf",
}

JOB_COLOURS = {"finished": "#2ca02c", "error": "#d62728", "started": "#1f77b4",
               "created": "#7f7f7f", "cancelled": "#ff7f0e", "timeout": "#d62728"}
GRACE_PLACEHOLDER = ("grace summary: not available (needs autotx_lib.transfer.grace, "
                     "which this installation lacks)")

#: How often (seconds) the grace summary, which walks the done folder, is recomputed.
GRACE_INTERVAL = 30.0


def _grace_report_function() -> Any:
    try:
        from autotx_lib.transfer.grace import grace_report
    except ImportError:
        return None
    return grace_report


class TransferMonitor(PeriodicRefresh):
    """Live view of the transfer agent, with suspend/resume and a submit form.

    Parameters
    ----------
    source : Config, Journal, str or Path
        The agent's configuration (or the path of its file), or an open journal. With a
        journal alone the submit form and the grace summary are unavailable (they need
        the configuration's folders).
    interval : float, optional
        Seconds between updates from the journal.
    start : bool, optional
        Start the background updates now (else call :meth:`start`).
    history, events : int, optional
        How many finished datasets and events to show.

    Attributes
    ----------
    widget : ipywidgets.VBox
    last_status : Status or None
        The snapshot on screen.
    """

    refresh_name = "autotx-transfer-monitor"

    def __init__(self, source: Config | Journal | str | os.PathLike, *, interval: float = 1.0,
                 start: bool = True, history: int = 15, events: int = 8) -> None:
        require("ipywidgets", "for the transfer monitor")
        if isinstance(source, str | os.PathLike):
            source = load_config(source)
        if isinstance(source, Config):
            self.config: Config | None = source
            self.journal = Journal(source.journal_url)
        elif isinstance(source, Journal):
            self.config, self.journal = None, source
        else:
            raise TypeError(f"give a Config, a Journal or a config file path, not "
                            f"{type(source).__name__}")
        if interval <= 0:
            raise ValueError(f"interval={interval}: give a positive number of seconds")
        self.interval = float(interval)
        self.history, self.events = history, events
        self.last_status: Status | None = None
        self._lock = threading.RLock()
        self._init_refresh()
        self._grace_at = 0.0
        self._grace_function = _grace_report_function()
        self._build()
        self.refresh()
        if start:
            self.start()

    # --- widgets ------------------------------------------------------------------------

    def _build(self) -> None:
        import ipywidgets as W

        title = "AutoTx transfer monitor"
        if self.config is not None:
            title = (f"{html.escape(self.config.host_alias or 'this instrument')} &rarr; "
                     f"{html.escape(self.config.destination_alias or self.config.primary_shown)}")
        self.title = W.HTML(f"<h3 style='margin:4px 0'>{title}</h3>")
        self.state = W.HTML()
        self.current = W.HTML()
        self.progress = W.FloatProgress(value=0, min=0, max=100, description="",
                                        layout=W.Layout(width="420px"))
        self.queue = W.HTML()
        self.results = W.HTML()
        self.jobs = W.HTML()
        self.event_log = W.HTML()
        self.grace = W.HTML()
        self.updated = W.HTML()
        self.reason = W.Text(placeholder="why (shown to others), e.g. calibration until 14:00",
                             description="reason", layout=W.Layout(width="420px"))
        self.suspend_button = W.Button(description="Suspend transfers", button_style="warning",
                                       icon="pause")
        self.resume_button = W.Button(description="Resume transfers", button_style="success",
                                      icon="play")
        self.submit_path = W.Text(placeholder="/path/to/finished/acquisition",
                                  description="folder", layout=W.Layout(width="420px"))
        self.submit_user = W.Text(value=getpass.getuser(), description="user",
                                  layout=W.Layout(width="240px"))
        self.submit_button = W.Button(description="Add folder", button_style="primary",
                                      icon="plus")
        self.requeue_target = W.Text(placeholder="dataset id, or its folder in managed/error or "
                                     "managed/unmatched", description="dataset",
                                     layout=W.Layout(width="420px"))
        self.requeue_button = W.Button(description="Requeue", button_style="primary",
                                       icon="redo")
        self.bandwidth_value = W.Text(placeholder="20M, 512k, off, default, or "
                                      "Mon-Fri 08:00,10M 19:00,off", description="bandwidth",
                                      layout=W.Layout(width="420px"))
        self.bandwidth_button = W.Button(description="Set bandwidth", icon="tachometer")
        self.message = W.HTML()
        self.requeue_button.on_click(lambda _: self._act(self._requeue))
        self.bandwidth_button.on_click(lambda _: self._act(self._set_bandwidth))
        self.suspend_button.on_click(lambda _: self._act(self._suspend))
        self.resume_button.on_click(lambda _: self._act(self._resume))
        self.submit_button.on_click(lambda _: self._act(self._submit))
        if self.config is None:
            for item in (self.submit_path, self.submit_user, self.submit_button,
                         self.requeue_target, self.requeue_button):
                item.disabled = True
            self.submit_path.placeholder = "needs the agent's configuration, not only its journal"

        def section(name: str) -> Any:
            return W.HTML(f"<b>{name}</b>")

        self.widget = W.VBox([
            self.title, self.state,
            section("Now"), self.current, self.progress,
            section("Queue"), self.queue,
            section("Recent results"), self.results,
            self.grace,
            section("After delivery (OMERO import, ...)"), self.jobs,
            W.Accordion(children=[self.event_log], titles=("Recent events",)),
            section("Suspend or resume"),
            W.HBox([self.reason, self.suspend_button, self.resume_button]),
            section("Add a finished folder (the tray app's “add new directory”)"),
            W.HBox([self.submit_path, self.submit_user, self.submit_button]),
            section("Requeue a quarantined or unmatched dataset (once its cause is fixed)"),
            W.HBox([self.requeue_target, self.requeue_button]),
            section("Bandwidth cap (live)"),
            W.HBox([self.bandwidth_value, self.bandwidth_button]),
            self.message, self.updated,
        ], layout=W.Layout(padding="4px"))
        self.widget.add_class("autotx-transfer-monitor")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # --- actions (each one library call) -------------------------------------------------

    def _act(self, action: Any) -> None:
        try:
            text = action()
            self.message.value = f"<span style='color:#2ca02c'>{html.escape(text)}</span>"
        except Exception as error:  # noqa: BLE001 - shown to the user, the monitor keeps running
            self.message.value = (f"<span style='color:#d62728'><b>could not do it:</b> "
                                  f"{html.escape(str(error))}</span>")
        self.refresh()

    def _suspend(self) -> str:
        record = control.suspend(self.journal, self.reason.value)
        self.reason.value = ""
        return f"transfers suspended: {record.reason}"

    def _resume(self) -> str:
        lifted = control.resume(self.journal)
        return "transfers resumed" if lifted else "transfers were not suspended"

    def _submit(self) -> str:
        if self.config is None:
            raise RuntimeError("submitting needs the agent's configuration")
        path = self.submit_path.value.strip()
        if not path:
            raise ValueError("give the folder to add")
        queued = submit(self.config, Path(path).expanduser(), self.submit_user.value.strip())
        self.submit_path.value = ""
        return f"added: {queued} (the agent takes it once it has been quiet)"

    def _requeue(self) -> str:
        if self.config is None:
            raise RuntimeError("requeueing needs the agent's configuration")
        target = self.requeue_target.value.strip()
        if not target:
            raise ValueError("give the dataset's id or its folder")
        done = requeue(self.config, target, journal=self.journal)
        self.requeue_target.value = ""
        notes = "".join(f"; note: {w}" for w in done.warnings)
        return f"requeued: {done.target}{notes}"

    def _set_bandwidth(self) -> str:
        value = self.bandwidth_value.value.strip()
        if not value:
            raise ValueError("give a rate (20M), off, default, or a timetable")
        setting = None if value.lower() == "default" else value
        control.set_bandwidth(self.journal, setting)
        shown = setting if setting is not None else (
            self.config.gate.bandwidth_mb_s if self.config is not None else None)
        return f"bandwidth: {control.describe_bandwidth(shown)}"

    def requeue(self, target: int | str) -> None:
        """Requeue a quarantined or unmatched dataset, as the button does."""
        self.requeue_target.value = str(target)
        text = self._requeue()
        self.message.value = html.escape(text)
        self.refresh()

    def set_bandwidth(self, value: str) -> None:
        """Set the live bandwidth cap (``20M``, ``off``, ``default``, a timetable)."""
        self.bandwidth_value.value = value
        self.message.value = html.escape(self._set_bandwidth())
        self.refresh()

    def suspend(self, reason: str) -> None:
        """Suspend transfers, as the button does (raises on an empty reason)."""
        control.suspend(self.journal, reason)
        self.refresh()

    def resume(self) -> None:
        """Resume transfers, as the button does."""
        control.resume(self.journal)
        self.refresh()

    # --- updates ------------------------------------------------------------------------

    def refresh(self) -> Status:
        """Read the journal now and update the widgets; returns the snapshot shown."""
        with self._lock:
            snapshot = status(self.journal, history=self.history, events=self.events)
            suspended = control.suspension(self.journal)
            self._show_state(snapshot, suspended)
            self._show_current(snapshot)
            self._show_queue(snapshot)
            self._show_results(snapshot)
            self._show_jobs(snapshot)
            self._show_events(snapshot)
            self._show_grace()
            self.updated.value = (f"<small style='color:#888'>updated "
                                  f"{dt.datetime.now():%H:%M:%S}</small>")
            self.last_status = snapshot
            return snapshot

    def _show_state(self, s: Status, suspended: control.Suspension | None) -> None:
        state = s.agent_state
        detail = s.agent_detail or ""
        if suspended is not None:
            label = badge("suspended", STATE_COLOURS["suspended"])
            text = (f"{html.escape(suspended.reason)} (by {html.escape(suspended.by)} since "
                    f"{local_time(suspended.since)}); agent: {html.escape(state)}")
        else:
            label = badge(state, STATE_COLOURS.get(state, "#7f7f7f"))
            text = html.escape(detail)
        self.state.value = f"<div class='autotx-state'>agent: {label} {text}</div>"

    def _show_current(self, s: Status) -> None:
        d = s.current
        if d is None:
            self.current.value = "<i>no transfer under way</i>"
            self.progress.value = 0
            self.progress.bar_style = ""
            return
        rate = d.rate_bytes_per_s
        paused = d.paused or s.suspended
        pace = (f"<b>paused</b>: {html.escape(paused)}" if paused else
                f"{human_bytes(rate) + '/s' if rate else 'rate unknown'}, "
                f"ETA {human_duration(d.eta_seconds)}")
        self.current.value = (
            f"<b>{html.escape(d.user)}/{html.escape(d.name)}</b> ({html.escape(d.state)}): "
            f"{human_bytes(d.copied_bytes)} of {human_bytes(d.total_bytes)}, "
            f"{d.copied_files} of {d.total_files} files, {pace}"
        )
        self.progress.value = round(d.percent, 1)
        self.progress.bar_style = "warning" if paused else "info"

    def _show_queue(self, s: Status) -> None:
        rows = [(d.user, d.name, d.state, human_bytes(d.total_bytes), d.total_files,
                 d.attempts, local_time(d.next_attempt_at) if d.next_attempt_at else "",
                 "; ".join(x for x in (d.error, d.destinations_line()) if x))
                for d in s.queue]
        rows += [(w.user, w.name, "waiting in incoming/", "", "", "",
                  local_time(w.until) if w.until else "", w.reason) for w in s.waiting]
        self.queue.value = html_table(
            ["user", "dataset", "state", "size", "files", "attempts", "not before", "why"],
            rows, empty="nothing queued, nothing waiting in incoming/")

    def _show_results(self, s: Status) -> None:
        def outcome(d: Any) -> Markup:
            if d.verified:
                return badge("verified", "#2ca02c")
            if d.state == "unmatched":
                return badge("unmatched: no user folder", "#ff7f0e")
            return badge(d.state, "#d62728")

        def where(d: Any) -> str:  # delivered copy; else why it stopped and where it rests
            if d.verified:
                return d.destinations_line() or d.dest_path or ""
            return "; ".join(x for x in (d.error, d.final_path) if x)

        rows = [(local_time(d.finished_at), d.user, d.name, outcome(d), human_bytes(d.total_bytes),
                 d.total_files, where(d)) for d in s.history]
        self.results.value = html_table(
            ["finished", "user", "dataset", "result", "size", "files", "where / why"], rows,
            empty="nothing transferred yet")

    def _show_jobs(self, s: Status) -> None:
        """Pipeline runs after delivery (OMERO import, plate QC ...), newest first; jobs
        of the journal's old jobs table below them, while there are any."""
        from autotx_lib.journal.pipeline_runs import PipelineStore

        def note(error: str | None, next_attempt: Any, state: str) -> str:
            return error or (f"next attempt {local_time(next_attempt)}"
                             if next_attempt and state != "finished" else "")

        def took(seconds: float | None) -> str:
            return human_duration(seconds) if seconds is not None else ""

        rows = [(local_time(r.created_at), r.workflow,
                 f"{r.user}/{Path(r.dataset_path).name}" if r.user else r.dataset_path,
                 badge(r.status, JOB_COLOURS.get(r.status, "#7f7f7f")), r.attempts,
                 took(r.duration_s), note(r.error, r.next_attempt_at, r.status))
                for r in PipelineStore(self.journal).query(limit=self.events)]
        datasets = {d.id: f"{d.user}/{d.name}" for d in s.queue + s.history}
        rows += [(local_time(j.created_at), j.kind, datasets.get(j.dataset_id, j.dataset_id or ""),
                  badge(j.state, JOB_COLOURS.get(j.state, "#7f7f7f")), j.attempts,
                  took(j.duration_s), note(j.error, j.next_attempt_at, j.state))
                 for j in s.jobs]
        self.jobs.value = html_table(
            ["queued", "workflow", "dataset", "state", "attempts", "took", "note"], rows,
            empty="no pipeline runs after delivery")

    def _show_events(self, s: Status) -> None:
        rows = [(local_time(e.at), e.level, e.kind, e.message) for e in s.events]
        self.event_log.value = html_table(["at", "level", "kind", "message"], rows,
                                          empty="no events")

    def _show_grace(self) -> None:
        if self.config is None:
            self.grace.value = "<i>grace summary: needs the agent's configuration</i>"
            return
        if self._grace_function is None:
            self.grace.value = f"<i>{html.escape(GRACE_PLACEHOLDER)}</i>"
            return
        now = time.monotonic()
        if self.grace.value and now - self._grace_at < GRACE_INTERVAL:
            return
        self._grace_at = now
        try:
            report = self._grace_function(self.config, self.journal)
        except Exception as error:  # noqa: BLE001 - a summary line must not stop the monitor
            self.grace.value = f"<i>grace summary unavailable: {html.escape(str(error))}</i>"
            return
        expired = report.expired
        self.grace.value = (
            f"<b>Grace area</b> (originals kept {report.grace_period_days} days in "
            f"{html.escape(str(report.done_folder))}): {len(report.entries)} folder(s), "
            f"{human_bytes(report.total_bytes)}; "
            + (f"<span style='color:#d62728'>{len(expired)} expired "
               f"({human_bytes(report.expired_bytes)})</span>" if expired else "none expired")
        )

    def _update_failed(self, error: Exception) -> None:
        self.updated.value = (f"<small style='color:#d62728'>update failed at "
                              f"{dt.datetime.now():%H:%M:%S}: {html.escape(str(error))}</small>")
