"""``autotx session start|end|status`` and ``autotx usage``: who used the instrument, when."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from autotx_lib.cli._common import ConfigOption, JsonOption, fail, handle_errors, out
from autotx_lib.config import load_config
from autotx_lib.units import human_bytes, human_duration, local_time

session_app = typer.Typer(help="Instrument sessions: start and end them, see the open one.",
                          no_args_is_help=True)


def _show(session, verb: str) -> None:
    extra = "".join(f", {k} {v}" for k, v in (("project", session.project),
                                              ("booking", session.booking)) if v)
    out.print(f"{verb}: session {session.id} of {session.user}{extra}, started "
              f"{local_time(session.started_at)}"
              + (f", ended {local_time(session.ended_at)} ({session.end_reason})"
                 if session.ended_at else "")
              + f", {human_duration(session.duration().total_seconds())}",
              markup=False, soft_wrap=True)


@session_app.command("start")
def start_command(
    config: ConfigOption,
    user: Annotated[str, typer.Option("--user", "-u", help="Whose session (their folder name "
                                      "at the destination).")],
    project: Annotated[str | None, typer.Option("--project", "-p", help="Project or group, "
                                                "for the usage report.")] = None,
    booking: Annotated[str | None, typer.Option("--booking", help="The booking system's "
                                                "reference.")] = None,
    note: Annotated[str | None, typer.Option("--note", help="Free text.")] = None,
) -> None:
    """Start a session of USER on this instrument.

    An open session is ended first, or the start is refused, as the config's
    sessions.on_conflict says.

    Exit status: 0 started; 2 no or unknown user, or refused.
    """
    from autotx_lib.transfer.sessions import start_session

    cfg = handle_errors(load_config)(config)
    session = handle_errors(start_session)(cfg, user, project=project, booking=booking,
                                           note=note, started_by="cli")
    _show(session, "started")


@session_app.command("end")
def end_command(
    config: ConfigOption,
    note: Annotated[str | None, typer.Option("--note", help="Free text.")] = None,
) -> None:
    """End the open session. Exit status: 0 ended; 2 no session is open."""
    from autotx_lib.transfer.sessions import end_session

    cfg = handle_errors(load_config)(config)
    session = handle_errors(end_session)(cfg, note=note)
    _show(session, "ended")


@session_app.command("status")
def status_command(config: ConfigOption, as_json: JsonOption = False) -> None:
    """Show the open session, if any. Exit status: 0 one is open; 1 none is."""
    from dataclasses import asdict

    from autotx_lib.transfer.sessions import current_session

    cfg = handle_errors(load_config)(config)
    session = handle_errors(current_session)(cfg)
    if as_json:
        out.print_json(json.dumps(asdict(session) if session else None, default=str))
    elif session is None:
        out.print("no session is open on this instrument")
    else:
        _show(session, "open")
    raise typer.Exit(0 if session else 1)


def usage_command(
    config: ConfigOption,
    month: Annotated[str, typer.Option("--month", "-m", help="The month, as YYYY-MM.")],
    by: Annotated[str, typer.Option("--by", help="user, project or instrument.")] = "user",
    csv: Annotated[Path | None, typer.Option("--csv", help="Also write the table as CSV.")]
    = None,
    xlsx: Annotated[Path | None, typer.Option("--xlsx", help="Also write it as an Excel "
                                              "workbook.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Hours, sessions and data per user, project or instrument in a month.

    Sessions are cut at the month's boundaries; overlapping sessions count once.
    Exit status: 0; 2 bad month, --by value or configuration.
    """
    from autotx_lib.transfer.usage import usage

    cfg = handle_errors(load_config)(config)
    try:
        frame = handle_errors(usage)(cfg, month=month, by=by)
    except ValueError as error:
        raise fail(str(error)) from None
    if csv is not None:
        frame.to_csv(csv, index=False)
    if xlsx is not None:
        frame.to_excel(xlsx, index=False, sheet_name=f"usage {month}")
    if as_json:
        out.print_json(frame.to_json(orient="records"))
        return
    table = Table(by, "hours", "sessions", "datasets", "data", title=f"usage in {month}")
    for row in frame.itertuples(index=False):
        table.add_row(str(row[0]), f"{row.hours:.2f}", str(row.sessions), str(row.datasets),
                      human_bytes(row.bytes))
    out.print(table)
