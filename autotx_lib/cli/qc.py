"""``autotx qc``: plate quality control, as an HTML report and a CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autotx_lib.cli._common import ExitCode, OptionalConfigOption, err, fail, handle_errors, out


@handle_errors
def qc(
    plate_dir: Annotated[
        Path, typer.Argument(help="Plate folder (or plate file: MeasurementData.mlf, CZI, .fake).")
    ],
    out_path: Annotated[
        Path, typer.Option("--out", "-o", help="The HTML report to write.", dir_okay=False)
    ],
    csv: Annotated[
        Path | None,
        typer.Option("--csv", help="Also write the per-image table as CSV (rows and columns "
                     "1-based, units in the column names)."),
    ] = None,
    threshold: Annotated[
        list[str] | None,
        typer.Option("--threshold", "-t", help="NAME=VALUE, repeatable: empty (PowerLogLogSlope, "
                     "0), saturated (% of pixels, 0.5), out-of-focus (slope drop, 0.7), dark "
                     "(fold, 0.25), bright (fold, 4)."),
    ] = None,
    controls: Annotated[
        str | None,
        typer.Option("--controls", help="Control wells for the intensity reference: wells, "
                     "column numbers or row letters, comma-separated (e.g. '1,12' or 'A01,H')."),
    ] = None,
    config: OptionalConfigOption = None,
    templates: Annotated[
        Path | None,
        typer.Option("--templates", help="A folder with your own plate_qc_report.html."),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            help="Dask scheduler address (tcp://host:8786), 'local' for a LocalCluster, "
            "or 'threads' (default).",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", "-j", min=1, help="Threads or local workers.")
    ] = None,
    pattern: Annotated[
        str | None,
        typer.Option(
            "--pattern",
            help=r"File-name regex with named groups well (or row, col), field, channel, z, t.",
        ),
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option("--metrics", help="Comma-separated metric names, 'all' or 'cellprofiler'."),
    ] = None,
) -> None:
    """Plate QC: which wells are empty, dark, bright, out of focus, saturated or unreadable.

    Measures every image of a plate, gives each well and channel a verdict with the metric
    and threshold that decided it, and writes a standalone HTML report (plate map by
    verdict, heatmaps, wells to redo with thumbnails). Thresholds come from --threshold,
    else the [qc] section of --config, else the defaults. Exit status: 0 done (bad wells
    are reported, not errors); 1 no image of the plate could be read; 2 no plate
    recognised or bad input; 130 interrupted.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from autotx_lib.config import load_qc_settings
    from autotx_lib.imaging.plate import discover_plate, plate_qc
    from autotx_lib.imaging.plate_views import verdict_counts
    from autotx_lib.imaging.qc_verdicts import parse_threshold_options, unreadable_plate_message
    from autotx_lib.imaging.report import export_csv, write_report

    if not plate_dir.exists():
        raise fail(f"{plate_dir} does not exist; give the plate's folder.")
    if not out_path.parent.exists():
        raise fail(f"the folder of --out ({out_path.parent}) does not exist.")
    settings = load_qc_settings(config) if config is not None else None
    try:
        limits = dict(settings.thresholds) if settings else {}
        limits |= parse_threshold_options(threshold or [])
    except ValueError as error:
        raise fail(str(error)) from None
    wells = controls if controls is not None else (settings.controls if settings else None)
    templates = templates or (settings.templates_dir if settings else None)
    chosen = None
    if metrics:
        chosen = metrics if metrics in ("all", "cellprofiler") else [
            m.strip() for m in metrics.split(",") if m.strip()
        ]
    try:
        plate = discover_plate(plate_dir, pattern=pattern)
    except ValueError as error:
        raise fail(str(error)) from None
    err.print(f"{plate.name}: {plate.vendor} plate, {len(plate.records)} images; "
              f"{plate.format_description}", markup=False, soft_wrap=True)
    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), console=err, transient=True,
    ) as bar:
        task = bar.add_task("measuring", total=len(plate.records))

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            table = plate_qc(plate, chosen, scheduler=scheduler, n_workers=workers,
                             thresholds=limits, controls=wells or None, progress=progress)
        except ValueError as error:
            raise fail(str(error)) from None
    message = unreadable_plate_message(table)
    if message is not None:
        raise fail(message, ExitCode.INCOMPLETE)
    if csv is not None:
        export_csv(table, csv)
    write_report(table, out_path, templates_dir=templates,
                 csv_name=csv.name if csv is not None and csv.parent == out_path.parent else None)
    counts = ", ".join(f"{n} {verdict}" for verdict, n in verdict_counts(table).items())
    out.print(
        f"{plate.name}: {len(table)} images, {int(table['flagged'].sum())} flagged; wells x "
        f"channels: {counts}; report {out_path}" + (f", table {csv}" if csv is not None else ""),
        soft_wrap=True,
    )
    raise typer.Exit(int(ExitCode.OK))
