"""``plate-qc``: plate quality control of a delivered plate, a report, a mail to the user.

Discovers the plate (:func:`~autotx_lib.imaging.plate.discover_plate`), measures every
image with :func:`~autotx_lib.imaging.plate.plate_qc` as dask tasks on the same cluster
(the run leaves its worker slot while they run), gives each a verdict, writes
``plate_qc.html`` and ``plate_qc.csv`` into the run's results folder, and mails the user a
summary with the flagged wells. The ``[qc]`` thresholds and controls can be given as the
rule's ``params`` (``thresholds``, ``controls``, ``metrics``, ``pattern``), and
``batch_size``: images per dask task (default about 8 tasks per worker thread).

Result items: ``plate``, ``vendor``, ``images``, ``wells``, ``flagged_wells`` (list),
``verdicts`` (counts per verdict), ``usable`` (no well flagged), ``report``, ``csv``.
"""

from __future__ import annotations

from typing import Any

from autotx_lib.pipelines.context import RunContext
from autotx_lib.pipelines.registry import workflow


def summary_mail(plate: str, dataset: str, verdicts: dict[str, int], flagged: list[str],
                 report: str) -> tuple[str, str]:
    """The subject and body of the mail to the user."""
    images = sum(verdicts.values())
    subject = (f"Plate QC of {dataset}: {len(flagged)} wells flagged" if flagged
               else f"Plate QC of {dataset}: all wells ok")
    lines = [f"Plate QC of {plate} ({dataset}): {images} images measured.", ""]
    lines += [f"  {name}: {count}" for name, count in sorted(verdicts.items())]
    if flagged:
        lines += ["", "Wells to look at: " + ", ".join(flagged[:96])
                  + (" ..." if len(flagged) > 96 else "")]
    lines += ["", f"The report: {report}"]
    return subject, "\n".join(lines) + "\n"


def run_plate_qc(context: RunContext) -> dict[str, Any]:
    """Plate QC with verdicts; HTML report and CSV in the results folder; mail the user."""
    from autotx_lib.imaging.plate import discover_plate, plate_qc
    from autotx_lib.imaging.report import export_csv, write_report

    params = context.params
    with context.step("discover plate") as step:
        plate = discover_plate(context.path, pattern=params.get("pattern"))
        step["message"] = f"{plate.vendor}: {len(plate.records)} images, " \
                          f"{plate.geometry.wells}-well"
    with context.step("measure") as step, context.worker_client() as client:
        table = plate_qc(plate, params.get("metrics"), scheduler=client or "threads",
                         thresholds=params.get("thresholds"), controls=params.get("controls"),
                         batch_size=params.get("batch_size"))
        step["message"] = f"{len(table)} planes measured"
    with context.step("report") as step:
        csv = export_csv(table, context.results / "plate_qc.csv")
        report = write_report(table, context.results / "plate_qc.html",
                              title=f"Plate QC: {plate.name}", csv_name=csv.name)
        step["message"] = str(report)
    verdicts = {str(k): int(v) for k, v in table["verdict"].value_counts().items()}
    flagged = sorted({str(w) for w in table.loc[table["flagged"], "well"]})
    subject, body = summary_mail(plate.name, context.dataset or plate.name, verdicts, flagged,
                                 str(report))
    context.mail_user(subject, body)
    return {"plate": plate.name, "vendor": plate.vendor, "images": len(plate.records),
            "wells": int(table["well"].nunique()), "flagged_wells": flagged,
            "verdicts": verdicts, "usable": not flagged, "report": str(report),
            "csv": str(csv)}


PLATE_QC = workflow("plate-qc", version="1")(run_plate_qc)
