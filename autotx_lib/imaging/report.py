"""A standalone HTML plate-QC report: heatmaps per channel and metric, flagged images.

The page embeds BokehJS inline (no CDN needed) and the thumbnails as PNG data URIs,
so the one file can be mailed or opened on an instrument PC without network.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["REPORT_METRICS", "write_report", "thumbnail_png"]

#: Metrics drawn as heatmaps by default (those present in the table).
REPORT_METRICS: tuple[str, ...] = (
    "focus_score",
    "power_log_log_slope",
    "mean_intensity",
    "percent_maximal",
)


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


def write_report(
    table,
    out: str | os.PathLike,
    *,
    metrics: Iterable[str] | None = None,
    title: str | None = None,
    max_thumbnails: int = 200,
) -> Path:
    """Write the plate-QC report as one self-contained HTML file.

    Parameters
    ----------
    table : pandas.DataFrame
        As returned by :func:`autotx_lib.imaging.plate.plate_qc`.
    out : path
        The HTML file to write (its folder must exist).
    metrics : iterable of str, optional
        Metrics to draw as heatmaps; default :data:`REPORT_METRICS` present in the table.
    title : str, optional
        Page title; default "Plate QC: <plate>".
    max_thumbnails : int, optional
        Thumbnails for at most this many flagged images (the table lists them all).

    Returns
    -------
    path : pathlib.Path
        The written file.
    """
    from autotx_lib._optional import require

    require("bokeh", "to draw the report's heatmaps")
    from bokeh.embed import components
    from bokeh.layouts import column, row
    from bokeh.models import Div, TabPanel, Tabs
    from bokeh.resources import INLINE

    from autotx_lib.imaging.plate import plate_heatmap

    out = Path(out)
    names = [m for m in (metrics or REPORT_METRICS) if m in table.columns]
    plates = list(dict.fromkeys(table["plate"])) if len(table) else []
    heading = title or ("Plate QC: " + ", ".join(map(str, plates)) if plates else "Plate QC")
    panels = []
    for plate in plates:
        on_plate = table[table["plate"] == plate]
        for channel in dict.fromkeys(on_plate["channel"]):
            subset = on_plate[(on_plate["channel"] == channel) & (on_plate["error"] == "")]
            if subset.empty or not names:
                continue
            figures = [
                plate_heatmap(subset, metric, channel=channel, plate=plate) for metric in names
            ]
            grid = column([row(figures[i : i + 2]) for i in range(0, len(figures), 2)])
            label = f"{plate} / {channel}" if len(plates) > 1 else f"channel {channel or '-'}"
            panels.append(TabPanel(child=grid, title=label))
    layout = Tabs(tabs=panels) if panels else Div(text="<p>No image could be measured.</p>")
    script, div = components(layout)

    flagged = table[table["flagged"]] if "flagged" in table.columns else table.iloc[:0]
    total, n_flagged = len(table), len(flagged)
    n_failed = int((table["error"] != "").sum()) if "error" in table.columns else 0
    lines = []
    for index, (_, item) in enumerate(flagged.iterrows()):
        thumb = ""
        if index < max_thumbnails and not item.get("error"):
            try:
                thumb = f'<img src="{_thumbnail_uri(item)}" alt="thumbnail">'
            except Exception as error:  # noqa: BLE001 - a thumbnail never breaks the report
                thumb = f"(no thumbnail: {html.escape(type(error).__name__)})"
        values = " ".join(
            f"{m}={item[m]:.4g}" for m in names if m in item and np.isfinite(item[m])
        )
        lines.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(v))}</td>"
                for v in (item["well"], item["field"], item["channel"], item["z"], item["t"])
            )
            + f"<td class='flags'>{html.escape(item['flags'])}</td>"
            + f"<td>{html.escape(values)}{html.escape(str(item.get('error', '')))}</td>"
            + f"<td>{thumb}</td>"
            + f"<td class='path'>{html.escape(str(item['path']))}</td></tr>"
        )
    table_html = (
        "<table><thead><tr><th>well</th><th>field</th><th>channel</th><th>z</th><th>t</th>"
        "<th>flags</th><th>values / error</th><th>thumbnail</th><th>path</th></tr></thead>"
        "<tbody>" + "\n".join(lines) + "</tbody></table>"
        if lines
        else "<p>No image is flagged.</p>"
    )
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(heading)}</title>
{INLINE.render()}
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 6px; vertical-align: top; }}
td.flags {{ color: #a00; font-weight: bold; }}
td.path {{ font-size: 0.8em; color: #555; }}
</style>
{script}
</head>
<body>
<h1>{html.escape(heading)}</h1>
<p>{total} images, {n_flagged} flagged, {n_failed} unreadable.
Flags: robust z-score (median/MAD) per plate and channel; see
<code>autotx_lib.imaging.plate.flag_outliers</code>.</p>
<h2>Heatmaps</h2>
{div}
<h2>Flagged images</h2>
{table_html}
</body>
</html>
"""
    out.write_text(page, encoding="utf-8")
    return out
