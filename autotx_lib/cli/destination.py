"""``autotx destination``: mark (and show) the destination an agent delivers to."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from autotx_lib.cli._common import ConfigOption, JsonOption, handle_errors, out
from autotx_lib.config import load_config
from autotx_lib.journal import Journal

destination_app = typer.Typer(help="The destination's marker file: proof that the share is "
                              "mounted (agents wait while it is missing).",
                              no_args_is_help=True)


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
