"""The plate QC report: one self-contained HTML page from a Jinja2 template, and the CSV.

The page embeds BokehJS inline (no CDN needed) and the thumbnails as PNG data URIs, so
the one file can be mailed or opened on an instrument PC without network. The page is
``templates/plate_qc_report.html`` beside this module; a facility overrides it by putting
its own ``plate_qc_report.html`` in a folder and passing ``templates_dir`` (as mail
templates are overridden).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["REPORT_VIEWS", "TEMPLATES", "write_report", "export_csv", "thumbnail_png"]

#: The report's own templates (package data).
TEMPLATES = Path(__file__).with_name("templates")
#: Heatmaps drawn by default (keys of plate_views.METRIC_VIEWS whose column is present).
REPORT_VIEWS: tuple[str, ...] = ("sharpness", "brightness", "saturation")


def thumbnail_png(plane: Any, *, size: int = 128) -> bytes:
    """A small 8-bit PNG of a plane, contrast-stretched between its 0.5 and 99.5 percentiles.

    Parameters
    ----------
    plane : (M, N) ndarray
    size : int, optional
        Longest side of the thumbnail, in pixels.

    Returns
    -------
    png : bytes
    """
    from autotx_lib._optional import require

    imagecodecs = require("imagecodecs", "to write report thumbnails")
    data = np.asarray(plane, dtype=np.float64)
    step = max(1, int(np.ceil(max(data.shape) / size)))
    data = data[::step, ::step]
    low, high = np.percentile(data, [0.5, 99.5]) if data.size else (0.0, 1.0)
    if high <= low:
        high = low + 1.0
    scaled = np.clip((data - low) / (high - low), 0.0, 1.0)
    return bytes(imagecodecs.png_encode((scaled * 255.0 + 0.5).astype(np.uint8)))


def _thumbnail_uri(row: Any) -> str:
    from autotx_lib.imaging.plate import ImageRecord, read_record_planes

    record = ImageRecord(
        path=row["path"],
        well=row["well"],
        row=int(row["row"]),
        column=int(row["column"]),
        scene=None if int(row.get("scene", -1)) < 0 else int(row["scene"]),
        reader="tifffile" if int(row.get("scene", -1)) < 0 else "open_image",
    )
    planes = read_record_planes(record)
    wanted = int(row.get("plane", 0))
    plane = None
    for coordinates, data in planes:
        if int(coordinates.get("plane", 0)) == wanted and (
            record.reader == "tifffile"
            or (coordinates.get("channel") == row["channel"] and coordinates.get("z") == row["z"]
                and coordinates.get("t") == row["t"])
        ):
            plane = data
            break
    if plane is None:
        plane = planes[0][1]
    return "data:image/png;base64," + base64.b64encode(thumbnail_png(plane)).decode("ascii")


_RULES = {
    "unreadable": ("the file could not be read or measured (the error is shown)", None),
    "empty": ("no signal above the camera offset: a constant image, or camera noise only "
              "(a flat power spectrum, no bright pixels, signal below the dark fold)",
              "PowerLogLogSlope >= {empty:g}"),
    "saturated": ("a real fraction of the pixels at the dtype's (or the acquisition's) "
                  "maximum; never a constant or empty image", "{saturated:g}% of the pixels"),
    "out of focus": ("power-spectrum slope below the plate's in-focus images by more than "
                     "the threshold (brightness does not change it)", "a drop of {out_of_focus:g}"),
    "dark": ("signal (mean intensity above the camera offset) below this fold of the "
             "plate's, or the control wells'", "{dark:g}x"),
    "bright": ("signal above this fold of the plate's, or the control wells'", "{bright:g}x"),
}


def _units(table) -> dict[str, str]:
    from autotx_lib.imaging.qc import INTENSITY_METRICS

    scale = str(table.attrs.get("intensity_scale", "dtype"))
    intensity = {"dtype": "fraction of the dtype's full scale", "raw": "stored units"}.get(
        scale, f"fraction of {scale}")
    units = dict.fromkeys(INTENSITY_METRICS, intensity)
    units |= {
        "focus_score": intensity, "local_focus_score": intensity,
        "power_log_log_slope": "log-log slope", "laplacian_variance": intensity + " squared",
        "tenengrad": intensity + " squared", "percent_maximal": "%", "percent_minimal": "%",
        "percent_saturated": "%", "signal_fold": "x reference", "focus_drop": "slope units",
    }
    return units


def export_csv(table, path: str | os.PathLike) -> Path:
    """Write the per-image table as CSV for people: 1-based rows and columns, units stated.

    ``row`` and ``column`` become 1-based (row 1 is A); every measured column's name
    carries its unit in brackets (``mean_intensity [fraction of the dtype's full
    scale]``, ``percent_maximal [%]``). ``field``, ``z`` and ``t`` keep the
    instrument's numbering.

    Returns
    -------
    path : pathlib.Path
    """
    data = table.copy()
    for column in ("row", "column"):
        if column in data.columns:
            data[column] = data[column].astype(int) + 1
    units = _units(table)
    names = {c: f"{c} [{units[c]}]" for c in data.columns if c in units}
    names |= {"row": "row [1-based]", "column": "column [1-based]"}
    data = data.rename(columns=names)
    path = Path(path)
    data.to_csv(path, index=False)
    return path


def _wells_to_redo(table, max_thumbnails: int, wells) -> list[dict[str, Any]]:
    from autotx_lib.imaging.qc_verdicts import OK

    labels = table.attrs.get("channel_names") or {}
    result = []
    for item in wells[wells["verdict"] != OK].itertuples(index=False):
        images = table[(table["well"] == item.well) & (table["channel"] == item.channel)]
        worst = images[images["verdict"] == item.verdict].iloc[0]
        thumbnail, note = "", ""
        if len(result) < max_thumbnails and not worst.get("error"):
            try:
                thumbnail = _thumbnail_uri(worst)
            except Exception as error:  # noqa: BLE001 - a thumbnail never breaks the report
                note = f"(no thumbnail: {type(error).__name__})"
        name = labels.get(item.channel, item.channel)
        result.append({
            "well": item.well, "channel": f"{name} ({item.channel})" if name != item.channel
            else item.channel, "verdict": item.verdict, "reason": item.reason,
            "n_images": item.n_images, "n_flagged": item.n_flagged,
            "thumbnail": thumbnail, "thumbnail_note": note,
        })
    return result


def _environment(templates_dir: str | os.PathLike | None):
    import jinja2

    loaders: list[jinja2.BaseLoader] = []
    if templates_dir is not None:
        if not Path(templates_dir).is_dir():
            raise FileNotFoundError(f"templates_dir {templates_dir} is not a folder; give the "
                                    "folder that holds your plate_qc_report.html.")
        loaders.append(jinja2.FileSystemLoader(str(templates_dir)))
    loaders.append(jinja2.FileSystemLoader(str(TEMPLATES)))
    return jinja2.Environment(loader=jinja2.ChoiceLoader(loaders), autoescape=True,
                              undefined=jinja2.StrictUndefined)


def write_report(
    table,
    out: str | os.PathLike,
    *,
    views: Iterable[str] | None = None,
    title: str | None = None,
    max_thumbnails: int = 96,
    templates_dir: str | os.PathLike | None = None,
    csv_name: str | None = None,
) -> Path:
    """Write the plate QC report as one self-contained HTML file.

    The page (template ``plate_qc_report.html``) shows the plate map coloured by verdict,
    the wells to look at with their reason and a thumbnail, one heatmap per channel and
    quantity (fixed colour direction: dark red is worse; thresholds on the colour bar),
    what each verdict means and the metrics' plain and CellProfiler names.

    Parameters
    ----------
    table : pandas.DataFrame
        As returned by :func:`autotx_lib.imaging.plate.plate_qc` (with verdicts).
    out : path
        The HTML file to write (its folder must exist).
    views : iterable of str, optional
        Heatmaps, keys of :data:`autotx_lib.imaging.plate_views.METRIC_VIEWS`; default
        :data:`REPORT_VIEWS`.
    title : str, optional
        Default "Plate QC: <plate>".
    max_thumbnails : int, optional
        Thumbnails for at most this many wells to look at.
    templates_dir : path, optional
        A folder whose ``plate_qc_report.html`` replaces the built-in page. The template
        gets: ``title``, ``plate`` (name, vendor, format), ``counts``, ``channels``,
        ``colours``, ``plate_map``, ``heatmaps``, ``wells_to_redo``, ``rules``,
        ``views``, ``csv_name``, ``unreadable_message``, ``bokeh_resources`` and
        ``bokeh_script``.
    csv_name : str, optional
        The CSV written beside the report (linked from the page).

    Returns
    -------
    path : pathlib.Path
    """
    from autotx_lib._optional import require

    require("bokeh", "to draw the report's plate map and heatmaps")
    from bokeh.embed import components
    from bokeh.layouts import column, row
    from bokeh.models import Div, TabPanel, Tabs
    from bokeh.resources import INLINE

    from autotx_lib.imaging import plate_views as pv
    from autotx_lib.imaging.qc_verdicts import (
        DEFAULT_THRESHOLDS,
        VERDICT_COLOURS,
        unreadable_plate_message,
        well_verdicts,
    )

    out = Path(out)
    environment = _environment(templates_dir)
    template = environment.get_template("plate_qc_report.html")
    plate = table.attrs.get("plate") or (str(table["plate"].iloc[0]) if len(table) else "")
    names = table.attrs.get("channel_names") or {}
    channels = list(dict.fromkeys(table["channel"])) if len(table) else []
    chosen = [pv.METRIC_VIEWS[k] for k in (views or REPORT_VIEWS)
              if k in pv.METRIC_VIEWS and pv.METRIC_VIEWS[k].column in table.columns]
    measured = table[table["error"] == ""] if "error" in table.columns else table
    # once for the whole page: every picture below and the list of wells need it
    wells = well_verdicts(table) if len(table) else None
    panels = []
    for channel in channels:
        if measured[measured["channel"] == channel].empty or not chosen:
            continue
        figures = [pv.metric_heatmap(table, view, channel=channel, wells=wells)
                   for view in chosen]
        label = names.get(channel, channel)
        panels.append(TabPanel(child=column([row(f) for f in figures]),
                               title=f"{label} ({channel})" if label != channel else label))
    heatmaps = Tabs(tabs=panels) if panels else Div(text="<p>No image could be measured.</p>")
    plate_map = pv.verdict_map(table, wells=wells) if len(table) else \
        Div(text="<p>No images.</p>")
    script, (map_div, heatmap_div) = components((plate_map, heatmaps))
    limits = table.attrs.get("thresholds") or DEFAULT_THRESHOLDS
    rules = [{"verdict": name, "text": text,
              "threshold": threshold.format(**limits) if threshold else "-"}
             for name, (text, threshold) in _RULES.items()]
    n_wells = table.groupby(["row", "column"]).ngroups if len(table) else 0
    guessed = table.attrs.get("plate_format_guessed", False)
    page = template.render(
        title=title or (f"Plate QC: {plate}" if plate else "Plate QC"),
        plate={"name": plate, "vendor": table.attrs.get("vendor", "unknown"),
               "format": f"{table.attrs.get('plate_wells', '?')}-well plate"
               + (" (guessed from the wells imaged: no plate format in the metadata)"
                  if guessed else "")},
        counts={"images": len(table), "wells": n_wells,
                "verdicts": pv.verdict_counts(table, wells) if len(table) else {}},
        channels=[f"{names.get(c, c)} ({c})" if names.get(c, c) != c else c for c in channels],
        colours=VERDICT_COLOURS,
        plate_map=map_div,
        heatmaps=heatmap_div,
        wells_to_redo=_wells_to_redo(table, max_thumbnails, wells) if len(table) else [],
        rules=rules,
        views=pv.describe_views(table),
        csv_name=csv_name,
        unreadable_message=unreadable_plate_message(table),
        bokeh_resources=INLINE.render(),
        bokeh_script=script,
    )
    out.write_text(page, encoding="utf-8")
    return out
