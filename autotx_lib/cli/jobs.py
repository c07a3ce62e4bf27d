"""``autotx jobs``: post-delivery jobs (OMERO import): list, run, cancel, retry."""

from __future__ import annotations

import datetime as dt
import json
import signal
from dataclasses import asdict
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
from autotx_lib.pipelines import job_runner
from autotx_lib.pipelines.jobs import JobOutcome, cancel_job, list_jobs, retry_job
from autotx_lib.units import human_duration, iso_time, local_time

jobs_app = typer.Typer(
    help="Jobs run after delivery (OMERO import): list, run, cancel, retry.\n\n"
         "`autotx jobs -c CONFIG [--json]` lists them with state, attempts, duration and "
         "error; `autotx jobs run -c CONFIG [--once]` runs them.\n\n"
         "Exit status: 0 ok; 1 a job failed or waits for a retry (run --once); 2 bad "
         "configuration or input.",
)


def _load(config: Path | None, command: str) -> Config:
    if config is None:
        raise fail(f"give the agent's configuration: autotx jobs {command}-c CONFIG")
    return handle_errors(load_config)(config)


@jobs_app.callback(invoke_without_command=True)
def show(ctx: typer.Context, config: OptionalConfigOption = None, as_json: JsonOption = False,
         limit: Annotated[int, typer.Option(help="How many jobs, newest first.")] = 30) -> None:
    """List recent post-delivery jobs, newest first.

    Exit status: 0 ok; 2 bad configuration.
    """
    if ctx.invoked_subcommand is not None:
        return
    cfg = _load(config, "")
    rows = list_jobs(handle_errors(Journal)(cfg.journal_url, readonly=True), limit)
    if as_json:
        data = [{k: (iso_time(v) if isinstance(v, dt.datetime) else v)
                 for k, v in asdict(r).items()} for r in rows]
        out.print_json(json.dumps(data))
        return
    if not rows:
        out.print("no jobs yet" + ("" if cfg.omero.enabled else
                                   " (nothing after delivery is enabled: see [omero] enabled)"),
                  markup=False)
        return
    out.print(_jobs_table(rows))
    for j in rows:
        if j.state == "error":
            when = f"retry at {local_time(j.next_attempt_at)}" if j.next_attempt_at else "gave up"
            out.print(f"job {j.id}: {when}: {j.error or ''}", markup=False, soft_wrap=True)


def _jobs_table(rows: list) -> Table:
    # Readable at 80 columns: every column is short and never wraps; errors go below it.
    table = Table(title="post-delivery jobs", title_justify="left", show_edge=False,
                  pad_edge=False)
    table.add_column("job", justify="right", no_wrap=True)
    table.add_column("kind", overflow="fold")  # the one that gives way if a zone name is long
    for name in ("dataset", "state", "tries", "took", "created"):
        table.add_column(name, justify="left" if name in ("state", "created") else "right",
                         no_wrap=True)
    for j in rows:
        table.add_row(str(j.id), j.kind, str(j.dataset_id or ""), j.state, str(j.attempts),
                      human_duration(j.duration_s) if j.duration_s is not None else "",
                      local_time(j.created_at, short=True))
    return table


def _print_outcome(outcome: JobOutcome) -> None:
    if outcome.state == "finished":
        err.print(f"job {outcome.job_id} ({outcome.kind}) finished in {outcome.duration_s:.1f} s",
                  markup=False)
    else:
        retry = (f"; retried at {outcome.retry_at:%H:%M:%S} UTC" if outcome.retry_at
                 else "; not retried")
        err.print(f"job {outcome.job_id} ({outcome.kind}) failed: {outcome.error}{retry}",
                  markup=False, soft_wrap=True)


@jobs_app.command("run")
def run_command(config: OptionalConfigOption = None, once: Annotated[bool, typer.Option(
        "--once", help="Run the jobs due now, then exit.")] = False,
        poll: Annotated[float, typer.Option(help="Seconds between looks at the queue.")] = 10.0
        ) -> None:
    """Run post-delivery jobs (in the foreground; Ctrl-C or SIGTERM stop it).

    Exit status: 0 all due jobs finished; 1 some failed or wait for a retry (--once);
    2 bad configuration; 130 interrupted.
    """
    cfg = _load(config, "run ")
    runner = job_runner(cfg, on_outcome=_print_outcome)
    if not runner.handlers:
        raise fail("no post-delivery step is enabled in this configuration ([omero] enabled = "
                   "false); nothing to run")
    if once:
        outcomes = runner.run_once()
        failed = [o for o in outcomes if o.state != "finished"]
        out.print(f"{len(outcomes) - len(failed)} finished, {len(failed)} failed")
        raise typer.Exit(int(ExitCode.INCOMPLETE if failed else ExitCode.OK))
    previous = signal.signal(signal.SIGTERM, lambda *_: runner.stop_requested.set())
    try:
        err.print("running post-delivery jobs; Ctrl-C stops", markup=False)
        runner.run_forever(poll)
    except KeyboardInterrupt:
        runner.stop_requested.set()
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


@jobs_app.command("cancel")
def cancel_command(job_id: Annotated[int, typer.Argument(help="The job's id.")],
                   config: OptionalConfigOption = None) -> None:
    """Cancel a job that has not finished.

    Exit status: 0 cancelled; 2 bad configuration, or no such unfinished job.
    """
    cfg = _load(config, "cancel ID ")
    if not cancel_job(Journal(cfg.journal_url), job_id):
        raise fail(f"job {job_id} does not exist or has already finished or been cancelled")
    out.print(f"job {job_id} cancelled")


@jobs_app.command("retry")
def retry_command(job_id: Annotated[int, typer.Argument(help="The job's id.")],
                  config: OptionalConfigOption = None) -> None:
    """Make a failed or cancelled job due now.

    Exit status: 0 due now; 2 bad configuration, or no such failed or cancelled job.
    """
    cfg = _load(config, "retry ID ")
    if not retry_job(Journal(cfg.journal_url), job_id):
        raise fail(f"job {job_id} does not exist or is not failed or cancelled")
    out.print(f"job {job_id} is due now; `autotx jobs run` (or the agent) runs it")
