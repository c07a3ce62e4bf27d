"""``autotx destination``: mark (and show) the destination an agent delivers to."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from autotx_lib.cli._common import (
    ConfigOption,
    JsonOption,
    fail,
    handle_errors,
    out,
    parse_since,
)
from autotx_lib.config import load_config
from autotx_lib.journal import Journal

destination_app = typer.Typer(help="The destinations: the marker file that proves the share is "
                              "mounted (agents wait while it is missing), and back-filling one "
                              "added later.", no_args_is_help=True)


@destination_app.command("init")
def init_command(
    config: ConfigOption,
    force: Annotated[bool, typer.Option("--force", help="Accept a destination whose marker "
                                        "differs from the one this agent knows (the storage "
                                        "was replaced on purpose).")] = False,
) -> None:
    """Write the marker file at the destination and record it in the journal.

    Run it once the share is mounted (the agent also does it at its first delivery).
    Exit status: 0 marked; 2 the destination is missing, not writable, or is another
    destination (without --force).
    """
    from autotx_lib.transfer.destination import MARKER_NAME, init_destination
    from autotx_lib.transfer.fanout import primary_destination

    cfg = handle_errors(load_config)(config)
    where = handle_errors(primary_destination)(cfg)
    journal = handle_errors(Journal)(cfg.journal_url)
    try:
        marker = handle_errors(init_destination)(where, journal, cfg.host_alias, force=force)
    finally:
        journal.close()
    out.print(f"{cfg.primary_shown}/{MARKER_NAME}: destination {marker['id']} (made by "
              f"{marker.get('created_by', '?')} at {marker.get('created_at', '?')})",
              markup=False, soft_wrap=True)


@destination_app.command("show")
def show_command(config: ConfigOption, as_json: JsonOption = False) -> None:
    """Show the destination's marker and whether it is the one this agent delivers to.

    Exit status: 0 the marker matches; 1 it is missing or differs; 2 bad configuration.
    """
    from autotx_lib.transfer.destination import SETTING, read_marker
    from autotx_lib.transfer.fanout import primary_destination

    cfg = handle_errors(load_config)(config)
    journal = handle_errors(Journal)(cfg.journal_url)
    try:
        expected = journal.get_setting(SETTING)
    finally:
        journal.close()
    marker = read_marker(handle_errors(primary_destination)(cfg))
    matches = marker is not None and expected in (None, marker["id"])
    if as_json:
        out.print_json(json.dumps({"destination": cfg.primary_shown, "marker": marker,
                                   "expected_id": expected, "matches": matches}))
    elif marker is None:
        out.print(f"{cfg.primary_shown}: no marker (not mounted, or never used)"
                  + (f"; this agent expects destination {expected}" if expected else ""),
                  markup=False, soft_wrap=True)
    else:
        state = "this agent's destination" if matches else f"NOT {expected}"
        out.print(f"{cfg.primary_shown}: destination {marker['id']} ({state})", markup=False,
                  soft_wrap=True)
    raise typer.Exit(0 if matches else 1)


@destination_app.command("backfill")
def backfill_command(
    config: ConfigOption,
    name: Annotated[str, typer.Argument(help="The [[destinations]] entry (its name) that was "
                                        "added later.")],
    since: Annotated[str | None, typer.Option(
        "--since", help="Only datasets delivered on or after this date (YYYY-MM-DD).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list the datasets.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Give a destination added later the datasets delivered before it.

    The running agent copies them while it is idle, from the original in the grace area or
    the primary destination's copy, each checked against what was delivered, and reports
    each one (`autotx status` shows them pending until then). Exit status: 0 done (also
    when there was nothing to do); 2 bad configuration or an unknown destination.
    """
    from autotx_lib.transfer.fanout import backfill

    cfg = handle_errors(load_config)(config)
    journal = handle_errors(Journal)(cfg.journal_url)
    try:
        rows = backfill(cfg, journal, name, since=parse_since(since), dry_run=dry_run)
    except ValueError as error:
        raise fail(str(error)) from None
    finally:
        journal.close()
    if as_json:
        out.print_json(json.dumps({"destination": name, "dry_run": dry_run, "datasets": [
            {"id": r.id, "user": r.user, "name": r.name} for r in rows]}))
        return
    verb = "would be given" if dry_run else "given"
    out.print(f"{len(rows)} delivered dataset(s) {verb} a copy at {name}"
              + ("" if dry_run or not rows else "; the agent copies them when it is idle"),
              markup=False, soft_wrap=True)
    for row in rows:
        out.print(f"  {row.id}  {row.user}/{row.name}", markup=False, soft_wrap=True)
