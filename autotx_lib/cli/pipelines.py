"""``autotx pipelines``: workflows run after delivery (run, log, show, stats, cancel, rerun,
serve, list, rules) and ``autotx history DATASET``. The work is in :mod:`autotx_lib.pipelines`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from autotx_lib.cli._common import (
    ExitCode,
    JsonOption,
    OptionalConfigOption,
    fail,
    handle_errors,
    out,
    parse_since,
)
from autotx_lib.config import Config, load_config
from autotx_lib.journal import Journal

pipelines_app = typer.Typer(
    help="Workflows run on delivered data (plate-qc, previews, omero-import, your own) on "
         "dask, and their execution log. Exit status: 0 ok; 1 a run failed (run, rerun); "
         "2 bad configuration or input.",
    no_args_is_help=True,
)

SinceOption = Annotated[str | None, typer.Option(
    "--since", help="Only from this date on (YYYY-MM-DD, UTC).")]


def _load(config: Path | None, command: str) -> Config:
    if config is None:
        raise fail(f"give the agent's configuration: autotx {command} -c CONFIG")
    return handle_errors(load_config)(config)


def _params(items: list[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise fail(f"--param {item!r}: write it as NAME=VALUE (VALUE may be JSON)")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _when(value: Any) -> str:
    if value is None or value != value:  # None or NaT
        return ""
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _seconds(value: Any) -> str:
    return "" if value is None or value != value else f"{value:.1f} s"


def _text(value: Any, width: int) -> str:
    """A cell of text: empty for None/NaN, cut at ``width``."""
    return "" if value is None or value != value else str(value)[:width]


def _print_runs(frame: Any, as_json: bool) -> None:
    if as_json:
        out.print_json(frame.to_json(orient="records", date_format="iso"))
        return
    if frame.empty:
        out.print("no runs")
        return
    table = Table("run", "workflow", "status", "dataset", "initiator", "created", "took",
                  "error")
    for r in frame.itertuples():
        table.add_row(str(r.id), f"{r.workflow} {r.version}", r.status, r.dataset_path,
                      r.initiator, _when(r.created_at), _seconds(r.duration_s),
                      _text(r.error, 80))
    out.print(table)


def _run_and_report(config: Config, journal: Journal, run_ids: list[int]) -> None:
    from autotx_lib.pipelines import log as runlog
    from autotx_lib.pipelines.engine import PipelineEngine

    engine = PipelineEngine(config, journal)
    try:
        with out.status(f"running {len(run_ids)} run(s) on dask ..."):
            engine.run_until_idle()
    finally:
        engine.stop()
    frame = runlog.runs(journal, limit=max(len(run_ids), 1))
    frame = frame[frame["id"].isin(run_ids)]
    _print_runs(frame, False)
    if (frame["status"] != "finished").any():
        raise typer.Exit(int(ExitCode.INCOMPLETE))


@pipelines_app.command("run")
@handle_errors
def run_command(
    workflow: Annotated[str, typer.Argument(help="The workflow, e.g. plate-qc or previews.")],
    path: Annotated[Path | None, typer.Argument(help="The folder to run it on.")] = None,
    config: OptionalConfigOption = None,
    all_delivered: Annotated[bool, typer.Option(
        "--all-delivered", help="Run it on every delivered dataset (those that already "
        "had it are skipped).")] = False,
    since: SinceOption = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", help="NAME=VALUE given to the workflow (repeat).")] = None,
    wait: Annotated[bool, typer.Option(
        "--wait/--no-wait", help="Run now and show the results (default), or only record "
        "the runs for the agent's engine or `autotx pipelines serve`.")] = True,
) -> None:
    """Run a workflow by hand on a folder, or on everything already delivered.

    Exit status: 0 every run finished (or was recorded, with --no-wait); 1 a run failed
    or timed out; 2 bad configuration or input.
    """
    from autotx_lib.journal.pipeline_runs import PipelineStore
    from autotx_lib.pipelines.engine import record_all_delivered, record_run
    from autotx_lib.pipelines.registry import registry_for

    cfg = _load(config, "pipelines run NAME PATH")
    journal = Journal(cfg.journal_url)
    if all_delivered == (path is not None):
        raise fail("give either a PATH or --all-delivered")
    if all_delivered:
        run_ids, skipped = record_all_delivered(cfg, journal, workflow, since=parse_since(since),
                                                params=_params(param))
        out.print(f"{len(run_ids)} run(s) of {workflow} recorded; {skipped} dataset(s) "
                  "already had one (autotx pipelines rerun ID runs one again)")
    else:
        if not path.exists():
            raise fail(f"{path} does not exist; give a folder of delivered data")
        run_id, _ = record_run(PipelineStore(journal), registry_for(cfg), workflow, path,
                               initiator="cli", settings=cfg.pipelines, params=_params(param))
        run_ids = [run_id]
        out.print(f"run {run_id}: {workflow} on {path.resolve()}")
    if wait and run_ids:
        _run_and_report(cfg, journal, run_ids)


@pipelines_app.command("log")
@handle_errors
def log_command(
    config: OptionalConfigOption = None,
    workflow: Annotated[str | None, typer.Option("--workflow", "-w")] = None,
    status: Annotated[str | None, typer.Option(
        "--status", "-s", help="created, started, finished, error, cancelled or timeout.")
    ] = None,
    since: SinceOption = None,
    limit: Annotated[int, typer.Option(help="Runs per page.")] = 30,
    page: Annotated[int, typer.Option(help="Page number, 1 = newest.")] = 1,
    as_json: JsonOption = False,
) -> None:
    """The execution log: runs, newest first, filtered.

    Exit status: 0; 2 bad configuration or input.
    """
    from autotx_lib.pipelines import log as runlog

    cfg = _load(config, "pipelines log")
    try:
        frame = runlog.runs(Journal(cfg.journal_url), workflow=workflow, status=status,
                            since=parse_since(since), limit=limit, offset=(page - 1) * limit)
    except ValueError as error:
        raise fail(str(error)) from None
    _print_runs(frame, as_json)


@pipelines_app.command("show")
@handle_errors
def show_command(run_id: Annotated[int, typer.Argument(help="The run's id.")],
                 config: OptionalConfigOption = None, as_json: JsonOption = False) -> None:
    """One run: its status, result items and step log.

    Exit status: 0; 2 bad configuration or input.
    """
    from autotx_lib.pipelines import log as runlog

    cfg = _load(config, "pipelines show ID")
    try:
        detail = runlog.run_detail(Journal(cfg.journal_url), run_id)
    except KeyError as error:
        raise fail(error.args[0]) from None
    steps = detail.pop("steps")
    if as_json:
        detail["steps"] = json.loads(steps.to_json(orient="records", date_format="iso"))
        out.print_json(json.dumps(detail, default=str))
        return
    out.print(f"run {detail['id']}: {detail['workflow']} {detail['version']} on "
              f"{detail['dataset_path']}")
    out.print(f"  status {detail['status']} (attempt {detail['attempts']} of "
              f"{detail['max_attempts']}), by {detail['initiator']}, created "
              f"{_when(detail['created_at'])}, took {_seconds(detail['duration_s'])}")
    if detail["error"]:
        out.print(f"  error: {detail['error']}", soft_wrap=True)
    for key, value in detail["results"].items():
        out.print(f"  {key}: {json.dumps(value)[:200]}", soft_wrap=True)
    if not steps.empty:
        table = Table("attempt", "step", "status", "started", "took", "message")
        for s in steps.itertuples():
            table.add_row(str(s.attempt), s.name, s.status, _when(s.started_at),
                          _seconds(s.duration_s), _text(s.message, 80))
        out.print(table)


@pipelines_app.command("stats")
@handle_errors
def stats_command(
    config: OptionalConfigOption = None,
    by: Annotated[str, typer.Option("--by", help="day, workflow or initiator.")] = "day",
    since: SinceOption = None,
    errors: Annotated[bool, typer.Option("--errors", help="Count each error instead.")
                      ] = False,
    as_json: JsonOption = False,
) -> None:
    """Counts per status, error rate and duration percentiles (or counts per error).

    Exit status: 0; 2 bad configuration or input.
    """
    from autotx_lib.pipelines import log as runlog

    cfg = _load(config, "pipelines stats")
    journal = Journal(cfg.journal_url)
    try:
        frame = (runlog.error_statistics(journal, since=parse_since(since)) if errors
                 else runlog.statistics(journal, by=by, since=parse_since(since)).reset_index())
    except ValueError as error:
        raise fail(str(error)) from None
    if as_json:
        out.print_json(frame.to_json(orient="records"))
        return
    if frame.empty:
        out.print("no runs")
        return
    table = Table(*[str(c) for c in frame.columns])
    for row in frame.itertuples(index=False):
        table.add_row(*[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row])
    out.print(table)


@pipelines_app.command("cancel")
@handle_errors
def cancel_command(run_id: Annotated[int, typer.Argument(help="The run's id.")],
                   config: OptionalConfigOption = None) -> None:
    """Cancel a run that has not ended (its engine drops it at its next look).

    Exit status: 0 cancelled; 2 the run is not waiting or running, or bad input.
    """
    from autotx_lib.pipelines.engine import cancel_run

    cfg = _load(config, "pipelines cancel ID")
    if not cancel_run(Journal(cfg.journal_url), run_id):
        raise fail(f"run {run_id} is not waiting or running (see autotx pipelines show "
                   f"{run_id})")
    out.print(f"run {run_id} cancelled")


@pipelines_app.command("rerun")
@handle_errors
def rerun_command(run_id: Annotated[int, typer.Argument(help="The run's id.")],
                  config: OptionalConfigOption = None,
                  wait: Annotated[bool, typer.Option("--wait/--no-wait")] = True) -> None:
    """Run a run's workflow again on the same folder with the same params (a new run).

    Exit status: 0 the new run finished (or was recorded, with --no-wait); 1 it failed;
    2 no such run, or bad configuration.
    """
    from autotx_lib.pipelines.engine import rerun

    cfg = _load(config, "pipelines rerun ID")
    journal = Journal(cfg.journal_url)
    try:
        new_id = rerun(cfg, journal, run_id)
    except KeyError as error:
        raise fail(error.args[0]) from None
    out.print(f"run {new_id}: rerun of {run_id}")
    if wait:
        _run_and_report(cfg, journal, [new_id])


@pipelines_app.command("serve")
@handle_errors
def serve_command(config: OptionalConfigOption = None,
                  poll: Annotated[float, typer.Option(help="Seconds between looks.")] = 2.0
                  ) -> None:
    """Run due runs until Ctrl-C (for pipelines.run_in_agent = false in the configuration).

    Exit status: 0 stopped; 2 bad configuration; 130 interrupted.
    """
    from autotx_lib.pipelines.engine import PipelineEngine

    cfg = _load(config, "pipelines serve")
    engine = PipelineEngine(cfg)
    out.print(f"pipeline engine {engine.engine_id} running; Ctrl-C stops it")
    try:
        engine.run_forever(poll)
    finally:
        engine.stop()


@pipelines_app.command("list")
@handle_errors
def list_command(config: OptionalConfigOption = None) -> None:
    """The workflows installed here and the configured rules.

    Exit status: 0; 2 bad configuration or input.
    """
    from autotx_lib.pipelines.registry import WorkflowNotFoundError, registry_for

    cfg = _load(config, "pipelines list")
    registry = registry_for(cfg)
    table = Table("workflow", "version", "description")
    for name in registry.names():
        try:
            item = registry.get(name)
            table.add_row(name, item.version, item.description)
        except WorkflowNotFoundError as error:
            table.add_row(name, "-", f"cannot be loaded: {error}")
    out.print(table)
    for index, rule in enumerate(cfg.pipelines.rules, 1):
        out.print(f"rule {index}: {rule.model_dump(exclude_defaults=True)}")


@pipelines_app.command("rules")
@handle_errors
def rules_command(path: Annotated[Path, typer.Argument(help="A delivered folder.")],
                  config: OptionalConfigOption = None) -> None:
    """Which rules would run on a folder, and why the others would not.

    Exit status: 0; 2 bad configuration or input.
    """
    from autotx_lib.pipelines.rules import explain, folder_info

    cfg = _load(config, "pipelines rules PATH")
    if not path.exists():
        raise fail(f"{path} does not exist; give a delivered folder")
    lines = explain(cfg.pipelines.rules, folder_info(path, instrument=cfg.host_alias))
    if not lines:
        out.print("no rules: add [[pipelines.rules]] to the configuration")
    for line in lines:
        out.print(f"rule {line['rule']} ({line['workflow']}): "
                  + ("runs" if line["matched"] else f"does not run: {line['why']}"))


@handle_errors
def history_command(dataset: Annotated[str, typer.Argument(
                        help="The dataset: journal id, user/name, or its delivered folder.")],
                    config: OptionalConfigOption = None, as_json: JsonOption = False) -> None:
    """A dataset's history: created, transferred, verified, each pipeline run and its results.

    Exit status: 0; 2 nothing is known of the dataset, or bad configuration.
    """
    import pandas as pd

    from autotx_lib.pipelines import log as runlog

    cfg = _load(config, "history DATASET")
    frame = runlog.history(Journal(cfg.journal_url), dataset)
    if as_json:
        out.print_json(frame.to_json(orient="records", date_format="iso"))
        return
    if frame.empty:
        raise fail(f"nothing is known of {dataset!r}; give a journal id, user/name or a "
                   "delivered folder (autotx status lists them)")
    table = Table("when", "what", "status", "detail", "run")
    for r in frame.itertuples():
        table.add_row(_when(r.at), r.what, r.status, _text(r.detail, 100),
                      "" if pd.isna(r.run_id) else str(r.run_id))
    out.print(table)


__all__ = ["pipelines_app", "history_command"]
