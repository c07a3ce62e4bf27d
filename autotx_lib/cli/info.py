"""``autotx info PATH``: describe a microscopy file (backend, scenes, dims, plate)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autotx_lib.errors import ReaderError


def info(
    path: Annotated[Path, typer.Argument(help="Microscopy file to describe.")],
    backend: Annotated[
        str | None, typer.Option(help="Force a reader backend, e.g. bioformats.")
    ] = None,
) -> None:
    """Print a summary of a microscopy file.

    Exit status: 0 on success, 2 if the file cannot be read (the reason is on stderr).
    """
    from autotx_lib.imaging.readers import summarize

    try:
        text = summarize(path, backend=backend)
    except ReaderError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from error
    typer.echo(text)
