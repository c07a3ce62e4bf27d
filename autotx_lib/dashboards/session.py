"""SessionLogger: start and end an instrument session with one big button (the NexusLIMS
logger's job), and see what is already safe.

Every button calls :mod:`autotx_lib.transfer.sessions`; the numbers come from the
journal (files seen in the user's incoming folder, files and bytes already live-synced).

Examples
--------
>>> from autotx_lib.dashboards.session import SessionLogger     # doctest: +SKIP
>>> SessionLogger("autotx.toml").widget                          # doctest: +SKIP
"""

from __future__ import annotations

import html
import logging
import os

from autotx_lib._optional import require
from autotx_lib.config import Config, load_config
from autotx_lib.dashboards._refresh import PeriodicRefresh
from autotx_lib.journal import Journal, utcnow
from autotx_lib.journal.instrument_sessions import SessionStore
from autotx_lib.transfer.sessions import current_session, end_session, start_session
from autotx_lib.units import human_bytes, human_duration, local_time

log = logging.getLogger("autotx.dashboards")


def _seen(root) -> tuple[int, int]:
    """(files, bytes) under a folder; symlinks not followed."""
    files = size = 0
    for folder, _dirs, names in os.walk(root):
        for name in names:
            try:
                info = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            files += 1
            size += info.st_size
    return files, size


class SessionLogger(PeriodicRefresh):
    """Start/end button, user and project, elapsed time, files seen and already safe.

    Parameters
    ----------
    source : Config, str or Path
        The agent's configuration (or its file).
    interval : float
        Seconds between updates.
    start : bool
        Start the background updates at once.
    """

    refresh_name = "autotx-session-logger"

    def __init__(self, source: Config | str | os.PathLike, *, interval: float = 2.0,
                 start: bool = True) -> None:
        require("ipywidgets", "for the session logger")
        self.config = source if isinstance(source, Config) else load_config(source)
        self.journal = Journal(self.config.journal_url)
        self.interval = interval
        self._init_refresh()
        self._build()
        self.refresh()
        if start:
            self.start()

    def _build(self) -> None:
        import ipywidgets as W

        self.title = W.HTML(f"<h3 style='margin:4px 0'>{html.escape(self.config.host_alias)}"
                            " &mdash; instrument session</h3>")
        self.user = W.Text(description="user", placeholder="your user name")
        self.project = W.Text(description="project", placeholder="optional")
        self.button = W.Button(layout=W.Layout(width="320px", height="64px"))
        self.button.style.font_size = "20px"
        self.state = W.HTML()
        self.message = W.HTML()
        self.button.on_click(lambda _: self.toggle())
        self.widget = W.VBox([self.title, W.HBox([self.user, self.project]), self.button,
                              self.state, self.message])
        self.widget.add_class("autotx-session-logger")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def toggle(self) -> None:
        """End the open session, or start one for the user in the form (the button)."""
        try:
            if current_session(self.config) is None:
                session = start_session(self.config, self.user.value,
                                        project=self.project.value.strip() or None,
                                        started_by="widget")
                text = f"session started for {session.user}"
            else:
                session = end_session(self.config)
                text = (f"session of {session.user} ended after "
                        f"{human_duration(session.duration().total_seconds())}")
            self.message.value = f"<span style='color:#2ca02c'>{html.escape(text)}</span>"
        except Exception as error:  # noqa: BLE001 - shown to the user; the widget stays
            self.message.value = (f"<span style='color:#d62728'><b>could not do it:</b> "
                                  f"{html.escape(str(error))}</span>")
        self.refresh()

    def refresh(self) -> None:
        """Read the journal and the user's folder now and update the widgets."""
        session = current_session(self.config)
        if session is None:
            self.button.description, self.button.button_style = "Start session", "success"
            self.user.disabled = self.project.disabled = False
            self.state.value = "<i>no session is open</i>"
            return
        self.button.description, self.button.button_style = "End session", "danger"
        self.user.value, self.user.disabled = session.user, True
        self.project.value, self.project.disabled = session.project or "", True
        files, size = _seen(self.config.incoming / session.user)
        synced = SessionStore(self.journal).live_files(session.id).values()
        self.state.value = (
            f"<b>{html.escape(session.user)}</b> since {local_time(session.started_at)} "
            f"(<b>{human_duration(session.duration(utcnow()).total_seconds())}</b>)<br>"
            f"seen: {files} files, {human_bytes(size)}; already safe: {len(synced)} files, "
            f"{human_bytes(sum(r.size for r in synced))}")

