"""One style of help for every command, readable at 80 columns, ending in its exit statuses."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from autotx_lib.cli import app

runner = CliRunner()


def _walk(command, path=()):
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _walk(sub, (*path, name))


COMMANDS = list(_walk(typer.main.get_command(app)))


def _runs_itself(command) -> bool:
    """A command that does something when called (not a group that only lists commands)."""
    return not hasattr(command, "commands") or command.invoke_without_command


def test_the_walk_finds_every_command():
    paths = {" ".join(p) for p, _ in COMMANDS}
    assert {"", "demo", "status", "config check", "config explain", "grace purge",
            "jobs run", "service install"} <= paths
    assert len(paths) > 20


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS],
                         ids=[" ".join(p) or "autotx" for p, _ in COMMANDS])
def test_help_has_one_style_at_80_columns(path):
    command = dict(COMMANDS)[path]
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})

    assert result.exit_code == 0, result.output
    text = result.stdout
    too_long = [line for line in text.splitlines() if len(line) > 80]
    assert not too_long, too_long
    assert "<bool>" not in text  # a flag takes no value
    assert not re.search(r"\{[a-z_]+\}", text.split("╭─")[0]), text  # usage: PATH, not {path}
    if _runs_itself(command):
        description = text.split("╭─")[0]
        paragraphs = [p for p in re.split(r"\n\s*\n", description) if p.strip()]
        assert paragraphs[-1].strip().startswith("Exit status:"), description


def test_a_required_argument_is_named_in_capitals():
    result = runner.invoke(app, ["submit", "--help"], env={"COLUMNS": "80"})
    assert "Usage: autotx submit [OPTIONS] PATH" in result.stdout
    assert "│ *    PATH " in result.stdout


def test_version():
    from autotx_lib import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"autotx_lib {__version__}\n"


def test_brackets_in_help_are_text_not_markup():
    result = runner.invoke(app, ["config", "explain", "--help"], env={"COLUMNS": "80"})
    assert "[section] header" in result.stdout and "[[space_monitoring]]" in result.stdout
