"""PlateQCDashboard: run plate QC, see each well's verdict, tune the thresholds live.

Every number comes from :mod:`autotx_lib.imaging.plate` (:func:`discover_plate`,
:func:`plate_qc`), every verdict from
:func:`autotx_lib.imaging.qc_verdicts.decide_verdicts` and every picture from
:mod:`autotx_lib.imaging.plate_views`; this module only shows. Moving a threshold
slider decides the verdicts again on the measured table (no image is read again) and
redraws the plate map, the heatmap and the list of wells to redo.

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
from autotx_lib.dashboards._format import badge, html_table
from autotx_lib.imaging.plate import Plate, discover_plate, plate_qc, read_record_planes
from autotx_lib.imaging.plate_views import METRIC_VIEWS, metric_heatmap, verdict_map
from autotx_lib.imaging.qc_verdicts import (
    DEFAULT_THRESHOLDS,
    OK,
    THRESHOLD_HELP,
    VERDICT_COLOURS,
    decide_verdicts,
    resolve_thresholds,
    well_verdicts,
)
from autotx_lib.imaging.viewer import (
    auto_contrast,
    bokeh_widget,
    ensure_inline_bokeh,
    palette_colors,
)

#: Slider ranges per threshold: (kind, low, high, step); "log" sliders take exponents.
SLIDERS: dict[str, tuple[str, float, float, float]] = {
    "out_of_focus": ("linear", 0.1, 3.0, 0.05),
    "dark": ("log", -2.0, 0.0, 0.05),
    "bright": ("log", 0.0, 2.0, 0.05),
    "saturated": ("log", -2.0, 2.0, 0.1),
    "empty": ("linear", -1.0, 1.5, 0.05),
}

#: At most this many images of a well are drawn when it is clicked.
MAX_WELL_IMAGES = 8


class PlateQCDashboard:
    """Plate QC with progress, a plate map by verdict, threshold sliders and clickable wells.

    Parameters
    ----------
    source : path or Plate
        A plate folder or file (see :func:`~autotx_lib.imaging.plate.discover_plate`), or
        a discovered plate.
    run : bool, optional
        Measure the plate now (blocking); else press "Run QC" (runs in the background).
    **qc_options
        Passed to :func:`~autotx_lib.imaging.plate.plate_qc` (``metrics``, ``scheduler``,
        ``n_workers``, ``thresholds``, ``controls``...); ``thresholds`` also set the
        sliders.

    Attributes
    ----------
    plate : Plate
    table : pandas.DataFrame or None
        The QC table with the verdicts at the current thresholds.
    thresholds : dict
        The thresholds in use (the sliders' values).
    selected_well : str or None
    """

    def __init__(self, source: str | os.PathLike | Plate, *, run: bool = False,
                 **qc_options: Any) -> None:
        require("ipywidgets", "for the plate QC dashboard")
        require("bokeh", "for the plate QC dashboard")
        self.plate = source if isinstance(source, Plate) else discover_plate(source)
        self.thresholds = resolve_thresholds(qc_options.get("thresholds"))
        self.qc_options = qc_options
        self.table = None
        self.selected_well: str | None = None
        self.heatmap = None
        self.plate_map = None
        self._sources: list[Any] = []
        self._thread: threading.Thread | None = None
        self._build()
        if run:
            self.run()

    # --- widgets ------------------------------------------------------------------------

    def _build(self) -> None:
        import ipywidgets as W

        ensure_inline_bokeh()  # now, in the kernel's thread: QC may finish in another one
        p = self.plate
        channels = sorted({r.channel for r in p.records if r.channel})
        self.header = W.HTML(
            f"<h3 style='margin:4px 0'>Plate {html.escape(p.name)}</h3>"
            f"{html.escape(p.vendor)} layout, {html.escape(p.format_description)}, "
            f"{len(p.wells)} wells imaged, {len(p.records)} images"
            + (f", channels {html.escape(', '.join(map(p.channel_label, channels)))}"
               if channels else ""))
        self.run_button = W.Button(description="Run QC", button_style="primary", icon="play")
        self.progress = W.IntProgress(value=0, min=0, max=max(1, len(p.records)),
                                      layout=W.Layout(width="360px"))
        self.progress_label = W.HTML("not measured yet")
        self.metric_picker = W.Dropdown(description="metric", options=[], disabled=True,
                                        layout=W.Layout(width="360px"))
        self.channel_picker = W.Dropdown(description="channel", options=[], disabled=True,
                                         layout=W.Layout(width="240px"))
        self.sliders = {name: self._slider(name) for name in DEFAULT_THRESHOLDS}
        self.plate_map_box = W.Box()
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
            W.HTML("<b>Thresholds</b> (the verdicts, plate map and heatmap follow)"),
            W.HBox(list(self.sliders.values()), layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.plate_map_box]),
            self.pickers,
            self.heatmap_box,
            self.well_title, self.well_metrics, self.well_images,
            W.HTML("<b>Wells to redo</b>"), self.flagged,
        ])
        self.widget.add_class("autotx-plate-qc")

    def _slider(self, name: str) -> Any:
        import ipywidgets as W

        kind, low, high, step = SLIDERS[name]
        cls = W.FloatLogSlider if kind == "log" else W.FloatSlider
        options = {"base": 10} if kind == "log" else {}
        slider = cls(value=self.thresholds[name], min=low, max=high, step=step,
                     description=name.replace("_", " "), continuous_update=False,
                     readout_format=".3g", style={"description_width": "80px"},
                     layout=W.Layout(width="320px"), **options)
        slider.tooltip = THRESHOLD_HELP[name]
        slider.observe(lambda change, key=name: self.set_thresholds({key: change["new"]}),
                       names="value")
        return slider

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
        options = dict(self.qc_options) | {"thresholds": self.thresholds}
        try:
            table = plate_qc(self.plate, progress=self._on_progress, **options)
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
        self.table = decide_verdicts(table, thresholds=self.thresholds,
                                     controls=self.qc_options.get("controls"))
        views = [key for key, view in METRIC_VIEWS.items() if view.column in table.columns]
        from autotx_lib.imaging.qc import ALL_METRICS

        raw = [m for m in ALL_METRICS if m in table.columns and m not in METRIC_VIEWS]
        options = [(METRIC_VIEWS[k].title, k) for k in views] + [(m, m) for m in raw]
        channels = [(self.plate.channel_label(str(c)) + (f" ({c})" if
                     self.plate.channel_label(str(c)) != c else ""), c)
                    for c in dict.fromkeys(table["channel"])]
        # new pickers rather than new options: a dropdown whose options change from a
        # background thread can show no selection in the browser
        self.metric_picker = self._picker("metric", options, "360px")
        self.channel_picker = self._picker("channel", channels, "240px")
        old = self.pickers.children
        self.pickers.children = [self.metric_picker, self.channel_picker]
        for widget in old:
            widget.close()
        self._refresh()

    def set_thresholds(self, thresholds: dict[str, float]) -> None:
        """Change thresholds (what the sliders do) and decide the verdicts again."""
        self.thresholds = resolve_thresholds(self.thresholds | dict(thresholds))
        for name, slider in self.sliders.items():
            if slider.value != self.thresholds[name]:
                slider.value = self.thresholds[name]
        if self.table is not None:
            self.table = decide_verdicts(self.table, thresholds=self.thresholds,
                                         controls=self.qc_options.get("controls"))
            self._refresh()

    def _refresh(self) -> None:
        table = self.table
        failed = int((table["error"].fillna("") != "").sum()) if "error" in table else 0
        self.progress_label.value = (f"{len(table)} images measured, {int(table['flagged'].sum())} "
                                     f"flagged, {failed} unreadable")
        self._draw_plate_map()
        self._draw_heatmap()
        self._show_flagged()
        if self.selected_well:
            self.select_well(self.selected_well)

    def _picker(self, name: str, options: list[tuple[str, str]], width: str) -> Any:
        import ipywidgets as W

        picker = W.Dropdown(description=name, options=options,
                            value=options[0][1] if options else None,
                            layout=W.Layout(width=width))
        picker.observe(lambda _: self._draw_heatmap(), names="value")
        return picker

    # --- plate map, heatmap and wells ----------------------------------------------------

    def _clickable(self, figure: Any) -> Any:
        from bokeh.models import ColumnDataSource

        source = next(r.data_source for r in figure.renderers
                      if isinstance(r.data_source, ColumnDataSource)
                      and "well" in r.data_source.data)

        def on_select(attr: str, old: list[int], new: list[int]) -> None:
            if not new:
                return
            well = source.data["well"][new[0]]
            has_images = source.data["verdict"][new[0]] not in ("not imaged", "")
            if has_images and well != self.selected_well:
                self.select_well(well)
            elif not has_images:  # an empty plate position: keep the selection as it was
                source.selected.indices = self._indices(source)

        source.selected.on_change("indices", on_select)
        return source

    def _indices(self, source: Any) -> list[int]:
        wells = list(source.data["well"])
        return [wells.index(self.selected_well)] if self.selected_well in wells else []

    def _replace(self, box: Any, figure: Any) -> None:
        old = list(box.children)
        box.children = [bokeh_widget(figure)]
        for widget in old:
            widget.close()

    def _draw_plate_map(self) -> None:
        self.plate_map = verdict_map(self.table, selectable=True,
                                     title=f"Verdicts, plate {self.plate.name}")
        self.plate_map_source = self._clickable(self.plate_map)
        self._sources = [self.plate_map_source] + self._sources[1:2]
        self._replace(self.plate_map_box, self.plate_map)

    def _draw_heatmap(self) -> None:
        if self.table is None or not self.metric_picker.value:
            return
        figure = metric_heatmap(self.table, self.metric_picker.value,
                                channel=self.channel_picker.value, selectable=True)
        self.heatmap = figure
        self.heatmap_source = self._clickable(figure)
        self._sources = self._sources[:1] + [self.heatmap_source]
        self._replace(self.heatmap_box, figure)
        self._highlight()

    def _highlight(self) -> None:
        """Outline the selected well on every picture; the other wells stay as they are."""
        for source in self._sources:
            indices = self._indices(source)
            if list(source.selected.indices) != indices:
                source.selected.indices = indices

    def select_well(self, well: str) -> None:
        """Show a well's verdicts, metrics and images (what a click on a well does)."""
        if self.table is None:
            raise RuntimeError("run the QC first (the Run QC button or .run())")
        rows = self.table[self.table["well"] == well]
        if rows.empty:
            raise ValueError(f"well {well!r} has no images on this plate; imaged wells: "
                             f"{', '.join(self.plate.wells)}")
        self.selected_well = well
        self._highlight()
        view = METRIC_VIEWS.get(self.metric_picker.value)
        metric = view.column if view else self.metric_picker.value
        columns = [c for c in ("field", "channel_name", "z", "t", "verdict", "reason", metric,
                               "error") if c in rows.columns]
        self.well_title.value = (f"<b>Well {html.escape(well)}</b>: {len(rows)} images, "
                                 f"{int(rows['flagged'].sum())} flagged")
        self.well_metrics.value = html_table(
            columns, rows[columns].itertuples(index=False, name=None))
        self._draw_well_images(well, self.channel_picker.value)

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
        wells = well_verdicts(self.table)
        bad = wells[wells["verdict"] != OK]
        self.flagged.value = html_table(
            ["well", "channel", "verdict", "why", "images flagged"],
            [(item.well, self.plate.channel_label(str(item.channel)),
              badge(item.verdict, VERDICT_COLOURS[item.verdict]), item.reason,
              f"{item.n_flagged} of {item.n_images}")
             for item in bad.itertuples(index=False)],
            empty="every well is ok")

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
