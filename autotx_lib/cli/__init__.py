"""The ``autotx`` command. A thin face: every command calls a library function."""

from autotx_lib.cli.main import app, main

__all__ = ["app", "main"]
