"""What every command shares: exit codes, the consoles, one funnel from errors to exit codes."""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
import sys
from collections.abc import Callable
from enum import IntEnum
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer._click.exceptions import ClickException  # typer vendors click; not re-exported
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from autotx_lib.errors import AutotxError, ConfigError, MissingDependencyError
from autotx_lib.units import human_bytes  # noqa: F401 - re-exported for the commands

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


class ExitCode(IntEnum):
    """Exit statuses of ``autotx`` commands (also listed in each command's help)."""

    OK = 0
    INCOMPLETE = 1  # the work ran, but something failed or is left to retry
    BAD_INPUT = 2  # bad configuration, path or argument; nothing was done
    INTERRUPTED = 130


EXIT_STATUS_HELP = ("Exit status: 0 all done; 1 some datasets failed or wait for a retry; "
                    "2 bad configuration or input (nothing done); 130 interrupted.")

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The agent's configuration "
                                            "(TOML, or AutoTx XML file or folder).",
                                            exists=False, dir_okay=True)]

OptionalConfigOption = Annotated[Path | None, typer.Option(
    "--config", "-c", help="The agent's configuration (TOML, or AutoTx XML file or folder).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

F = TypeVar("F", bound=Callable)


# --- one style of help text for every command ---------------------------------------------
# Typer shows a flag's type (`--help <bool>`) and a required argument as `{path}`; we show
# flags bare and arguments as PATH (usage and table alike), and reflow docstring paragraphs
# so a line break in the source does not leave a one-word line at 80 columns.


class _Argument(TyperArgument):
    @property
    def display_name_raw(self) -> str:
        return self.metavar or self.name.upper()

    def _usage_display_name(self) -> str:
        name = self.display_name_raw + ("..." if self.nargs != 1 else "")
        return name if self.required else f"[{name}]"


class _Option(TyperOption):
    def display_type_rich(self, ctx) -> str | None:
        return None if self.is_flag else super().display_type_rich(ctx)


def _restyled_help_option(option):
    if type(option) is TyperOption:
        option.__class__ = _Option
    return option


class Command(TyperCommand):
    """A command rendering its help in the ``autotx`` style."""

    def get_help_option(self, ctx):
        return _restyled_help_option(super().get_help_option(ctx))


class Group(TyperGroup):
    """The ``autotx`` group: gives every command below it the same style of help."""

    def __init__(self, **attrs) -> None:
        super().__init__(**attrs)
        restyle(self)

    def get_help_option(self, ctx):
        return _restyled_help_option(super().get_help_option(ctx))

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        """Run the command; a usage error is one line on stderr and exit status 2."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False,
                                  **extra)
        except ClickException as error:
            if type(error).__name__ != "NoArgsIsHelpError":  # that one printed the help
                ctx = getattr(error, "ctx", None)
                hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
                err.print(f"[bold red]error:[/] {escape(error.format_message())}{hint}",
                          markup=True, soft_wrap=True)
            sys.exit(error.exit_code)
        except typer.Abort:
            err.print("aborted")
            sys.exit(int(ExitCode.INCOMPLETE))
        except Exception as error:  # the last resort: a bug, not the user's input
            if os.environ.get("AUTOTX_TRACEBACK"):
                raise
            message = str(error).splitlines()[0] if str(error) else ""
            err.print(f"[bold red]error:[/] {type(error).__name__}: {escape(message)} (this is "
                      "a bug in autotx; run again with AUTOTX_TRACEBACK=1 to see where, and "
                      "please report it)", markup=True, soft_wrap=True)
            sys.exit(int(ExitCode.INCOMPLETE))
        sys.exit(result if type(result) is int else 0)  # an Exit's code comes back here


def _reflow(text: str | None) -> str | None:
    """Join the lines of each paragraph (click's ``\\b`` paragraphs stay as written) and
    give "Exit status: ..." a paragraph of its own, the last."""
    if not text:
        return text
    text = "\n\n".join(p if p.startswith("\b") else re.sub(r"\s*\n\s*", " ", p)
                       for p in text.split("\n\n"))
    before, found, after = text.rpartition("Exit status:")
    if found and before.strip():
        text = f"{before.rstrip()}\n\n{found}{after}"
    return text


def restyle(command) -> None:
    """Give ``command``, its parameters and its subcommands the ``autotx`` help style."""
    # Help is plain text: "[qc]" is a TOML section, not rich markup to swallow.
    command.help = escape(_reflow(command.help)) if command.help else command.help
    for param in command.params:
        if getattr(param, "help", None):
            param.help = escape(param.help)
        if type(param) is TyperArgument:
            param.__class__ = _Argument
        elif type(param) is TyperOption:
            param.__class__ = _Option
    if type(command) is TyperCommand:
        command.__class__ = Command
    elif type(command) is TyperGroup:
        command.__class__ = Group
    for sub in getattr(command, "commands", {}).values():
        restyle(sub)


def fail(message: str, code: ExitCode = ExitCode.BAD_INPUT) -> typer.Exit:
    """Print ``message`` on stderr and return the Exit to raise."""
    err.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)
    return typer.Exit(int(code))


def parse_since(text: str | None) -> dt.datetime | None:
    """A ``--since YYYY-MM-DD`` option as the start of that day, UTC (None: no option)."""
    if text is None:
        return None
    try:
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
    except ValueError:
        raise fail(f"--since {text!r} is not a date; write it as YYYY-MM-DD, e.g. 2026-11-30") from None


def print_config_error(error: ConfigError) -> None:
    """One problem: one line on stderr; more: a count, then one line each."""
    if len(error.problems) == 1:
        problem = error.problems[0]
        where = problem.message if problem.key.startswith("(") else str(problem)
        if problem.key.startswith("(") and problem.fix:
            where += f" (fix: {problem.fix})"
        err.print(f"[bold red]error:[/] {escape(error.source)}: {escape(where)}", markup=True,
                  soft_wrap=True)
        return
    err.print(f"[bold red]error:[/] {escape(error.source)}: {len(error.problems)} problem(s):",
              markup=True, soft_wrap=True)
    for problem in error.problems:
        err.print(f"  - {problem}", markup=False, soft_wrap=True)


def handle_errors(command: F) -> F:
    """Turn autotx errors into a message on stderr and exit status 2; Ctrl-C into 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ConfigError as error:
            print_config_error(error)
            raise typer.Exit(int(ExitCode.BAD_INPUT)) from None
        except (AutotxError, MissingDependencyError) as error:
            raise fail(str(error)) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            sys.exit(int(ExitCode.INTERRUPTED))

    return wrapper  # type: ignore[return-value]
