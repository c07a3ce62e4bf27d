"""``autotx info PATH``: describe a microscopy file (backend, scenes, dims, plate)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autotx_lib.cli._common import fail, handle_errors


@handle_errors
def info(
    path: Annotated[Path, typer.Argument(help="Microscopy file (or plate folder) to describe.")],
    backend: Annotated[
        str | None, typer.Option(help="Force a reader backend, e.g. bioformats.")
    ] = None,
) -> None:
    """Print a summary of a microscopy file.

    Exit status: 0 on success, 2 if the file cannot be read (the reason, one line, on stderr).
    """
    from autotx_lib.imaging.readers import summarize

    try:
        text = summarize(path, backend=backend)
    except ValueError as error:  # an unknown backend name: the message lists the valid ones
        raise fail(str(error)) from None
    typer.echo(text)
