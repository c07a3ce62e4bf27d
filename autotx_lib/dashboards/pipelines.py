"""PipelineLog: the execution log of pipeline runs, filtered and sorted, with statistics.

Every number comes from :mod:`autotx_lib.pipelines.log`: a page of runs (filter by
workflow, status and date; sort; page through), a click on a run shows its steps and
result items, and bokeh charts show the runs per day by status and the duration
percentiles per workflow.

Examples
--------
>>> from autotx_lib.dashboards.pipelines import PipelineLog     # doctest: +SKIP
>>> PipelineLog("autotx.toml").widget                            # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
from typing import Any

from autotx_lib._optional import require
from autotx_lib.config import Config, load_config
from autotx_lib.journal import Journal
from autotx_lib.journal.pipeline_runs import RUN_STATES, PipelineStore
from autotx_lib.pipelines import log as runlog

#: Colours of the statuses in the charts and the table.
STATUS_COLORS = {"created": "#9e9e9e", "started": "#1f77b4", "finished": "#2ca02c",
                 "error": "#d62728", "cancelled": "#8c564b", "timeout": "#ff7f0e"}
SORTS = {"newest first": "-id", "oldest first": "id", "longest first": "-duration_s",
         "workflow": "workflow", "status": "status"}


def _cell(value: Any, width: int = 60) -> str:
    text = "" if value is None or value != value else str(value)
    return html.escape(text[:width])


class PipelineLog:
    """Runs table with filters and paging, run details, statistics charts.

    Parameters
    ----------
    source : Config, str or Path
        The agent's configuration (or its file); the journal is read from it.
    page_size : int
        Runs per page.
    """

    def __init__(self, source: Config | str | os.PathLike, *, page_size: int = 25) -> None:
        require("ipywidgets", "for the pipeline log")
        self.config = source if isinstance(source, Config) else load_config(source)
        self.journal = Journal(self.config.journal_url)
        self.page_size = page_size
        self.page = 0
        self.frame = None
        self._build()
        self.refresh()

    def _build(self) -> None:
        import ipywidgets as W

        workflows = ["(all)", *sorted(PipelineStore(self.journal).workflows_seen())]
        self.workflow = W.Dropdown(options=workflows, description="workflow")
        self.status = W.Dropdown(options=["(all)", *RUN_STATES], description="status")
        self.since = W.DatePicker(description="since")
        self.sort = W.Dropdown(options=list(SORTS), description="sort")
        self.previous = W.Button(description="< newer", layout=W.Layout(width="90px"))
        self.next = W.Button(description="older >", layout=W.Layout(width="90px"))
        self.refresh_button = W.Button(description="refresh", icon="refresh")
        self.counter = W.Label()
        self.runs = W.Select(options=[], rows=min(self.page_size, 15),
                             layout=W.Layout(width="100%"))
        self.detail = W.HTML()
        self.history = W.HTML()
        self.charts = W.VBox()
        for control in (self.workflow, self.status, self.since, self.sort):
            control.observe(self._filter_changed, names="value")
        self.previous.on_click(lambda _b: self.go(-1))
        self.next.on_click(lambda _b: self.go(+1))
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.runs.observe(lambda change: self.show(change["new"]), names="value")
        filters = W.HBox([self.workflow, self.status, self.since, self.sort])
        paging = W.HBox([self.previous, self.next, self.refresh_button, self.counter])
        log_tab = W.VBox([filters, paging, self.runs, self.detail, self.history])
        self.tabs = W.Tab(children=[log_tab, self.charts])
        self.tabs.set_title(0, "runs")
        self.tabs.set_title(1, "statistics")
        self.tabs.observe(lambda change: self.draw_charts() if change["new"] == 1 else None,
                          names="selected_index")
        self.widget = W.VBox([W.HTML("<h3 style='margin:4px 0'>Pipeline runs</h3>"), self.tabs])

    # --- the runs table ---------------------------------------------------------------

    def filters(self) -> dict[str, Any]:
        """The chosen filters, as :func:`autotx_lib.pipelines.log.runs` takes them."""
        since = self.since.value
        return {"workflow": None if self.workflow.value == "(all)" else self.workflow.value,
                "status": None if self.status.value == "(all)" else self.status.value,
                "since": dt.datetime.combine(since, dt.time(), dt.UTC) if since else None}

    def _filter_changed(self, _change: Any) -> None:
        self.page = 0
        self.refresh()

    def go(self, step: int) -> None:
        """Show the next (+1) or previous (-1) page."""
        self.page = max(0, self.page + step)
        self.refresh()

    def refresh(self) -> None:
        """Read the current page of runs from the journal."""
        filters = self.filters()
        total = runlog.count(self.journal, **filters)
        last = max(0, (total - 1) // self.page_size)
        self.page = min(self.page, last)
        self.frame = runlog.runs(self.journal, order=SORTS[self.sort.value],
                                 limit=self.page_size, offset=self.page * self.page_size,
                                 **filters)
        self.runs.options = [(self._line(r), int(r.id)) for r in self.frame.itertuples()]
        self.counter.value = (f"{total} runs; page {self.page + 1} of {last + 1}" if total
                              else "no runs match")
        self.previous.disabled = self.page == 0
        self.next.disabled = self.page >= last

    @staticmethod
    def _line(r: Any) -> str:
        took = "" if r.duration_s != r.duration_s or r.duration_s is None \
            else f"{r.duration_s:8.1f} s"
        created = r.created_at.strftime("%Y-%m-%d %H:%M") if r.created_at == r.created_at \
            else ""
        return (f"#{r.id:<6} {r.status:<9} {r.workflow:<14} {created}  {took:>10}  "
                f"{os.path.basename(str(r.dataset_path))}")

    def show(self, run_id: int | None) -> None:
        """Show one run's status, result items and step log."""
        if run_id is None:
            self.detail.value = self.history.value = ""
            return
        d = runlog.run_detail(self.journal, run_id)
        self.show_history(d["dataset_id"] if d["dataset_id"] is not None else d["dataset_path"])
        color = STATUS_COLORS.get(d["status"], "black")
        rows = "".join(f"<tr><td><b>{_cell(k)}</b></td><td>{_cell(json.dumps(v), 300)}</td>"
                       "</tr>" for k, v in d["results"].items())
        steps = "".join(
            f"<tr><td>{s.attempt}</td><td>{_cell(s.name)}</td><td>{_cell(s.status)}</td>"
            f"<td>{s.duration_s:.2f} s</td><td>{_cell(s.message, 200)}</td></tr>"
            for s in d["steps"].itertuples())
        error = f"<p style='color:#d62728'>{_cell(d['error'], 2000)}</p>" if d["error"] else ""
        took = "" if d["duration_s"] is None else f", took {d['duration_s']:.1f} s"
        self.detail.value = (
            f"<h4>run {d['id']}: {_cell(d['workflow'])} {_cell(d['version'])} "
            f"<span style='color:{color}'>{d['status']}</span></h4>"
            f"<p>{_cell(d['dataset_path'], 300)}<br>by {_cell(d['initiator'])}, attempt "
            f"{d['attempts']} of {d['max_attempts']}{took}</p>{error}"
            f"<table><tr><th>result</th><th>value</th></tr>{rows}</table>"
            "<table><tr><th>attempt</th><th>step</th><th>status</th><th>took</th>"
            f"<th>message</th></tr>{steps}</table>")

    def show_history(self, dataset: int | str) -> None:
        """Show a dataset's timeline: created, transferred, events, every pipeline run."""
        frame = runlog.history(self.journal, dataset)
        lines = "".join(
            f"<tr><td>{r.at:%Y-%m-%d %H:%M:%S}</td><td>{_cell(r.what)}</td>"
            f"<td style='color:{STATUS_COLORS.get(str(r.status), 'black')}'>{_cell(r.status)}"
            f"</td><td>{_cell(r.detail, 160)}</td></tr>" for r in frame.itertuples())
        self.history.value = (f"<h4>history of {_cell(dataset, 200)}</h4><table>{lines}</table>"
                              if lines else "")

    # --- statistics --------------------------------------------------------------------

    def statistics_figures(self) -> list[Any]:
        """Bokeh figures: runs per day by status, duration percentiles per workflow."""
        from bokeh.models import ColumnDataSource
        from bokeh.plotting import figure

        by_day = runlog.statistics(self.journal, by="day")
        days = list(by_day.index)
        stacked = figure(x_range=days or ["-"], height=260, width=700,
                         title="runs per day by status", toolbar_location=None)
        if days:
            data = {"day": days} | {s: by_day[s].tolist() for s in RUN_STATES}
            stacked.vbar_stack(list(RUN_STATES), x="day", width=0.8,
                               source=ColumnDataSource(data),
                               color=[STATUS_COLORS[s] for s in RUN_STATES],
                               legend_label=list(RUN_STATES))
            stacked.legend.location = "top_left"
            stacked.xaxis.major_label_orientation = 0.8
        by_workflow = runlog.statistics(self.journal, by="workflow").fillna(0.0)
        names = list(by_workflow.index)
        durations = figure(y_range=names or ["-"], height=60 + 40 * max(1, len(names)),
                           width=700, title="duration per workflow: median and 90th "
                           "percentile (s)", toolbar_location=None)
        if names:
            source = ColumnDataSource({"workflow": names,
                                       "p50": by_workflow["p50_s"].tolist(),
                                       "p90": by_workflow["p90_s"].tolist()})
            durations.hbar(y="workflow", right="p90", height=0.6, source=source,
                           color="#c6dbef", legend_label="p90")
            durations.hbar(y="workflow", right="p50", height=0.6, source=source,
                           color="#1f77b4", legend_label="p50")
        return [stacked, durations]

    def draw_charts(self) -> None:
        """(Re)draw the statistics tab."""
        import ipywidgets as W
        from bokeh.layouts import column

        from autotx_lib.imaging.viewer import bokeh_widget

        errors = runlog.error_statistics(self.journal).head(10)
        lines = "".join(f"<tr><td>{r.runs}</td><td>{_cell(r.workflow)}</td>"
                        f"<td>{_cell(r.error, 160)}</td></tr>" for r in errors.itertuples())
        table = W.HTML(f"<h4>most frequent errors</h4><table>{lines}</table>" if lines
                       else "<p>no errors</p>")
        self.charts.children = [bokeh_widget(column(*self.statistics_figures())), table]


__all__ = ["PipelineLog", "STATUS_COLORS"]
