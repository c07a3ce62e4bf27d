"""PlateQCDashboard: run plate quality control, pick a metric, click a well to see it.

Every number comes from :mod:`autotx_lib.imaging.plate` (:func:`discover_plate`,
:func:`plate_qc`, :func:`well_summary`, :func:`plate_heatmap`); this module only shows.

Examples
--------
>>> from autotx_lib.dashboards import PlateQCDashboard          # doctest: +SKIP
>>> board = PlateQCDashboard("/data/Plate_3435", run=True)      # doctest: +SKIP
>>> board.widget                                                 # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import html
import os
import threading
from typing import Any

import numpy as np

from autotx_lib._optional import require
from autotx_lib.dashboards._format import html_table
from autotx_lib.imaging.plate import (
    Plate,
    discover_plate,
    plate_heatmap,
    plate_qc,
    read_record_planes,
    well_summary,
)
from autotx_lib.imaging.viewer import (
    auto_contrast,
    bokeh_widget,
    ensure_inline_bokeh,
    palette_colors,
)

#: Metrics offered first in the picker when the table has them.
PREFERRED_METRICS = ("focus_score", "power_log_log_slope", "mean_intensity", "percent_maximal")

#: At most this many images of a well are drawn when it is clicked.
MAX_WELL_IMAGES = 8


class PlateQCDashboard:
    """Plate QC with progress, a heatmap whose wells are clickable, and the flagged wells.

    Parameters
    ----------
    source : path or Plate
        A plate folder or file (see :func:`~autotx_lib.imaging.plate.discover_plate`), or
        a discovered plate.
    run : bool, optional
        Measure the plate now (blocking); else press "Run QC" (runs in the background).
    **qc_options
        Passed to :func:`~autotx_lib.imaging.plate.plate_qc` (``metrics``, ``scheduler``,
        ``n_workers``, ``thresholds``...).

    Attributes
    ----------
    plate : Plate
    table : pandas.DataFrame or None
        The QC table once measured.
    selected_well : str or None
    """

    def __init__(self, source: str | os.PathLike | Plate, *, run: bool = False,
                 **qc_options: Any) -> None:
        require("ipywidgets", "for the plate QC dashboard")
        require("bokeh", "for the plate QC dashboard")
        self.plate = source if isinstance(source, Plate) else discover_plate(source)
        self.qc_options = qc_options
        self.table = None
        self.selected_well: str | None = None
        self.heatmap = None
        self._thread: threading.Thread | None = None
        self._build()
        if run:
            self.run()

    # --- widgets ------------------------------------------------------------------------

    def _build(self) -> None:
        import ipywidgets as W

        ensure_inline_bokeh()  # now, in the kernel's thread: QC may finish in another one
        p = self.plate
        channels = sorted({r.channel for r in p.records})
        self.header = W.HTML(
            f"<h3 style='margin:4px 0'>Plate {html.escape(p.name)}</h3>"
            f"{html.escape(p.vendor)} layout, {p.geometry.wells}-well plate, "
            f"{len(p.wells)} wells imaged, {len(p.records)} images"
            + (f", channels {html.escape(', '.join(c for c in channels if c))}"
               if any(channels) else ""))
        self.run_button = W.Button(description="Run QC", button_style="primary", icon="play")
        self.progress = W.IntProgress(value=0, min=0, max=max(1, len(p.records)),
                                      layout=W.Layout(width="360px"))
        self.progress_label = W.HTML("not measured yet")
        self.metric_picker = W.Dropdown(description="metric", options=[], disabled=True,
                                        layout=W.Layout(width="320px"))
        self.channel_picker = W.Dropdown(description="channel", options=[], disabled=True,
                                         layout=W.Layout(width="220px"))
        self.heatmap_box = W.Box()
        self.well_title = W.HTML()
        self.well_metrics = W.HTML()
        self.well_images = W.Box()
        self.flagged = W.HTML()
        self.run_button.on_click(lambda _: self.run_in_background())
        self.pickers = W.HBox([self.metric_picker, self.channel_picker])
        self.well_images.add_class("autotx-well-images")
        self.widget = W.VBox([
            self.header,
            W.HBox([self.run_button, self.progress, self.progress_label]),
            self.pickers,
            self.heatmap_box,
            self.well_title, self.well_metrics, self.well_images,
            W.HTML("<b>Flagged wells</b>"), self.flagged,
        ])
        self.widget.add_class("autotx-plate-qc")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # --- running ------------------------------------------------------------------------

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.max = max(1, total)
        self.progress.value = done
        self.progress_label.value = f"{done} / {total} images"

    def run(self) -> Any:
        """Measure the plate (blocking) and show the results; returns the QC table."""
        self.run_button.disabled = True
        self.progress_label.value = "measuring..."
        try:
            table = plate_qc(self.plate, progress=self._on_progress, **self.qc_options)
        except Exception as error:
            self.progress_label.value = (f"<span style='color:#d62728'>QC failed: "
                                         f"{html.escape(str(error))}</span>")
            raise
        finally:
            self.run_button.disabled = False
        self.show_table(table)
        return table

    def run_in_background(self) -> threading.Thread:
        """Start :meth:`run` in a thread, so the notebook stays responsive."""
        if self._thread is not None and self._thread.is_alive():
            return self._thread

        def target() -> None:
            with contextlib.suppress(Exception):  # already shown in the progress label
                self.run()

        self._thread = threading.Thread(target=target, name="autotx-plate-qc", daemon=True)
        self._thread.start()
        return self._thread

    def show_table(self, table: Any) -> None:
        """Show an existing QC table (from :func:`plate_qc`) without measuring again."""
        self.table = table
        failed = int((table["error"].fillna("") != "").sum()) if "error" in table else 0
        self.progress_label.value = (f"{len(table)} images measured, {int(table['flagged'].sum())} "
                                     f"flagged, {failed} unreadable")
        from autotx_lib.imaging.qc import ALL_METRICS

        metrics = [m for m in ALL_METRICS if m in table.columns]
        metrics.sort(key=lambda m: (PREFERRED_METRICS.index(m) if m in PREFERRED_METRICS
                                    else len(PREFERRED_METRICS)))
        channels = list(dict.fromkeys(table["channel"]))
        # new pickers rather than new options: a dropdown whose options change from a
        # background thread can show no selection in the browser
        self.metric_picker = self._picker("metric", metrics, "320px")
        self.channel_picker = self._picker("channel", channels, "220px")
        old = self.pickers.children
        self.pickers.children = [self.metric_picker, self.channel_picker]
        for widget in old:
            widget.close()
        self._draw_heatmap()
        self._show_flagged()

    def _picker(self, name: str, options: list[str], width: str) -> Any:
        import ipywidgets as W

        picker = W.Dropdown(description=name, options=options,
                            value=options[0] if options else None,
                            layout=W.Layout(width=width))
        picker.observe(lambda _: self._draw_heatmap(), names="value")
        return picker

    # --- heatmap and wells --------------------------------------------------------------

    def _draw_heatmap(self) -> None:
        if self.table is None or not self.metric_picker.value:
            return
        from bokeh.models import ColumnDataSource, TapTool

        figure = plate_heatmap(self.table, self.metric_picker.value,
                               channel=self.channel_picker.value)
        figure.add_tools(TapTool())
        source = next(r.data_source for r in figure.renderers
                      if isinstance(r.data_source, ColumnDataSource)
                      and "well" in r.data_source.data)
        self.heatmap = figure
        self.heatmap_source = source

        def on_select(attr: str, old: list[int], new: list[int]) -> None:
            if new:
                well = source.data["well"][new[0]]
                if source.data["n"][new[0]]:
                    self.select_well(well)

        source.selected.on_change("indices", on_select)
        old = list(self.heatmap_box.children)
        self.heatmap_box.children = [bokeh_widget(figure)]
        for widget in old:
            widget.close()
        if self.selected_well:
            self.select_well(self.selected_well)

    def select_well(self, well: str) -> None:
        """Show a well's images and metrics (what a click on the heatmap does)."""
        if self.table is None:
            raise RuntimeError("run the QC first (the Run QC button or .run())")
        rows = self.table[self.table["well"] == well]
        if rows.empty:
            raise ValueError(f"well {well!r} has no images on this plate; imaged wells: "
                             f"{', '.join(self.plate.wells)}")
        self.selected_well = well
        metric = self.metric_picker.value
        channel = self.channel_picker.value
        columns = [c for c in ("field", "channel", "z", "t", metric, "flags", "error")
                   if c in rows.columns]
        self.well_title.value = (f"<b>Well {html.escape(well)}</b>: {len(rows)} images, "
                                 f"{int(rows['flagged'].sum())} flagged")
        self.well_metrics.value = html_table(
            columns, rows[columns].itertuples(index=False, name=None))
        self._draw_well_images(well, channel)

    def _draw_well_images(self, well: str, channel: str | None) -> None:
        from bokeh.layouts import gridplot
        from bokeh.models import LinearColorMapper
        from bokeh.plotting import figure

        records = [r for r in self.plate.records if r.well == well]
        figures = []
        for record in records:
            if len(figures) >= MAX_WELL_IMAGES:
                break
            try:
                planes = read_record_planes(record)
            except Exception as error:  # noqa: BLE001 - show the others
                planes = []
                figures.append(_message_figure(f"{record.field}: {type(error).__name__}"))
            for coordinates, plane in planes:
                name = coordinates.get("channel", record.channel)
                if channel and name != channel:
                    continue
                if len(figures) >= MAX_WELL_IMAGES:
                    break
                h, w = plane.shape
                low, high = auto_contrast(plane)
                fig = figure(width=180, height=max(60, int(180 * h / w)),
                             x_range=(0, w), y_range=(h, 0), tools="hover,wheel_zoom,pan,reset",
                             title=f"field {record.field} z {coordinates.get('z', record.z)}",
                             toolbar_location=None)
                fig.image(image=[np.asarray(plane)], x=0, y=0, dw=w, dh=h, origin="bottom_left",
                          anchor="bottom_left",
                          color_mapper=LinearColorMapper(palette=palette_colors("Greys256"),
                                                         low=low, high=high))
                fig.axis.visible = False
                fig.grid.visible = False
                figures.append(fig)
        old = list(self.well_images.children)
        if figures:
            grid = gridplot(figures, ncols=4, toolbar_location=None)
            self.well_images.children = [bokeh_widget(grid)]
        else:
            self.well_images.children = []
        for widget in old:
            widget.close()

    def _show_flagged(self) -> None:
        summary = well_summary(self.table, [])
        flagged = summary[summary["n_flagged"] > 0]
        self.flagged.value = html_table(
            ["well", "channel", "images", "flagged", "unreadable", "reasons"],
            flagged[["well", "channel", "n_images", "n_flagged", "n_failed", "flags"]]
            .itertuples(index=False, name=None),
            empty="no well has a flagged image")

    @property
    def flagged_wells(self) -> list[str]:
        """Wells with at least one flagged image, in plate order."""
        if self.table is None:
            return []
        return list(dict.fromkeys(self.table.loc[self.table["flagged"], "well"]))


def _message_figure(text: str) -> Any:
    from bokeh.plotting import figure

    fig = figure(width=180, height=60, toolbar_location=None, title=text)
    fig.axis.visible = False
    return fig
