"""``autotx grace``: the grace area (managed/done/) by user, and the explicit purge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Column, Table

from autotx_lib.cli._common import (
    ExitCode,
    JsonOption,
    OptionalConfigOption,
    err,
    fail,
    handle_errors,
    human_bytes,
    out,
)
from autotx_lib.config import load_config
from autotx_lib.transfer.grace import (
    GraceReport,
    PurgeProgress,
    PurgeResult,
    grace_report,
    purge,
)

grace_app = typer.Typer(
    help="The grace area (managed/done/): what rests there, and the explicit purge.\n\n"
         "`autotx grace -c CONFIG [--json]` lists the originals by user, with age and size, "
         "and which are past grace_period_days; nothing is deleted. `autotx grace purge` "
         "removes old originals, explicitly.\n\n"
         "Exit status: 0 ok; 1 something was skipped (purge); 2 bad configuration or input.",
)


def _report_table(report: GraceReport, destination: str) -> None:
    # Readable at 80 columns: numbers never wrap, names fold rather than vanish into "…",
    # and delivered copies are shown relative to the destination (named once, below).
    table = Table(title=f"grace area {report.done_folder} (grace period "
                        f"{report.grace_period_days} days)", title_justify="left")
    table.add_column("user", overflow="fold")
    table.add_column("dataset", overflow="fold", ratio=3)
    table.add_column("days", justify="right", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("files", justify="right", no_wrap=True)
    table.add_column("expired", no_wrap=True)
    table.add_column("delivered copy", overflow="fold", ratio=3)
    for user, entries in report.by_user.items():
        for e in entries:
            table.add_row(user, e.name, f"{e.age_days:.1f}", human_bytes(e.size_bytes),
                          str(e.file_count), "[red]yes[/]" if e.expired else "no",
                          escape(_relative(e.dest_path, destination)) if e.dest_path
                          else "[yellow](not in the journal)[/]")
    out.print(table)
    out.print(f"Delivered copies are relative to {destination}.", markup=False, soft_wrap=True)
    out.print(f"{len(report.entries)} folder(s), {human_bytes(report.total_bytes)}; "
              f"{len(report.expired)} past the grace period, "
              f"{human_bytes(report.expired_bytes)}.", markup=False)
    if report.expired:
        out.print("Remove them (each original and its delivered copy are hashed first):  "
                  f"autotx grace purge -c CONFIG --older-than {report.grace_period_days} --yes",
                  markup=False, soft_wrap=True)


def _relative(path: str, root: str) -> str:
    """``path`` relative to ``root`` (a folder or an smb:// URL) when inside it, else as is."""
    prefix = root.rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) else path


@grace_app.callback(invoke_without_command=True)
def show(ctx: typer.Context, config: OptionalConfigOption = None, as_json: JsonOption = False) -> None:
    """List the originals in managed/done/ by user, with age and size, and which are past
    grace_period_days. Nothing is deleted; see `autotx grace purge`.

    Exit status: 0 ok; 2 bad configuration or input.
    """
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        raise fail("give the agent's configuration: autotx grace -c CONFIG")
    cfg = handle_errors(load_config)(config)
    report = handle_errors(grace_report)(cfg)
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
    else:
        _report_table(report, cfg.primary_shown)


SHOWN_REASONS = 20  # per original; --json has them all


def _purge_output(result: PurgeResult) -> None:
    verb, keep = ("would remove", "would keep") if result.dry_run else ("removed", "kept")
    kept = {id(s.entry) for s in result.skipped}
    for entry in result.candidates:
        if id(entry) in kept:
            continue
        out.print(f"{verb}: {entry.path} ({entry.age_days:.1f} days, "
                  f"{human_bytes(entry.size_bytes)}, {entry.file_count} files)",
                  markup=False, soft_wrap=True)
    for skip in result.skipped:
        for reason in skip.reasons[:SHOWN_REASONS]:
            err.print(f"{keep}: {skip.entry.path}: {reason}", markup=False, soft_wrap=True)
        if len(skip.reasons) > SHOWN_REASONS:
            err.print(f"{keep}: {skip.entry.path}: and {len(skip.reasons) - SHOWN_REASONS} "
                      "more (all of them: --json)", markup=False, soft_wrap=True)
    if result.dry_run:
        would = [e for e in result.candidates if id(e) not in kept]
        out.print(f"{len(would)} folder(s), {human_bytes(sum(e.size_bytes for e in would))} "
                  f"would be removed if every file hashes as the journal recorded; "
                  f"{len(result.skipped)} would be kept. Compared without hashing: the file "
                  "lists, sizes and modification times against the journal, and the manifest. "
                  "With --yes every file of each original and its delivered copy is hashed "
                  "first. Nothing was deleted: add --yes to remove them.",
                  markup=False, soft_wrap=True)
    else:
        out.print(f"{len(result.removed)} folder(s) removed, {human_bytes(result.freed_bytes)} "
                  f"freed; {len(result.skipped)} kept. Each removed original and its delivered "
                  "copy were hashed and agreed with the journal and the manifest.",
                  markup=False, soft_wrap=True)


def _hashing_bar(shown: bool) -> Progress:
    # One line at 80 columns: a long name is cut ("…"), the numbers never are.
    def fixed() -> Column:
        return Column(no_wrap=True)

    return Progress(TextColumn("hashing {task.description}", table_column=Column(
                        max_width=24, no_wrap=True, overflow="ellipsis")),
                    BarColumn(bar_width=8), TextColumn("{task.fields[files]}", table_column=fixed()),
                    DownloadColumn(table_column=fixed()),
                    TransferSpeedColumn(table_column=fixed()),
                    TimeRemainingColumn(table_column=fixed()), console=err, transient=True,
                    disable=not shown)


@grace_app.command("purge")
def purge_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="The agent's configuration.")],
    older_than: Annotated[float, typer.Option(
        "--older-than", help="Only originals older than this many days.")],
    yes: Annotated[bool, typer.Option(
        "--yes", help="Really delete; without it the command only lists.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Remove originals older than --older-than days from managed/done/.

    The journal's file rows are the reference. Without --yes nothing is deleted and nothing
    hashed: the file lists, sizes and modification times of the original, the delivered
    copy's file list and sizes, and its manifest are compared with the journal, and what
    would be kept is named. With --yes every file of the original and of the delivered copy
    is also hashed against the journal. Any disagreement keeps the original and prints one
    line per file saying why.

    Exit status: 0 ok; 1 something was skipped (kept, the reason is printed); 2 bad
    configuration or input (nothing done).
    """
    if older_than < 0:
        raise fail(f"--older-than must be 0 or more days, got {older_than:g}")
    cfg = handle_errors(load_config)(config)
    with _hashing_bar(shown=yes and err.is_terminal) as bar:
        task = bar.add_task("", total=None, files="")

        def show(p: PurgeProgress) -> None:
            bar.update(task, description=p.entry.name, completed=p.bytes_done,
                       total=p.bytes_total, files=f"{p.files_done}/{p.files_total} files")

        result = handle_errors(purge)(cfg, older_than, dry_run=not yes, on_progress=show)
    if as_json:
        out.print_json(json.dumps(result.to_dict()))
    else:
        _purge_output(result)
    raise typer.Exit(int(ExitCode.OK if result.ok else ExitCode.INCOMPLETE))


__all__ = ["grace_app"]
