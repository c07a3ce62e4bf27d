"""Every command ends bad input with exit status 2 and one line on stderr, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from autotx_lib.cli import app

from .conftest import write_config

runner = CliRunner()

MISSING = "missing.toml"  # relative to the test's folder, which has no such file

# One typical mistake per command: {config} is a valid configuration, {dir} a folder with a file.
CASES = {
    "demo": ["demo", "--dir", "{dir}"],
    "run": ["run", "-c", MISSING],
    "status": ["status", "-c", MISSING],
    "submit": ["submit", "-c", "{config}", "-u", "alice", "{dir}/no-such-folder"],
    "suspend": ["suspend", "-c", "{config}", "--reason", ""],
    "resume": ["resume", "-c", MISSING],
    "requeue": ["requeue", "-c", "{config}", "999"],
    "bandwidth": ["bandwidth", "-c", "{config}", "20Q"],
    "verify": ["verify", "-c", "{config}", "--since", "yesterday"],
    "qc": ["qc", "{dir}/no-such-plate", "-o", "{dir}/report.html"],
    "info": ["info", "{dir}/no-such-file.tif"],
    "(info with an unknown backend)": ["info", "--backend", "nonsense", "{config}"],
    "dashboard": ["dashboard", "no-such-page"],
    "config check": ["config", "check", MISSING],
    "config explain": ["config", "explain", "no-such-section"],
    "service install": ["service", "install", "-c", MISSING, "--print"],
    "destination init": ["destination", "init", "-c", MISSING],
    "destination show": ["destination", "show", "-c", MISSING],
    "destination backfill": ["destination", "backfill", "-c", MISSING, "backup"],
    "grace": ["grace"],
    "grace purge": ["grace", "purge", "-c", "{config}", "--older-than", "-1"],
    "journal upgrade": ["journal", "upgrade", "-c", "{config}"],  # no journal yet
    "jobs": ["jobs", "-c", MISSING],
    "jobs run": ["jobs", "run", "-c", "{config}", "--once"],
    "jobs cancel": ["jobs", "cancel", "abc", "-c", "{config}"],
    "jobs retry": ["jobs", "retry", "999", "-c", "{config}"],
    "session start": ["session", "start", "-c", MISSING, "-u", "alice"],
    "session end": ["session", "end", "-c", "{config}"],
    "session status": ["session", "status", "-c", MISSING],
    "usage": ["usage", "-c", "{config}", "--month", "2026-13"],
    "hub serve": ["hub", "serve", "-c", MISSING],
    "hub init": ["hub", "init", "-c", MISSING],
    "hub token add": ["hub", "token", "add", "-c", MISSING, "pc1"],
    "hub token list": ["hub", "token", "list", "-c", MISSING],
    "hub token revoke": ["hub", "token", "revoke", "-c", MISSING, "pc1"],
    "pipelines run": ["pipelines", "run", "previews", "{dir}/no-such-folder", "-c", "{config}"],
    "pipelines log": ["pipelines", "log", "-c", "{config}", "--status", "done"],
    "pipelines show": ["pipelines", "show", "999", "-c", "{config}"],
    "pipelines stats": ["pipelines", "stats", "-c", "{config}", "--by", "colour"],
    "pipelines cancel": ["pipelines", "cancel", "999", "-c", "{config}"],
    "pipelines rerun": ["pipelines", "rerun", "999", "-c", "{config}"],
    "pipelines serve": ["pipelines", "serve", "-c", MISSING],
    "pipelines list": ["pipelines", "list", "-c", MISSING],
    "pipelines rules": ["pipelines", "rules", "{dir}/no-such-folder", "-c", "{config}"],
    "history": ["history", "nobody/nothing", "-c", "{config}"],
    "(an unknown option)": ["status", "-c", "{config}", "--no-such-option"],
    "(an unknown command)": ["no-such-command"],
}


def _commands(command, path=()):
    subs = getattr(command, "commands", None)
    if subs is None or command.invoke_without_command:
        yield " ".join(path)
    for name, sub in (subs or {}).items():
        yield from _commands(sub, (*path, name))


def test_every_command_has_a_bad_input_case():
    commands = set(_commands(typer.main.get_command(app))) - {""}
    assert commands <= set(CASES), f"add a case for: {sorted(commands - set(CASES))}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_and_exit_status_2(name, facility, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_config(facility, tmp_path / "autotx.toml")
    folder = tmp_path / "full"
    folder.mkdir()
    (folder / "something").write_text("x")
    args = [a.format(config=config, dir=folder) for a in CASES[name]]

    result = runner.invoke(app, args, env={"COLUMNS": "80"})

    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr


def test_a_bug_ends_in_one_line_too(tmp_path):
    """The last resort: an unexpected exception is one line naming it, exit status 1."""
    script = ("import sys, typer\n"
              "from autotx_lib.cli import app\n"
              "@app.command('boom')\n"
              "def boom() -> None:\n"
              "    '''Fails.\n\n    Exit status: 1.\n    '''\n"
              "    raise RuntimeError('something unforeseen\\nsecond line')\n"
              "app()\n")
    done = subprocess.run([sys.executable, "-c", script, "boom"], capture_output=True,
                          text=True, env={"PATH": "", "PYTHONPATH": str(Path(__file__).parents[2])},
                          cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: RuntimeError: something unforeseen (this is a bug in autotx; run again with "
        "AUTOTX_TRACEBACK=1 to see where, and please report it)"]


def test_a_damaged_journal_in_status_is_one_line(facility, tmp_path):
    config = write_config(facility, tmp_path / "autotx.toml")
    facility.managed.mkdir(parents=True, exist_ok=True)
    (facility.managed / "autotx.sqlite").write_bytes(b"this is not a database" * 100)

    result = runner.invoke(app, ["status", "-c", str(config)])

    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "damaged" in result.stderr
