"""``autotx journal``: upgrade the journal's schema (the agent also does it at start)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from autotx_lib.cli._common import ConfigOption, JsonOption, handle_errors, out
from autotx_lib.config import load_config

journal_app = typer.Typer(help="The agent's journal: schema upgrades.", no_args_is_help=True)


@journal_app.command("upgrade")
def upgrade_command(
    config: ConfigOption,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be done "
                                          "(the steps and their SQL); change nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Upgrade the journal to this autotx's schema, keeping every row.

    Stop the agent first (it upgrades the journal itself when it starts). Exit status: 0
    upgraded or already up to date; 2 no journal, a journal of a newer autotx, or one
    that cannot be read.
    """
    from autotx_lib.journal.core import upgrade_journal

    cfg = handle_errors(load_config)(config)
    plan = handle_errors(upgrade_journal)(cfg.journal_url, dry_run=dry_run)
    if as_json:
        out.print_json(json.dumps({"current": plan.current, "head": plan.head,
                                   "dry_run": dry_run, "needed": plan.needed,
                                   "steps": [vars(s) for s in plan.steps], "sql": plan.sql}))
        return
    if not plan.needed:
        out.print(f"the journal is up to date (schema {plan.head})", markup=False)
        return
    verb = "would" if dry_run else "did"
    out.print(f"schema {plan.current or 'of the release before migrations'} -> {plan.head}; "
              f"{verb}:", markup=False)
    for step in plan.steps:
        out.print(f"  {step.revision}: {step.description}", markup=False, soft_wrap=True)
    if dry_run and plan.sql.strip():
        out.print("SQL:", markup=False)
        out.print(plan.sql.strip(), markup=False, soft_wrap=True, highlight=False)
