"""FacilityMonitor: every instrument PC of the facility at a glance, from the hub.

One tile per agent (state colour, what it copies and how far, why it waits, last seen; an
agent silent for 3 heartbeats is "lost"); click a tile for its detail and controls
(suspend, resume, bandwidth, requeue: commands the agent picks up at its next poll); a
history tab (datasets, events) and a statistics tab (tables and bokeh charts). Everything
comes from the hub's API through :class:`~autotx_lib.hub.client.HubClient`.

Examples
--------
>>> from autotx_lib.dashboards.facility import FacilityMonitor       # doctest: +SKIP
>>> monitor = FacilityMonitor("https://hub.example.org:8765", token)  # doctest: +SKIP
>>> monitor.widget                                                   # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import os
import tomllib
from pathlib import Path
from typing import Any

from autotx_lib._optional import require
from autotx_lib.dashboards._format import Markup, badge, html_table, human_bytes
from autotx_lib.dashboards._refresh import PeriodicRefresh
from autotx_lib.errors import HubError
from autotx_lib.hub.client import HubClient

log = logging.getLogger("autotx.dashboards")

#: Tile colours by agent state.
STATE_COLOURS = {
    "transferring": "#1f77b4", "idle": "#2ca02c", "scanning": "#17becf", "paused": "#ff7f0e",
    "lost": "#d62728", "stopped": "#7f7f7f", "not running": "#7f7f7f", "starting": "#17becf",
}


def load_hub_access(path: str | os.PathLike[str]) -> HubClient:
    """A client from a small TOML file: ``url``, ``token_file`` and optionally ``ca_file``.

    This is what ``autotx dashboard facility -c FILE`` reads.
    """
    path = Path(path)
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    missing = [key for key in ("url", "token_file") if key not in data]
    if missing:
        raise HubError(f"{path}: add {' and '.join(missing)} (the hub's URL and a file "
                       "holding a viewer or operator token)")
    token = (path.parent / data["token_file"]).read_text(encoding="utf-8").strip()
    ca_file = str(path.parent / data["ca_file"]) if data.get("ca_file") else True
    return HubClient(data["url"], token, verify=ca_file)


def stats_charts(tables: dict[str, Any]) -> Any:
    """Bokeh charts of the statistics tables: bytes per day and instrument, datasets and
    failures per user."""
    from bokeh.layouts import row
    from bokeh.models import ColumnDataSource
    from bokeh.palettes import Category10
    from bokeh.plotting import figure

    day = tables["day"]
    per_day = figure(title="delivered GB per day", x_range=sorted(set(day.get("day", []))),
                     height=260, width=460, toolbar_location=None)
    agents = sorted(set(day.get("agent_id", [])))
    for i, agent in enumerate(agents):
        part = day[day["agent_id"] == agent]
        per_day.scatter(list(part["day"]), list(part["bytes"] / 1e9), size=9, legend_label=agent,
                        color=Category10[10][i % 10])
    user = tables["user"]
    users = list(user.get("user", []))
    per_user = figure(title="datasets and failures per user", x_range=users, height=260,
                      width=460, toolbar_location=None)
    if users:
        source = ColumnDataSource({"user": users, "datasets": list(user["datasets"]),
                                   "failures": list(user["failures"])})
        per_user.vbar(x="user", top="datasets", width=0.8, source=source, color="#1f77b4",
                      legend_label="datasets")
        per_user.vbar(x="user", top="failures", width=0.5, source=source, color="#d62728",
                      legend_label="failures")
    return row(per_day, per_user)


#: Badge colours by pipeline run status.
RUN_COLOURS = {"finished": "#2ca02c", "started": "#1f77b4", "created": "#17becf",
               "error": "#d62728", "timeout": "#d62728", "cancelled": "#7f7f7f"}


def _minute(when: Any) -> str:
    """An ISO time as 'YYYY-MM-DD HH:MM' (empty for none, or a DataFrame's NaN)."""
    return when[:16].replace("T", " ") if isinstance(when, str) else ""


def _ago(when: str | None) -> str:
    if not when:
        return "never"
    seconds = (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(when)).total_seconds()
    if seconds < 90:
        return f"{max(seconds, 0):.0f} s ago"
    return f"{seconds / 60:.0f} min ago" if seconds < 5400 else f"{seconds / 3600:.1f} h ago"


class FacilityMonitor(PeriodicRefresh):
    """Live view of every agent reporting to the hub, with controls.

    Parameters
    ----------
    source : HubClient or str
        A client, or the hub's URL (then give ``token``).
    token : str, optional
        A viewer token (to look) or operator token (to also send commands).
    interval : float
        Seconds between updates of the tiles.
    start : bool
        Start the background updates now.
    """

    refresh_name = "autotx-facility-monitor"

    def __init__(self, source: HubClient | str, token: str | None = None, *,
                 interval: float = 2.0, start: bool = True):
        require("ipywidgets", "for the facility dashboard")
        self.client = source if isinstance(source, HubClient) else HubClient(source, token or "")
        self.interval = float(interval)
        self.agents: list[dict] = []
        self.selected: str | None = None
        self._init_refresh()
        self._build()
        self.refresh()
        if start:
            self.start()

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **kwargs: Any) -> FacilityMonitor:
        """A monitor for the hub named in a TOML file (see :func:`load_hub_access`)."""
        return cls(load_hub_access(path), **kwargs)

    # --- widgets ------------------------------------------------------------------------

    def _build(self) -> None:
        import ipywidgets as W

        self.title = W.HTML(f"<h3 style='margin:4px 0'>Facility &mdash; "
                            f"{html.escape(self.client.url)}</h3>")
        self.updated = W.HTML()
        self.tiles = W.GridBox(layout=W.Layout(
            grid_template_columns="repeat(auto-fill, 230px)", grid_gap="8px"))
        self.detail = W.HTML("<i>click an instrument for its detail and controls</i>")
        self.reason = W.Text(placeholder="why (shown at the instrument)", description="reason")
        self.bandwidth = W.Text(placeholder="e.g. 20M, off, empty: config",
                                description="bandwidth")
        self.dataset_id = W.IntText(description="dataset id")
        self.message = W.HTML()
        buttons = {name: W.Button(description=name) for name in
                   ("suspend", "resume", "set bandwidth", "requeue")}
        buttons["suspend"].on_click(lambda _b: self._act(lambda a: self.suspend(
            a, self.reason.value or "suspended from the facility dashboard")))
        buttons["resume"].on_click(lambda _b: self._act(self.resume))
        buttons["set bandwidth"].on_click(lambda _b: self._act(
            lambda a: self.set_bandwidth(a, self.bandwidth.value.strip() or None)))
        buttons["requeue"].on_click(lambda _b: self._act(
            lambda a: self.requeue(a, self.dataset_id.value)))
        self.controls = W.VBox([
            W.HBox([self.reason, buttons["suspend"], buttons["resume"]]),
            W.HBox([self.bandwidth, buttons["set bandwidth"]]),
            W.HBox([self.dataset_id, buttons["requeue"]]), self.message])
        self.history = W.HTML()
        self.statistics = W.VBox()
        reload = W.Button(description="refresh")
        reload.on_click(lambda _b: self.refresh_history())
        facility = W.VBox([self.tiles, W.HTML("<hr>"), self.detail, self.controls])
        self.tabs = W.Tab(children=[facility, W.VBox([reload, self.history]), self.statistics])
        for i, name in enumerate(("Facility", "History", "Statistics")):
            self.tabs.set_title(i, name)
        self.tabs.observe(self._tab_changed, names="selected_index")
        self.widget = W.VBox([self.title, self.updated, self.tabs])

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _tile(self, agent: dict) -> Any:
        import ipywidgets as W

        state = agent["state"]
        current = agent.get("current") or {}
        doing = (f"{html.escape(current['user'])}/{html.escape(current['name'])}"
                 if current else "nothing to copy")
        waits = agent.get("suspended") or (agent.get("detail") if state == "paused" else None)
        lines = [f"<b>{html.escape(agent['id'])}</b> "
                 f"{badge(state, STATE_COLOURS.get(state, '#7f7f7f'))}",
                 f"<small>{doing}; queue {agent.get('queue_length', 0)}</small>"]
        if waits:
            lines.append(f"<small style='color:#ff7f0e'>waits: {html.escape(waits)}</small>")
        session = agent.get("session")
        if session:
            lines.append(f"<small>session: {html.escape(session['user'])} since "
                         f"{html.escape(session['started_at'][11:16])} UTC</small>")
        lines.append(f"<small>last seen {_ago(agent['last_seen'])}</small>")
        progress = W.FloatProgress(value=float(current.get("percent") or 0), min=0, max=100,
                                   layout=W.Layout(width="200px", height="10px"))
        button = W.Button(description="details", layout=W.Layout(width="80px"))
        button.on_click(lambda _b, a=agent["id"]: self.select(a))
        colour = STATE_COLOURS.get(state, "#7f7f7f")
        return W.VBox([W.HTML("<br>".join(lines)), progress, button],
                      layout=W.Layout(border=f"2px solid {colour}", padding="4px"))

    # --- actions (each one HTTP request: the agent acts at its next poll) ---------------

    def _act(self, action: Any) -> None:
        if self.selected is None:
            self.message.value = "<span style='color:#d62728'>select an instrument first</span>"
            return
        try:
            command = action(self.selected)
            self.message.value = (f"command {command['id']} ({command['action']}) queued for "
                                  f"{html.escape(self.selected)}; it runs at the agent's next poll")
        except HubError as error:
            self.message.value = f"<span style='color:#d62728'>{html.escape(str(error))}</span>"
        self.show_detail()

    def suspend(self, agent_id: str, reason: str) -> dict:
        """Ask an agent to suspend transfers."""
        return self.client.command(agent_id, "suspend", reason=reason)

    def resume(self, agent_id: str) -> dict:
        """Ask an agent to resume."""
        return self.client.command(agent_id, "resume")

    def set_bandwidth(self, agent_id: str, value: str | float | None) -> dict:
        """Ask an agent to change its bandwidth cap (None: back to its config)."""
        return self.client.command(agent_id, "set_bandwidth", value=value)

    def requeue(self, agent_id: str, dataset_id: int) -> dict:
        """Ask an agent to requeue a quarantined or unmatched dataset."""
        return self.client.command(agent_id, "requeue", dataset_id=int(dataset_id))

    # --- updates ------------------------------------------------------------------------

    def select(self, agent_id: str) -> None:
        """Show one agent's detail and aim the controls at it."""
        self.selected = agent_id
        self.message.value = ""
        self.show_detail()

    def show_detail(self) -> None:
        """Refresh the selected agent's detail (status, queue, waiting, commands)."""
        if self.selected is None:
            return
        agent = self.client.agent(self.selected)
        status = agent.get("status") or {}
        queue = [(d["id"], d["user"], d["name"], d["state"], human_bytes(d["total_bytes"]))
                 for d in status.get("queue") or []]
        waiting = [(w["user"], w["name"], w["reason"]) for w in status.get("waiting") or []]
        free = [(name, human_bytes(v) if v is not None else "unknown")
                for name, v in (agent.get("free_space") or {}).items()]
        commands = self.client.request("GET", f"/agents/{self.selected}/commands")
        rows = [(c["id"], c["action"], ", ".join(f"{k}={v}" for k, v in c["args"].items()),
                 c["state"], c["created_by"], c.get("result") or "") for c in commands[:10]]
        offset = agent.get("clock_offset_s")
        self.detail.value = (
            f"<h4>{html.escape(self.selected)} "
            f"{badge(agent['state'], STATE_COLOURS.get(agent['state'], '#7f7f7f'))}</h4>"
            f"<p>{html.escape(agent.get('detail') or '')} &middot; last seen "
            f"{_ago(agent['last_seen'])}"
            + (f" &middot; its clock is {offset:+.0f} s off" if offset and abs(offset) > 5
               else "") + "</p>"
            + "<b>queue</b>" + html_table(["id", "user", "dataset", "state", "size"], queue,
                                          empty="nothing queued")
            + "<b>waiting</b>" + html_table(["user", "dataset", "why"], waiting,
                                            empty="nothing waiting")
            + "<b>free space</b>" + html_table(["destination", "free"], free)
            + "<b>commands</b>" + html_table(["id", "action", "args", "state", "by", "result"], rows,
                                             empty="none"))

    def refresh(self) -> list[dict]:
        """Read the agents from the hub and redraw the tiles; returns them."""
        try:
            self.agents = self.client.request("GET", "/agents")
        except HubError as error:
            self.updated.value = f"<small style='color:#d62728'>{html.escape(str(error))}</small>"
            return self.agents
        self.tiles.children = [self._tile(a) for a in self.agents]
        lost = sum(a["state"] == "lost" for a in self.agents)
        self.updated.value = (f"<small>{len(self.agents)} instruments"
                              + (f", <b style='color:#d62728'>{lost} lost</b>" if lost else "")
                              + f" &middot; updated {dt.datetime.now():%H:%M:%S}</small>")
        return self.agents

    def refresh_history(self) -> None:
        """Redraw the history tab: recent datasets, instrument sessions, pipeline runs and
        warnings/errors."""
        datasets = self.client.datasets(limit=50)
        rows = [(d["agent_id"], d["dataset_id"], d["user"], d["name"], Markup(badge(
                 d["state"], "#2ca02c" if d["state"] == "done" else "#d62728"
                 if d["state"] == "error" else "#7f7f7f")), human_bytes(d["total_bytes"]),
                 _minute(d.get("finished_at"))) for d in datasets.to_dict("records")]
        events = self.client.request("GET", "/events", params={"level": "error", "limit": 20})
        errors = [(e["agent_id"], e["at"], e["kind"], e["message"]) for e in events["items"]]
        sessions = [(s["agent_id"], s["user"], s.get("project") or "",
                     _minute(s["started_at"]), _minute(s.get("ended_at")) or "open",
                     s.get("end_reason") or "")
                    for s in self.client.request("GET", "/sessions", params={"limit": 20})["items"]]
        runs = [(r["agent_id"], r["run_id"], r["workflow"], r.get("user") or "",
                 Markup(badge(r["status"], RUN_COLOURS.get(r["status"], "#7f7f7f"))),
                 _minute(r["created_at"]),
                 "" if r.get("duration_s") is None else f"{r['duration_s']:.1f} s",
                 (r.get("error") or "")[:120])
                for r in self.client.request("GET", "/runs", params={"limit": 20})["items"]]
        self.history.value = (
            "<b>recent datasets</b>" + html_table(["agent", "id", "user", "dataset", "state",
                                                   "size", "finished (UTC)"], rows)
            + "<b>instrument sessions</b>" + html_table(
                ["agent", "user", "project", "started (UTC)", "ended", "why"], sessions,
                empty="no sessions yet", css_class="autotx-table autotx-sessions")
            + "<b>pipeline runs</b>" + html_table(
                ["agent", "id", "workflow", "user", "status", "created (UTC)", "took",
                 "error"], runs, empty="no pipeline runs yet",
                css_class="autotx-table autotx-runs")
            + "<b>errors</b>" + html_table(["agent", "at (agent clock)", "kind", "message"],
                                           errors, empty="no errors"))

    def refresh_statistics(self) -> dict[str, Any]:
        """Redraw the statistics tab (tables and charts); returns the tables."""
        import ipywidgets as W

        from autotx_lib.imaging.viewer import bokeh_widget, ensure_inline_bokeh

        tables = self.client.stats()
        ensure_inline_bokeh()
        parts: list[Any] = [bokeh_widget(stats_charts(tables))]
        for name, frame in tables.items():
            parts.append(W.HTML(f"<b>{name}</b>" + html_table(
                list(frame.columns), frame.itertuples(index=False), empty="no data yet")))
        self.statistics.children = parts
        return tables

    def _tab_changed(self, change: dict) -> None:
        try:
            if change["new"] == 1:
                self.refresh_history()
            elif change["new"] == 2:
                self.refresh_statistics()
        except HubError as error:
            self.updated.value = f"<small style='color:#d62728'>{html.escape(str(error))}</small>"

    def _tick(self) -> None:
        self.refresh()
        if self.selected is not None:
            self.show_detail()


__all__ = ["FacilityMonitor", "load_hub_access", "stats_charts", "STATE_COLOURS", "RUN_COLOURS"]
