"""``autotx run``, ``status``, ``submit``, ``demo``: the transfer commands."""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
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
    EXIT_STATUS_HELP,
    ConfigOption,
    ExitCode,
    err,
    fail,
    handle_errors,
    human_bytes,
    out,
    parse_since,
)
from autotx_lib.config import Config, check_config, load_config
from autotx_lib.errors import ConfigError
from autotx_lib.logging_setup import configure_logging
from autotx_lib.pipelines import pipeline_hooks
from autotx_lib.pipelines.log import pipelines_status, pipelines_status_lines
from autotx_lib.transfer import agent as agent_module
from autotx_lib.transfer.status import Status, status
from autotx_lib.units import human_duration, local_time


def load_checked(path: Path, *, for_run: bool = False) -> Config:
    """Load a config and refuse to go on while it has problems.

    For ``autotx run`` an unreachable destination (a share not mounted yet) is no reason
    to refuse: the agent starts and the datasets wait for it.
    """
    config = load_config(path)
    problems = check_config(config, for_run=for_run)
    if problems:
        raise ConfigError(path, problems)
    return config


class ProgressView:
    """Renders the agent's progress callbacks as rich progress bars, one per dataset."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.tasks: dict[int, int] = {}

    def __call__(self, p: agent_module.Progress) -> None:
        if p.dataset_id not in self.tasks:
            self.tasks[p.dataset_id] = self.progress.add_task(
                f"{p.user}/{p.name}", total=p.bytes_total, files=f"0/{p.files_total}")
        self.progress.update(self.tasks[p.dataset_id], completed=p.bytes_done,
                             files=f"{p.files_done}/{p.files_total} files")


def _progress_bars() -> Progress:
    def fixed() -> Column:
        return Column(no_wrap=True)

    return Progress(TextColumn("{task.description}", table_column=Column(
                        max_width=22, no_wrap=True, overflow="ellipsis")),
                    BarColumn(bar_width=8), TextColumn("{task.fields[files]}",
                                                       table_column=fixed()),
                    DownloadColumn(table_column=fixed()), TransferSpeedColumn(table_column=fixed()),
                    TimeRemainingColumn(table_column=fixed()), console=err, transient=False)


def _event_printer(console):
    def print_event(level: str, message: str) -> None:
        style = {"error": "red", "warning": "yellow"}.get(level, "dim")
        console.print(f"[{style}]{level}:[/] ", end="", markup=True)
        console.print(message, markup=False, soft_wrap=True, highlight=False)
    return print_event


def run_agent(config: Config, once: bool) -> agent_module.RunSummary:
    """Run the agent with progress bars; SIGTERM and Ctrl-C stop it cleanly.

    Ctrl-C (SIGINT, which Windows service wrappers send) asks the agent to stop, as SIGTERM
    does, instead of raising KeyboardInterrupt wherever the agent happens to be; once it
    has stopped, KeyboardInterrupt is raised (exit status 130). A second Ctrl-C interrupts
    at once.
    """
    with _progress_bars() as bars:
        agent = agent_module.Agent(config, on_progress=ProgressView(bars),
                                   on_event=_event_printer(bars.console),
                                   after_delivery=pipeline_hooks(config))
        interrupted = threading.Event()

        def on_interrupt(*_: object) -> None:
            interrupted.set()
            signal.signal(signal.SIGINT, signal.default_int_handler)  # the next one: at once
            agent.stop()

        previous = signal.signal(signal.SIGTERM, lambda *_: agent.stop())
        previous_int = signal.signal(signal.SIGINT, on_interrupt)
        try:
            summary = agent.run(once=once)
        except KeyboardInterrupt:
            agent.stop()
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
        if interrupted.is_set():
            raise KeyboardInterrupt
        return summary


def run(config: ConfigOption, once: Annotated[bool, typer.Option(
        "--once", help="Process every dataset that is ready now, then exit.")] = False) -> None:
    """Run the transfer agent in the foreground (Ctrl-C or SIGTERM stop it cleanly).

    Exit status: 0 all done; 1 some datasets failed or wait for a retry; 2 bad
    configuration (nothing done); 130 interrupted.
    """
    cfg = handle_errors(load_checked)(config, for_run=True)
    configure_logging(cfg)
    for problem in check_config(cfg):  # only the destination's remain: wait, do not exit
        err.print(f"warning: {problem.message}; datasets wait for it and are retried",
                  markup=False, soft_wrap=True)
    summary = handle_errors(run_agent)(cfg, once)
    parts = [f"{len(summary.delivered)} delivered", f"{len(summary.unmatched)} unmatched",
             f"{len(summary.failed)} quarantined", f"{len(summary.retrying)} to retry",
             f"{len(summary.waiting)} not ready yet"]
    out.print("; ".join(parts))
    for waiting in summary.waiting:
        out.print(f"  not ready: {waiting}", markup=False, soft_wrap=True)
    if summary.paused:
        out.print("paused, nothing started: " + "; ".join(summary.paused))
    raise typer.Exit(int(ExitCode.OK if summary.ok else ExitCode.INCOMPLETE))


def _status_table(snapshot: Status) -> None:
    out.print(f"agent: [bold]{snapshot.agent_state}[/]"
              + (f" ({snapshot.agent_detail})" if snapshot.agent_detail else ""), markup=True)
    if snapshot.suspended:
        out.print(f"[yellow]suspended by hand:[/] {snapshot.suspended}", markup=True)
    current = snapshot.current
    if current is not None:
        rate = current.rate_bytes_per_s
        eta = current.eta_seconds
        pace = f", paused: {current.paused}" if current.paused else \
            (f", {human_bytes(rate)}/s" if rate else "") + \
            (f", {human_duration(eta)} left" if eta is not None else "")
        out.print(f"current: {current.user}/{current.name}: {current.percent:.1f} % "
                  f"({current.copied_files}/{current.total_files} files, "
                  f"{human_bytes(current.copied_bytes)} of {human_bytes(current.total_bytes)}"
                  f"{pace})", markup=False, soft_wrap=True)
    if snapshot.waiting:
        waiting = Table("user", "folder in incoming/", "waits for", "until",
                        title="not ready yet")
        for w in snapshot.waiting:
            waiting.add_row(w.user, w.name, w.reason, local_time(w.until) if w.until else "")
        out.print(waiting)
    # At 80 columns: short columns never wrap, names fold; each note is a line below.
    table = Table(title="queue and recent results", title_justify="left")
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("user", overflow="fold")
    table.add_column("dataset", overflow="fold")
    table.add_column("state", no_wrap=True)
    table.add_column("files", justify="right", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("finished", no_wrap=True)
    notes = []
    for d in snapshot.queue + snapshot.history:
        table.add_row(str(d.id), d.user, d.name, d.state, str(d.total_files),
                      human_bytes(d.total_bytes), local_time(d.finished_at, short=True))
        if d.error or d.verified:
            notes.append(f"{d.id}: {d.error or f'verified ({d.algorithm}) at {d.dest_path}'}")
        if d.destinations_line():
            notes.append(f"{d.id}: destinations: {d.destinations_line()}")
    out.print(table)
    for note in notes:
        out.print(note, markup=False, soft_wrap=True)
    if snapshot.jobs:
        jobs = Table("job", "kind", "dataset", "state", "tries", "took", title="after delivery")
        for j in snapshot.jobs:
            jobs.add_row(str(j.id), j.kind, str(j.dataset_id or ""), j.state, str(j.attempts),
                         f"{j.duration_s:.1f} s" if j.duration_s is not None else "")
        out.print(jobs)
        for j in (j for j in snapshot.jobs if j.state == "error"):
            retry = f"retry at {j.next_attempt_at:%H:%M} UTC" if j.next_attempt_at else "gave up"
            out.print(f"job {j.id}: {retry}: {(j.error or '')[:300]}", markup=False,
                      soft_wrap=True)
    for event in snapshot.events[:5]:
        out.print(f"{local_time(event.at)} {event.level}: {event.message}", markup=False,
                  soft_wrap=True)


def status_command(config: ConfigOption, as_json: Annotated[bool, typer.Option(
        "--json", help="Print machine-readable JSON.")] = False) -> None:
    """Show the queue, the current transfer with its progress, and the last results.

    Reads the agent's journal, so it works while the agent runs in another process.
    Exit status: 0; 2 bad configuration.
    """
    cfg = handle_errors(load_config)(config)
    snapshot = handle_errors(status)(cfg)
    runs = handle_errors(pipelines_status)(cfg)  # runs under way, failed lately
    if as_json:
        out.print_json(json.dumps(snapshot.to_dict() | {"pipelines": runs}))
    else:
        _status_table(snapshot)
        for line in pipelines_status_lines(runs):
            out.print(line, markup=False, soft_wrap=True)


def suspend_command(
    config: ConfigOption,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why; shown to others by "
                                        "`autotx status` and the transfer monitor.")],
    replace: Annotated[bool, typer.Option("--replace", help="Replace the reason of a "
                                          "suspension already in force.")] = False,
) -> None:
    """Suspend transfers (a copy under way pauses mid-file within a second).

    The suspension is kept in the journal: it holds across agent restarts until
    `autotx resume`. Exit status: 0; 2 bad configuration, empty reason, or already
    suspended (the message says by whom; --replace changes the reason).
    """
    from autotx_lib.transfer.control import suspend

    cfg = handle_errors(load_config)(config)
    try:
        record = handle_errors(suspend)(cfg, reason, replace=replace)
    except ValueError as error:
        raise fail(str(error)) from None
    out.print(f"suspended: {record.reason} (by {record.by})")


def resume_command(config: ConfigOption) -> None:
    """Lift a suspension made with `autotx suspend`. Exit status: 0; 2 bad configuration."""
    from autotx_lib.transfer.control import resume

    cfg = handle_errors(load_config)(config)
    lifted = resume(cfg)
    out.print(f"resumed (was suspended: {lifted.reason})" if lifted else "was not suspended")


def submit_command(
    config: ConfigOption,
    path: Annotated[Path, typer.Argument(help="The finished acquisition folder.")],
    user: Annotated[str, typer.Option("--user", "-u", help="Whose data it is (their folder "
                                      "name at the destination).")],
) -> None:
    """Queue a folder for transfer (a rename on the same volume, else a verified copy).

    Exit status: 0 queued; 2 refused (the message says why).
    """
    from autotx_lib.transfer.submit import obstacles, submit

    cfg = handle_errors(load_config)(config)
    queued = handle_errors(submit)(cfg, path, user)
    out.print(f"queued: {queued}", markup=False, soft_wrap=True)
    for obstacle in obstacles(cfg, user, queued):
        err.print(f"[yellow]note:[/] {obstacle}", soft_wrap=True)


def requeue_command(
    config: ConfigOption,
    target: Annotated[str, typer.Argument(help="The dataset's id (see `autotx status`) or its "
                                          "folder in managed/error/ or managed/unmatched/.")],
) -> None:
    """Send a quarantined or unmatched dataset back to the queue (after its cause is fixed).

    The folder is moved back to incoming/<user>/ and claimed like a new acquisition.
    Exit status: 0 requeued; 2 not requeued (the message says why).
    """
    from autotx_lib.transfer.requeue import requeue

    cfg = handle_errors(load_config)(config)
    done = handle_errors(requeue)(cfg, target)
    out.print(f"requeued: {done.source} -> {done.target}", markup=False, soft_wrap=True)
    for warning in done.warnings:
        err.print(f"[yellow]note:[/] {warning}", soft_wrap=True)


def verify_command(
    config: ConfigOption,
    since: Annotated[str | None, typer.Option(
        "--since", help="Only datasets delivered on or after this date (YYYY-MM-DD).")] = None,
    dataset: Annotated[list[int] | None, typer.Option(
        "--dataset", "-d", help="Only this dataset id (repeatable).")] = None,
    destination: Annotated[str | None, typer.Option(
        "--destination", help="Check the copies at this [[destinations]] entry (by name) "
        "instead of the primary destination.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
    = False,
) -> None:
    """Re-read delivered datasets at the destination and check them against what was
    delivered (bit rot, tampering, deletion). Nothing is changed.

    Exit status: 0 every dataset matches; 1 some no longer match (listed, logged, mailed
    to the admin); 2 bad input, or the destination is not there (not mounted).
    """
    from autotx_lib.transfer.notify import Notifier
    from autotx_lib.transfer.recheck import recheck_delivered

    cfg = handle_errors(load_config)(config)
    try:
        report = handle_errors(recheck_delivered)(cfg, since=parse_since(since),
                                                  dataset_ids=dataset or None,
                                                  destination=destination)
    except ValueError as error:
        raise fail(f"--destination: {error}") from None
    if report.failed:
        from autotx_lib.journal import Journal

        journal = Journal(cfg.journal_url)
        notifier = Notifier(cfg, journal)
        notifier.needs_attention("recheck", f"{len(report.failed)} delivered dataset(s) no "
                                 "longer match what was delivered", "\n".join(
                                     f"{c.user}/{c.name} at {c.dest_path}: "
                                     + "; ".join(c.problems[:5]) for c in report.failed))
        notifier.flush()
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
    else:
        for check in report.checked:
            verdict = "[green]ok[/]" if check.ok else "[red]NO LONGER MATCHES[/]"
            out.print(f"{check.dataset_id} {check.user}/{check.name}: {verdict} "
                      f"({check.files} files, {human_bytes(check.bytes)})", soft_wrap=True)
            for problem in check.problems[:20]:
                out.print(f"    {problem}", markup=False, soft_wrap=True)
        out.print(f"{len(report.checked)} checked, {len(report.failed)} no longer match")
    raise typer.Exit(int(ExitCode.OK if report.ok else ExitCode.INCOMPLETE))


def bandwidth_command(
    config: ConfigOption,
    value: Annotated[str | None, typer.Argument(
        help="20M (MB/s), 512k, off (no cap), default (the config's value), or a timetable "
             "like 'Mon-Fri 08:00,10M 19:00,off'. Without it: show the cap in force.")] = None,
) -> None:
    """Change the bandwidth cap of the running agent, live (or show it).

    Kept in the journal, so it holds across restarts until changed again.
    Exit status: 0; 2 bad value or configuration.
    """
    from autotx_lib.transfer import control

    cfg = handle_errors(load_config)(config)
    if value is not None:
        setting = None if value.strip().lower() == "default" else value
        try:
            handle_errors(control.set_bandwidth)(cfg, setting)
        except ValueError as error:
            raise fail(str(error)) from None
    override = handle_errors(control.bandwidth_override)(cfg)
    source = "set with `autotx bandwidth`" if override is not None else "from the config"
    shown = override if override is not None else cfg.gate.bandwidth_mb_s
    out.print(f"bandwidth: {control.describe_bandwidth(shown)} ({source})", markup=False)


def demo(
    folder: Annotated[Path | None, typer.Option("--dir", help="Where to build the demo "
                                                "facility (kept; default: a new temporary "
                                                "folder, removed at the end).")] = None,
    scale: Annotated[float, typer.Option(min=0.01, max=100, help="Data volume factor "
                                         "(1.0 = about 100 MB).")] = 1.0,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the temporary folder, to look "
                                       "around or run `autotx status` on it.")] = False,
) -> None:
    """Build a small demo facility, run the agent on it, and show what arrived, verified.

    No network and no set-up needed. The demo (about 100 MB times --scale) is built in a
    new temporary folder and removed at the end, unless --keep or --dir is given; the last
    lines say where it is and how big.

    Exit status: 0 everything was delivered as expected; 1 otherwise; 2 bad input.
    """
    if folder is not None and folder.exists() and any(folder.iterdir()):
        raise fail(f"{folder} is not empty; give a new or empty folder to --dir")
    root = folder or Path(tempfile.mkdtemp(prefix="autotx-demo-"))
    keep = keep or folder is not None
    try:
        ok = _run_demo(root, scale, keep)
    finally:
        _leave_demo(root, keep)
    raise typer.Exit(int(ExitCode.OK if ok else ExitCode.INCOMPLETE))


def _run_demo(root: Path, scale: float, keep: bool) -> bool:
    from autotx_lib.transfer.copy import CHECK_TOOL, verify_manifest
    from autotx_lib.transfer.demo import build_demo_facility

    err.print(f"building a demo facility in {root} ...", markup=False)
    cfg = build_demo_facility(root, scale=scale)
    _show_incoming(cfg)
    err.print(f"waiting {cfg.readiness.quiet_seconds:.0f} s for the acquisitions to be quiet ...")
    time.sleep(cfg.readiness.quiet_seconds + 0.2)
    summary = run_agent(cfg, once=True)
    if summary.paused:
        err.print("the agent paused: " + "; ".join(summary.paused), markup=False)
    snapshot = status(cfg)
    # At 80 columns: numbers never wrap, names fold; where each dataset went is below.
    table = Table(title="what arrived", title_justify="left")
    table.add_column("user", overflow="fold")
    table.add_column("dataset", overflow="fold")
    for name in ("files", "size", "rate"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("result", overflow="fold")
    all_ok = bool(summary.delivered)
    notes = []
    for d in snapshot.history:
        if d.state != "done":
            table.add_row(d.user, d.name, str(d.total_files), human_bytes(d.total_bytes), "",
                          f"[yellow]{d.state}[/]")
            notes.append(f"{d.user}/{d.name}: {d.state}: {d.error or ''}")
            continue
        problems = verify_manifest(Path(d.dest_path), Path(d.manifest_path), d.algorithm)
        all_ok &= not problems
        rate = d.rate_bytes_per_s
        table.add_row(d.user, d.name, str(d.total_files), human_bytes(d.total_bytes),
                      f"{human_bytes(rate)}/s" if rate else "",
                      "[green]verified[/]" if not problems else f"[red]{len(problems)} "
                      "problems[/]")
    out.print(table)
    for note in notes:
        out.print(note, markup=False, soft_wrap=True)
    algorithm = cfg.verify.algorithm
    out.print(f"Every file was hashed ({algorithm}) while read, read back from the destination "
              "and compared, then one rename made each dataset appear whole.")
    out.print(f"Delivered to: {cfg.destination}/<user>/<dataset>", markup=False, soft_wrap=True)
    out.print(f"Originals rest in the grace area: {cfg.managed / 'done'}", markup=False,
              soft_wrap=True)
    delivered = [d for d in snapshot.history if d.state == "done"]
    if delivered and keep:
        out.print(f"Check one yourself:  cd {delivered[-1].dest_path} && "
                  f"{CHECK_TOOL[algorithm]} {Path(delivered[-1].manifest_path).name}",
                  markup=False, soft_wrap=True)
    if keep:
        out.print(f"Status from the journal:  autotx status -c {root / 'autotx.toml'}",
                  markup=False, soft_wrap=True)
    return all_ok and summary.ok


def _leave_demo(root: Path, keep: bool) -> None:
    """Say where the demo is and how big; remove it unless it is kept."""
    from autotx_lib.transfer.demo import disk_usage

    size = human_bytes(disk_usage(root))
    if keep:
        out.print(f"The demo facility ({size}) stays in {root}; remove it with:  rm -r {root}",
                  markup=False, soft_wrap=True)
        return
    try:
        shutil.rmtree(root)
    except OSError as error:
        err.print(f"could not remove the demo facility ({size}) in {root}: {error}; remove it "
                  "by hand", markup=False, soft_wrap=True)
        return
    out.print(f"Removed the demo facility ({size}) from {root}; `autotx demo --keep` keeps it "
              "to look around.", markup=False, soft_wrap=True)


def _show_incoming(cfg: Config) -> None:
    table = Table("user", "acquisition", "files", "size", title="the instrument's incoming folder")
    for user in sorted(cfg.incoming.iterdir()):
        for dataset in sorted(user.iterdir()):
            sizes = [f.stat().st_size for f in dataset.rglob("*") if f.is_file()]
            table.add_row(user.name, dataset.name, str(len(sizes)), human_bytes(sum(sizes)))
    err.print(table)


__all__ = ["run", "status_command", "submit_command", "suspend_command", "resume_command",
           "requeue_command", "bandwidth_command", "verify_command", "demo", "EXIT_STATUS_HELP"]
