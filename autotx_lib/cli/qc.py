"""``autotx qc``: plate quality control, as an HTML report and a CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autotx_lib.cli._common import ExitCode, err, fail, handle_errors, out


@handle_errors
def qc(
    plate_dir: Annotated[
        Path, typer.Argument(help="Plate folder (or plate file: MeasurementData.mlf, CZI, .fake).")
    ],
    out_path: Annotated[
        Path, typer.Option("--out", "-o", help="The HTML report to write.", dir_okay=False)
    ],
    csv: Annotated[
        Path | None, typer.Option("--csv", help="Also write the per-image table as CSV.")
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
    """Plate QC: which wells are out of focus, too dark, or saturated.

    Measures every image of a plate (focus, intensity, saturation), flags outliers per
    plate and channel, and writes a standalone HTML report (heatmaps, flagged images
    with thumbnails). Exit status: 0 done (flagged or unreadable images are reported,
    not errors); 2 no plate recognised or bad input; 130 interrupted.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from autotx_lib.imaging.plate import discover_plate, plate_qc
    from autotx_lib.imaging.report import write_report

    if not plate_dir.exists():
        raise fail(f"{plate_dir} does not exist; give the plate's folder.")
    if not out_path.parent.exists():
        raise fail(f"the folder of --out ({out_path.parent}) does not exist.")
    chosen = None
    if metrics:
        chosen = metrics if metrics in ("all", "cellprofiler") else [
            m.strip() for m in metrics.split(",") if m.strip()
        ]
    try:
        plate = discover_plate(plate_dir, pattern=pattern)
    except ValueError as error:
        raise fail(str(error)) from None
    err.print(f"{plate!r}")
    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), console=err, transient=True,
    ) as bar:
        task = bar.add_task("measuring", total=len(plate.records))

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            table = plate_qc(plate, chosen, scheduler=scheduler, n_workers=workers,
                             progress=progress)
        except ValueError as error:
            raise fail(str(error)) from None
    write_report(table, out_path)
    if csv is not None:
        table.to_csv(csv, index=False)
    n_flagged = int(table["flagged"].sum())
    n_failed = int((table["error"] != "").sum())
    out.print(
        f"{plate.name}: {len(table)} images, {n_flagged} flagged, {n_failed} unreadable; "
        f"report {out_path}" + (f", table {csv}" if csv is not None else "")
    )
    raise typer.Exit(int(ExitCode.OK))
