"""Wires the ``autotx`` command from one module per command group."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="autotx",
    help="Move microscopy data off instrument PCs, verified; then look at what arrived.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def main() -> None:
    """Entry point of the ``autotx`` console script."""
    app()
