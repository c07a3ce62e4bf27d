"""`autotx dashboard`: refuses bad input before starting anything; serves on loopback only.

The command serving real pages is exercised by tests/pages (HTTP and a browser against Voila).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from autotx_lib.cli.main import app
from autotx_lib.pages import PAGES
from autotx_lib.pages.serve import voila_command

runner = CliRunner()


@pytest.mark.parametrize(("args", "message"), [
    (["nope"], "unknown dashboard 'nope'; choose one of transfer-monitor, plate-qc"),
    (["transfer-monitor"], "needs the agent's configuration file: add -c CONFIG"),
    (["transfer-monitor", "-c", "/no/such/autotx.toml"], "does not exist"),
    (["plate-qc"], "needs a plate folder: add --path FOLDER"),
    (["stack_browser", "--path", "/no/such/folder"], "does not exist"),
    (["stack-browser", "--path", ".", "--port", "70000"], "is not a TCP port"),
    (["stack-browser", "--path", ".", "--max-pages", "0"], "give at least 1"),
    (["stack-browser", "--path", ".", "--idle-minutes", "0"], "give a positive number"),
])
def test_bad_input_exits_2_with_a_reason(args, message):
    result = runner.invoke(app, ["dashboard", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_every_dashboard_has_its_page():
    for name, page in PAGES.items():
        assert page.notebook.is_file(), name


def test_voila_serves_on_loopback_without_opening_a_browser():
    command = voila_command(Path("transfer_monitor.ipynb"), port=9001)
    assert command[1:3] == ["-m", "voila"]
    assert "--no-browser" in command and "--port=9001" in command
    assert "--Voila.ip=127.0.0.1" in command
