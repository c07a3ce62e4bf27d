"""Plate QC pictures: a plate map coloured by verdict, and per-metric heatmaps.

Display code (bokeh), shared by the HTML report and the plate dashboard. Each heatmap
has a fixed colour direction: the colour runs from pale (as the plate's good wells) to
dark red (worse), whichever way "worse" lies for the metric, and the thresholds that
decide a verdict are drawn as labelled ticks on the colour bar. Empty and unreadable
wells have no meaningful value: they are drawn grey, so an empty well never looks like
the sharpest one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from autotx_lib.imaging.qc_verdicts import OK, VERDICT_COLOURS, VERDICTS, well_verdicts

__all__ = ["MetricView", "METRIC_VIEWS", "verdict_map", "metric_heatmap", "plate_geometry"]

#: Pale (good) to dark red (worse): bad is always this colour, on every heatmap.
GOOD_TO_BAD = ("#fff5eb", "#fee6ce", "#fdd0a2", "#fdae6b", "#fd8d3c", "#f16913", "#d94801",
               "#a63603", "#7f2704")
NO_VALUE = "#9e9e9e"


@dataclass(frozen=True)
class MetricView:
    """How one quantity is shown: names for people, its column, and where "worse" lies.

    ``worse`` is ``"low"``, ``"high"`` or ``"both"`` (both directions away from the
    plate); ``log2`` draws the value on a log2 scale (folds).
    """

    key: str
    title: str
    column: str
    cellprofiler: str
    units: str
    worse: str
    log2: bool = False


#: The quantities the verdicts rest on, in plain language, CellProfiler's name beside them.
METRIC_VIEWS: dict[str, MetricView] = {
    "sharpness": MetricView(
        "sharpness", "Sharpness (power-spectrum slope)", "power_log_log_slope",
        "ImageQuality_PowerLogLogSlope", "slope of log power against log frequency", "low"),
    "brightness": MetricView(
        "brightness", "Brightness against the plate (signal fold)", "signal_fold",
        "ImageQuality_MeanIntensity", "mean intensity above the camera offset, as a fold of "
        "the plate's (or controls')", "both", log2=True),
    "saturation": MetricView(
        "saturation", "Saturated pixels", "percent_saturated",
        "ImageQuality_PercentMaximal", "percent of pixels at the maximum", "high"),
    "focus_score": MetricView(
        "focus_score", "Focus score (normalized variance)", "focus_score",
        "ImageQuality_FocusScore", "variance over mean (grows with brightness)", "low"),
}


def plate_geometry(table) -> tuple[int, int]:
    """Rows and columns from ``table.attrs`` (plate_qc), else the smallest that fits."""
    if "plate_rows" in table.attrs:
        return int(table.attrs["plate_rows"]), int(table.attrs["plate_columns"])
    from autotx_lib.imaging.plate import PlateGeometry

    geometry = PlateGeometry.fitting(int(table["row"].max()), int(table["column"].max()))
    return geometry.rows, geometry.columns


def _plate_figure(title: str, rows: int, columns: int, *, tools: str = "hover,save"):
    from bokeh.plotting import figure

    from autotx_lib.imaging.plate import row_label

    cell = 30 if columns <= 24 else 16
    fig = figure(
        title=title,
        x_range=[str(c + 1) for c in range(columns)],
        y_range=[row_label(r) for r in reversed(range(rows))],
        x_axis_location="above",
        width=max(360, cell * columns + 200),
        height=max(200, cell * rows + 90),
        tools=tools,
        toolbar_location="below",
    )
    fig.grid.visible = False
    fig.axis.axis_line_color = None
    fig.axis.major_tick_line_color = None
    return fig


def _cells(rows: int, columns: int) -> dict[str, list]:
    from autotx_lib.imaging.plate import row_label, well_name

    data: dict[str, list] = {"row": [], "col": [], "well": []}
    for r in range(rows):
        for c in range(columns):
            data["row"].append(row_label(r))
            data["col"].append(str(c + 1))
            data["well"].append(well_name(r, c))
    return data


def _channel_label(table, channel: str) -> str:
    names = table.attrs.get("channel_names") or {}
    name = names.get(channel, channel)
    return f"{name} ({channel})" if name != channel else str(channel)


def verdict_map(table, *, title: str | None = None, selectable: bool = False, wells=None):
    """The plate map: each well coloured by its worst verdict over every channel.

    Parameters
    ----------
    table : pandas.DataFrame
        The per-image table with verdicts (:func:`~autotx_lib.imaging.plate.plate_qc`).
    title : str, optional
    selectable : bool, optional
        Add a tap tool; a tapped well is outlined and the others stay as they are.
    wells : pandas.DataFrame, optional
        ``well_verdicts(table)`` when the caller has it already (a report draws several
        pictures of one table: computing it once saves a tenth of a second each).

    Returns
    -------
    figure : bokeh.plotting.figure
        Its data source has ``well``, ``verdict``, ``detail`` (per channel) and ``n``.
    """
    from bokeh.models import ColumnDataSource, HoverTool, Legend, LegendItem

    rows, columns = plate_geometry(table)
    wells = well_verdicts(table) if wells is None else wells
    rank = {name: i for i, name in enumerate(VERDICTS)} | {OK: len(VERDICTS)}
    by_well: dict[str, list] = {}
    for item in wells.itertuples(index=False):
        by_well.setdefault(item.well, []).append(item)
    data = _cells(rows, columns)
    data |= {"verdict": [], "colour": [], "detail": [], "n": []}
    for well in data["well"]:
        items = by_well.get(well, [])
        if not items:
            verdict, detail, count = "not imaged", "", 0
        else:
            worst = min(items, key=lambda item: rank[item.verdict])
            verdict, count = worst.verdict, sum(item.n_images for item in items)
            detail = "; ".join(
                f"{_channel_label(table, item.channel)}: {item.verdict}"
                + (f" - {item.reason}" if item.reason and item.verdict != OK else "")
                for item in items
            )
        data["verdict"].append(verdict)
        data["colour"].append(VERDICT_COLOURS.get(verdict, "#eeeeee"))
        data["detail"].append(detail)
        data["n"].append(count)
    source = ColumnDataSource(data)
    plate = table.attrs.get("plate", "")
    fig = _plate_figure(title or f"Verdicts {plate}".strip(), rows, columns,
                        tools="hover,save" + (",tap" if selectable else ""))
    renderer = fig.rect("col", "row", width=0.9, height=0.9, source=source,
                        fill_color="colour", line_color="white")
    _keep_others_visible(renderer)
    items = [LegendItem(label=verdict, renderers=[renderer], index=data["verdict"].index(verdict))
             for verdict in (OK, *VERDICTS) if verdict in data["verdict"]]
    fig.add_layout(Legend(items=items, title="verdict"), "right")
    fig.select_one(HoverTool).tooltips = [("well", "@well"), ("verdict", "@verdict"),
                                          ("images", "@n"), ("", "@detail")]
    return fig


def _raw_view(column: str) -> MetricView:
    """A measured metric shown as it is; worse: low focus, high saturation, off-plate intensity."""
    from autotx_lib.imaging.qc import FOCUS_METRICS, SATURATION_METRICS

    worse = "low" if column in FOCUS_METRICS else "high" if column in SATURATION_METRICS \
        else "both"
    return MetricView(column, column, column, "", "", worse)


def _keep_others_visible(renderer) -> None:
    """A selected well gets a thick outline; the other wells keep their colour."""
    renderer.selection_glyph = renderer.glyph.clone(line_color="#000000", line_width=3)
    renderer.nonselection_glyph = renderer.glyph.clone()


def _palette(view: MetricView) -> list[str]:
    good_to_bad = list(GOOD_TO_BAD)
    if view.worse == "high":
        return good_to_bad
    if view.worse == "low":
        return good_to_bad[::-1]
    return good_to_bad[::-1] + good_to_bad[1:]  # worse both ways from the middle


def _thresholds_for(view: MetricView, table, channel: str) -> dict[float, str]:
    """Threshold values in the view's units, with their labels, for one channel."""
    limits = table.attrs.get("thresholds") or {}
    refs = {r.get("channel"): r for r in table.attrs.get("references", [])}
    ref = refs.get(channel, {})
    ticks: dict[float, str] = {}
    if view.key == "sharpness" and "focus_reference" in ref and "out_of_focus" in limits:
        value = ref["focus_reference"] - limits["out_of_focus"]
        if math.isfinite(value):
            ticks[value] = f"out of focus < {value:.2f}"
    elif view.key == "brightness" and "dark" in limits:
        ticks[math.log2(limits["dark"])] = f"dark < {limits['dark']:g}x"
        ticks[math.log2(limits["bright"])] = f"bright > {limits['bright']:g}x"
    elif view.key == "saturation" and "saturated" in limits:
        ticks[limits["saturated"]] = f"saturated >= {limits['saturated']:g}%"
    return ticks


def metric_heatmap(table, view: str | MetricView, *, channel: str | None = None,
                   selectable: bool = False, width: int | None = None, wells=None):
    """A heatmap of one quantity for one channel, worse always dark red, thresholds on the bar.

    Parameters
    ----------
    table : pandas.DataFrame
        The per-image table with verdicts.
    view : str or MetricView
        A key of :data:`METRIC_VIEWS`, or any metric column (drawn with "low is worse"
        unknown: a plain sequential scale, no thresholds).
    channel : str, optional
        Required when the table has several channels.
    selectable : bool, optional
        Add a tap tool (the dashboard's well selection).
    width : int, optional
    wells : pandas.DataFrame, optional
        ``well_verdicts(table)`` when the caller has it already (any channels: this one's
        rows are used).

    Returns
    -------
    figure : bokeh.plotting.figure
    """
    from bokeh.models import ColorBar, ColumnDataSource, FixedTicker, HoverTool
    from bokeh.transform import linear_cmap

    if isinstance(view, str):
        view = METRIC_VIEWS.get(view) or _raw_view(view)
    channels = list(dict.fromkeys(table["channel"]))
    if channel is None:
        if len(channels) > 1:
            raise ValueError(f"the table has several channels {channels}; pass channel=.")
        channel = channels[0]
    elif channel not in channels:
        raise ValueError(f"channel {channel!r} is not in the table; it has {channels}.")
    if view.column not in table.columns:
        raise ValueError(f"the table has no column {view.column!r} (for {view.title}); "
                         "measure that metric to draw it.")
    part = table[table["channel"] == channel]
    rows, columns = plate_geometry(table)
    usable = part[~part["verdict"].isin(["empty", "unreadable"])] if "verdict" in part else part
    values = usable.groupby("well")[view.column].median()
    if "verdict" not in part:
        wells = None
    elif wells is None:
        wells = well_verdicts(part).set_index("well")
    else:
        wells = wells[wells["channel"] == channel].set_index("well")
    data = _cells(rows, columns)
    data |= {"value": [], "shown": [], "verdict": []}
    # plain dicts: a pandas lookup per well costs more than the whole picture
    value_of = values.to_dict()
    verdict_of = wells["verdict"].to_dict() if wells is not None else {}
    imaged = set(part["well"])
    for well in data["well"]:
        value = float(value_of.get(well, np.nan))
        data["value"].append(value)
        if view.log2 and math.isfinite(value):  # folds from 1/32x to 32x
            value = math.log2(min(max(value, 2.0**-5), 2.0**5))
        data["shown"].append(value)
        data["verdict"].append(verdict_of.get(well, "" if well in imaged else "not imaged"))
    ticks = _thresholds_for(view, table, channel)
    finite = [v for v in data["shown"] if math.isfinite(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    low, high = min([low, *ticks]), max([high, *ticks])
    if view.worse == "both":  # centred on the plate: a fold's 1x, else the median well
        centre = 0.0 if view.log2 else (float(np.median(finite)) if finite else 0.0)
        span = max(abs(low - centre), abs(high - centre), 1.0 if view.log2 else 1e-12)
        low, high = centre - span, centre + span
    if low == high:
        low, high = low - 0.5, high + 0.5
    source = ColumnDataSource(data)
    label = _channel_label(table, channel)
    fig = _plate_figure(f"{view.title} - {label}", rows, columns,
                        tools="hover,save" + (",tap" if selectable else ""))
    if width:
        fig.width = width
    mapper = linear_cmap("shown", _palette(view), low, high, nan_color=NO_VALUE)
    renderer = fig.rect("col", "row", width=0.92, height=0.92, source=source,
                        fill_color=mapper, line_color="white")
    _keep_others_visible(renderer)
    fig.select_one(HoverTool).tooltips = [("well", "@well"), (view.column, "@value{0.[000]}"),
                                          ("verdict", "@verdict")]
    bar_ticks = sorted({low, high, *ticks})
    overrides = {float(t): (ticks[t] if t in ticks else
                            (f"{2 ** t:.2g}x" if view.log2 else f"{t:.3g}")) for t in bar_ticks}
    direction = {"low": "lower is worse", "high": "higher is worse",
                 "both": "further from the plate is worse"}[view.worse]
    bar = ColorBar(color_mapper=mapper["transform"], width=12,
                   ticker=FixedTicker(ticks=bar_ticks), major_label_overrides=overrides,
                   title=direction)
    fig.add_layout(bar, "right")
    fig.width = fig.width + 160
    return fig


def verdict_counts(table, wells=None) -> dict[str, int]:
    """Wells (per channel) per verdict, most important first; for summaries.

    ``wells``: ``well_verdicts(table)`` when the caller has it already.
    """
    wells = well_verdicts(table) if wells is None else wells
    counts = wells["verdict"].value_counts().to_dict()
    return {name: int(counts[name]) for name in (*VERDICTS, OK) if name in counts}


def describe_views(table) -> list[dict[str, Any]]:
    """The shown quantities of this table, for legends: title, CellProfiler name, units."""
    return [
        {"title": v.title, "column": v.column, "cellprofiler": v.cellprofiler, "units": v.units,
         "worse": v.worse}
        for v in METRIC_VIEWS.values() if v.column in table.columns
    ]
