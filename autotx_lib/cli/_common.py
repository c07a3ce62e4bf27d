"""What every command shares: exit codes, the consoles, one funnel from errors to exit codes."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from enum import IntEnum
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console

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


def fail(message: str, code: ExitCode = ExitCode.BAD_INPUT) -> typer.Exit:
    """Print ``message`` on stderr and return the Exit to raise."""
    err.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    return typer.Exit(int(code))


def handle_errors(command: F) -> F:
    """Turn autotx errors into a message on stderr and exit status 2; Ctrl-C into 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ConfigError as error:
            err.print(f"[bold red]error:[/] {error.source}: {len(error.problems)} problem(s):",
                      markup=True)
            for problem in error.problems:
                err.print(f"  - {problem}", markup=False, soft_wrap=True)
            raise typer.Exit(int(ExitCode.BAD_INPUT)) from None
        except (AutotxError, MissingDependencyError) as error:
            raise fail(str(error)) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            sys.exit(int(ExitCode.INTERRUPTED))

    return wrapper  # type: ignore[return-value]
