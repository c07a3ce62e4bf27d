"""``autotx config check``: validate a configuration and print every problem at once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autotx_lib.cli._common import ExitCode, err, out
from autotx_lib.config import check_config, config_warnings, display_url, load_config
from autotx_lib.errors import ConfigError, ConfigProblem
from autotx_lib.transfer.notify import check_smtp

config_app = typer.Typer(help="Check and explain configuration files.", no_args_is_help=True)


@config_app.command("check")
def check(file: Annotated[Path, typer.Argument(help="A .toml file, an AutoTx .xml file, or "
                                               "a folder with AutoTx's config.common.xml.")]
          ) -> None:
    """Validate FILE and list every problem, each with its key and the fix.

    Also tries the SMTP server when one is configured, and warns about secret files
    (``password_file``) other users can read. Folders are compared with symbolic links
    resolved. A journal URL is shown without its password. Exit status: 0 valid (perhaps
    with warnings); 2 problems found (a bad config never starts an agent; an unreachable
    SMTP server does not stop one, but is reported here).
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
    for key, why in ignored.items():
        err.print(f"ignored AutoTx key {key}: {why}", markup=False, soft_wrap=True)
    for warning in warnings:
        err.print(f"warning: {warning}", markup=False, soft_wrap=True)
    if problems:
        err.print(f"{file}: {len(problems)} problem(s):", markup=False, soft_wrap=True)
        for problem in problems:
            err.print(f"  - {problem}", markup=False, soft_wrap=True)
        raise typer.Exit(int(ExitCode.BAD_INPUT))
    out.print(f"{file}: valid. incoming={config.incoming} managed={config.managed} "
              f"destination={config.destination} journal={display_url(config.journal_url)}",
              markup=False, soft_wrap=True)
