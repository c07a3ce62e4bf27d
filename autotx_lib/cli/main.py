"""Wires the ``autotx`` command from one module per command group."""

from __future__ import annotations

from typing import Annotated

import typer

from autotx_lib.cli._common import Group
from autotx_lib.cli.config import config_app
from autotx_lib.cli.dashboard import dashboard
from autotx_lib.cli.destination import destination_app
from autotx_lib.cli.grace import grace_app
from autotx_lib.cli.hub import hub_app
from autotx_lib.cli.info import info
from autotx_lib.cli.jobs import jobs_app
from autotx_lib.cli.journal import journal_app
from autotx_lib.cli.pipelines import history_command, pipelines_app
from autotx_lib.cli.qc import qc
from autotx_lib.cli.service import service_app
from autotx_lib.cli.sessions import session_app, usage_command
from autotx_lib.cli.transfer import (
    bandwidth_command,
    demo,
    requeue_command,
    resume_command,
    run,
    status_command,
    submit_command,
    suspend_command,
    verify_command,
)

app = typer.Typer(
    name="autotx",
    cls=Group,
    help="Move microscopy data off instrument PCs, verified; then look at what arrived.\n\n"
         "`autotx COMMAND --help` explains each command. Exit status: 0 done; 1 the work ran "
         "but something failed or waits for a retry; 2 bad configuration or input (nothing "
         "done); 130 interrupted. Each command's help lists its own.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



def _print_version(value: bool) -> None:
    if value:
        from autotx_lib import __version__

        typer.echo(f"autotx_lib {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", help="Print the version and exit.", callback=_print_version,
        is_eager=True)] = False) -> None:
    pass


app.command("demo")(demo)
app.command("run")(run)
app.command("status")(status_command)
app.command("submit")(submit_command)
app.command("suspend")(suspend_command)
app.command("resume")(resume_command)
app.command("requeue")(requeue_command)
app.command("bandwidth")(bandwidth_command)
app.command("verify")(verify_command)
app.add_typer(config_app, name="config")
app.add_typer(service_app, name="service")
app.add_typer(destination_app, name="destination")
app.add_typer(session_app, name="session")
app.command("usage")(usage_command)
app.add_typer(grace_app, name="grace")
app.add_typer(hub_app, name="hub")
app.add_typer(jobs_app, name="jobs")
app.add_typer(journal_app, name="journal")
app.add_typer(pipelines_app, name="pipelines")
app.command("history")(history_command)
app.command("qc")(qc)
app.command("info")(info)
app.command("dashboard")(dashboard)


def main() -> None:
    """Entry point of the ``autotx`` console script."""
    app()
