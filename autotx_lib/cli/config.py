"""``autotx config check`` and ``explain``: validate a configuration; list every key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from autotx_lib.cli._common import ExitCode, err, fail, out, print_config_error
from autotx_lib.config import (
    check_config,
    config_keys,
    config_warnings,
    display_url,
    load_config,
)
from autotx_lib.errors import ConfigError, ConfigProblem
from autotx_lib.transfer.notify import check_smtp

config_app = typer.Typer(
    help="Check a configuration file (`autotx config check FILE`), or list every key it may "
         "set with its default and meaning (`autotx config explain [SECTION]`).",
    no_args_is_help=True)


@config_app.command("check")
def check(file: Annotated[Path, typer.Argument(help="A .toml file, an AutoTx .xml file, or "
                                               "a folder with AutoTx's config.common.xml.")]
          ) -> None:
    """Validate FILE and list every problem, each with its key and the fix.

    Also tries the SMTP server when one is configured, and warns about secret files
    (password_file) other users can read. Folders are compared with symbolic links
    resolved. A journal URL is shown without its password. A misspelt key gets a "did you
    mean"; `autotx config explain` lists them all.

    Exit status: 0 valid (perhaps with warnings); 2 problems found (a bad config never
    starts an agent; an unreachable SMTP server does not stop one, but is reported here).
    """
    ignored: dict[str, str] = {}
    warnings: list[ConfigProblem] = []
    try:
        if file.is_dir() or file.suffix.lower() == ".xml":
            from autotx_lib.autotx_xml import read_autotx_xml

            if file.exists():
                _, ignored = read_autotx_xml(file)
        config = load_config(file)
        problems = check_config(config)
        warnings = config_warnings(config)
        smtp_problem = check_smtp(config)
        if smtp_problem:
            problems.append(ConfigProblem("email.smtp_host", smtp_problem, "check the host, "
                                          "port, security and credentials; until then mail "
                                          "waits in the outbox and transfers go on"))
    except ConfigError as error:
        problems = error.problems
    from autotx_lib.autotx_xml import CONVERTED_KEYS

    for key, why in ignored.items():
        kind = "note on AutoTx key" if key in CONVERTED_KEYS else "ignored AutoTx key"
        err.print(f"{kind} {key}: {why}", markup=False, soft_wrap=True)
    for warning in warnings:
        err.print(f"warning: {warning}", markup=False, soft_wrap=True)
    if problems:
        print_config_error(ConfigError(file, problems))
        raise typer.Exit(int(ExitCode.BAD_INPUT))
    out.print(f"{file}: valid. incoming={config.incoming} managed={config.managed} "
              f"destination={config.primary_shown} journal={display_url(config.journal_url)}",
              markup=False, soft_wrap=True)


@config_app.command("explain")
def explain(section: Annotated[str | None, typer.Argument(
        help="Only this section, e.g. readiness, email, omero.")] = None) -> None:
    """List every key a configuration file may set, with its type, default and meaning.

    Keys in a section are written under its [section] header in the TOML file; those of
    space_monitoring[] in each [[space_monitoring]] table.

    Exit status: 0 listed; 2 no such section.
    """
    keys = config_keys()
    if section is not None:
        keys = [k for k in keys if k.key.split(".")[0].removesuffix("[]") == section]
        if not keys:
            sections = sorted({k.key.split(".")[0].removesuffix("[]") for k in config_keys()
                               if "." in k.key})
            raise fail(f"no section {section!r}; the sections are: {', '.join(sections)}")
    for key in keys:
        out.print(f"[bold]{key.key}[/] = {escape(key.default)}  [dim]({escape(key.type)})[/]",
                  soft_wrap=True)
        if key.description:
            out.print(f"    {key.description}", markup=False, soft_wrap=True)
