"""``autotx jobs``: the OMERO imports after delivery: list, run, cancel, retry.

The imports are ``omero-import`` runs of the pipeline engine; these commands are the
short names kept from when they were jobs (``autotx pipelines ...`` does the same for
every workflow). The work is in :mod:`autotx_lib.pipelines`.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from autotx_lib.cli._common import (
    ExitCode,
    JsonOption,
    OptionalConfigOption,
    err,
    fail,
    handle_errors,
    out,
)
from autotx_lib.config import Config, load_config
from autotx_lib.journal import Journal
from autotx_lib.units import human_duration, local_time

KIND = "omero-import"

jobs_app = typer.Typer(
    help="The OMERO imports after delivery (omero-import pipeline runs): list, run, cancel, "
         "retry.\n\n"
         "`autotx jobs -c CONFIG [--json]` lists them with status, tries, duration and "
         "error; `autotx jobs run -c CONFIG [--once]` runs due pipeline runs (as `autotx "
         "pipelines serve`).\n\n"
         "Exit status: 0 ok; 1 a run failed or waits for a retry (run --once); 2 bad "
         "configuration or input.",
)


def _load(config: Path | None, command: str) -> Config:
    if config is None:
        raise fail(f"give the agent's configuration: autotx jobs {command}-c CONFIG")
    return handle_errors(load_config)(config)


@jobs_app.callback(invoke_without_command=True)
def show(ctx: typer.Context, config: OptionalConfigOption = None, as_json: JsonOption = False,
         limit: Annotated[int, typer.Option(help="How many imports, newest first.")] = 30
         ) -> None:
    """List recent OMERO import runs, newest first.

    Exit status: 0 ok; 2 bad configuration.
    """
    from autotx_lib.pipelines import log as runlog

    if ctx.invoked_subcommand is not None:
        return
    cfg = _load(config, "")
    frame = runlog.runs(handle_errors(Journal)(cfg.journal_url, readonly=True),
                        workflow=KIND, limit=limit)
    if as_json:
        out.print_json(frame.to_json(orient="records", date_format="iso"))
        return
    if frame.empty:
        out.print("no OMERO imports yet" + ("" if cfg.omero.enabled else
                  " (nothing after delivery is enabled: see [omero] enabled)"), markup=False)
        return
    out.print(_imports_table(frame))
    for r in frame.itertuples():
        if r.status in ("error", "timeout"):
            when = (f"retry at {local_time(r.next_attempt_at.to_pydatetime())}"
                    if r.next_attempt_at == r.next_attempt_at and r.next_attempt_at is not None
                    else "gave up")
            out.print(f"run {r.id}: {when}: {r.error or ''}", markup=False, soft_wrap=True)


def _imports_table(frame) -> Table:
    # Readable at 80 columns: every column is short and never wraps; errors go below it.
    table = Table(title="OMERO imports (autotx pipelines log -w omero-import)",
                  title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("run", justify="right", no_wrap=True)
    table.add_column("dataset", overflow="fold")
    for name in ("status", "tries", "took", "created"):
        table.add_column(name, justify="left" if name in ("status", "created") else "right",
                         no_wrap=True)
    for r in frame.itertuples():
        took = r.duration_s
        table.add_row(str(r.id), f"{r.user or ''}/{Path(r.dataset_path).name}", r.status,
                      str(r.attempts), human_duration(took) if took == took and took is not None
                      else "", local_time(r.created_at.to_pydatetime(), short=True))
    return table


@jobs_app.command("run")
def run_command(config: OptionalConfigOption = None, once: Annotated[bool, typer.Option(
        "--once", help="Run what is due now until it ends, then exit.")] = False,
        poll: Annotated[float, typer.Option(help="Seconds between looks.")] = 10.0
        ) -> None:
    """Run due pipeline runs, OMERO imports included (Ctrl-C or SIGTERM stop it).

    Exit status: 0 all due runs finished; 1 some failed or wait for a retry (--once);
    2 bad configuration; 130 interrupted.
    """
    from autotx_lib.pipelines.engine import PipelineEngine
    from autotx_lib.pipelines.omero_import import adopt_legacy_jobs

    cfg = _load(config, "run ")
    if not cfg.omero.enabled and not cfg.pipelines.rules:
        raise fail("no post-delivery step is enabled in this configuration ([omero] enabled = "
                   "false, no [[pipelines.rules]]); nothing to run")
    journal = Journal(cfg.journal_url)
    if cfg.omero.enabled:
        adopt_legacy_jobs(cfg, journal)
    engine = PipelineEngine(cfg, journal)
    if once:
        try:
            ended = handle_errors(engine.run_until_idle)()
        finally:
            engine.stop()
        out.print(f"{ended.finished} finished, {ended.failed} failed")
        for line in ended.errors:
            err.print(line, markup=False, soft_wrap=True)
        raise typer.Exit(int(ExitCode.INCOMPLETE if ended.failed else ExitCode.OK))
    previous = signal.signal(signal.SIGTERM, lambda *_: engine.stop_requested.set())
    try:
        err.print(f"pipeline engine {engine.engine_id} running; Ctrl-C stops it", markup=False)
        engine.run_forever(poll)
    except KeyboardInterrupt:
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        engine.stop()


@jobs_app.command("cancel")
def cancel_command(run_id: Annotated[int, typer.Argument(help="The import run's id.")],
                   config: OptionalConfigOption = None) -> None:
    """Cancel an import run that has not ended.

    Exit status: 0 cancelled; 2 bad configuration, or no such unfinished run.
    """
    from autotx_lib.pipelines.engine import cancel_run

    cfg = _load(config, "cancel ID ")
    if not cancel_run(Journal(cfg.journal_url), run_id):
        raise fail(f"run {run_id} does not exist or has already ended (autotx pipelines show "
                   f"{run_id})")
    out.print(f"run {run_id} cancelled")


@jobs_app.command("retry")
def retry_command(run_id: Annotated[int, typer.Argument(help="The import run's id.")],
                  config: OptionalConfigOption = None) -> None:
    """Import again: a new run of the same dataset, due now (as `autotx pipelines rerun`).

    Exit status: 0 due now; 2 bad configuration, or no such run.
    """
    from autotx_lib.pipelines.engine import rerun

    cfg = _load(config, "retry ID ")
    try:
        new_id = rerun(cfg, Journal(cfg.journal_url), run_id)
    except KeyError as error:
        raise fail(error.args[0]) from None
    out.print(f"run {new_id} (retry of {run_id}) is due now; `autotx jobs run` (or the "
              "agent) runs it")
