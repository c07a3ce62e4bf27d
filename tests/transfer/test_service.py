"""Running as a service: SIGTERM mid-transfer, a clean or unclean end, the systemd unit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autotx_lib import journal as J
from autotx_lib.cli import app
from autotx_lib.journal import Journal
from autotx_lib.transfer.service import systemd_unit

from ..conftest import wait_for
from .conftest import make_dataset, tree


def write_config(facility, path: Path, extra: str = "") -> Path:
    path.write_text(f'incoming = "{facility.incoming}"\nmanaged = "{facility.managed}"\n'
                    f'destination = "{facility.destination}"\npoll_seconds = 0.5\n'
                    f'[readiness]\nquiet_seconds = 0\n[gate]\nmax_cpu_percent = 100\n{extra}')
    return path


def wait_for_copying(facility, process, seconds: float = 60) -> None:
    """Wait until the agent process has verified two files (the journal says so)."""
    def copying() -> bool:
        if process.poll() is not None:
            pytest.fail(f"the agent exited ({process.returncode}) before copying two files")
        if not (facility.managed / "autotx.sqlite").exists():
            return False
        journal = Journal(facility.journal_url)
        rows = journal.datasets_in([J.COPYING])
        journal.close()
        return bool(rows) and rows[0].copied_files >= 2

    wait_for(copying, seconds, "the agent to verify two files", interval=0.05)


def test_sigterm_mid_transfer_checkpoints_and_ends_cleanly(facility, tmp_path):
    files = {f"f{i:02d}.raw": os.urandom(1_500_000) for i in range(12)}
    make_dataset(facility.incoming, "alice", "exp", files)
    config = write_config(facility, tmp_path / "autotx.toml",
                          "bandwidth_mb_s = 6\n[copy]\nworkers = 2\n")
    command = [sys.executable, "-m", "autotx_lib.cli", "run", "-c", str(config)]
    agent = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_copying(facility, agent)
    agent.send_signal(signal.SIGTERM)
    _, stderr = agent.communicate(timeout=30)
    assert agent.returncode == 1, stderr  # stopped before everything was delivered

    journal = Journal(facility.journal_url)
    session = journal.last_session()
    assert session.clean and session.ended_at is not None
    row = journal.datasets_in([J.COPYING])[0]
    verified = {f.relpath for f in journal.files_of(row.id) if f.verified}
    assert 2 <= len(verified) < len(files)
    mtimes = {p: (Path(row.tmp_path) / p).stat().st_mtime_ns for p in verified}
    assert not (facility.destination / "alice" / "exp").exists()

    rerun = subprocess.run([*command, "--once"], capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    delivered = facility.destination / "alice" / "exp"
    assert tree(delivered) == files
    assert {p: (delivered / p).stat().st_mtime_ns for p in verified} == mtimes
    assert not any(e.kind == "unclean-shutdown" for e in journal.recent_events(100))


def test_kill_9_is_reported_as_an_unclean_shutdown_at_the_next_start(facility, tmp_path):
    make_dataset(facility.incoming, "alice", "exp", {f"f{i}": os.urandom(1_000_000)
                                                      for i in range(10)})
    config = write_config(facility, tmp_path / "autotx.toml", "bandwidth_mb_s = 4\n")
    command = [sys.executable, "-m", "autotx_lib.cli", "run", "-c", str(config)]
    agent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_copying(facility, agent)
    agent.kill()
    agent.wait()
    rerun = subprocess.run([*command, "--once"], capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0
    assert "did not stop cleanly" in rerun.stderr
    events = Journal(facility.journal_url).recent_events(100)
    assert sum(e.kind == "unclean-shutdown" for e in events) == 1


def test_systemd_unit_runs_the_agent_with_the_config(tmp_path):
    config = tmp_path / "autotx.toml"
    unit = systemd_unit(config, executable="/opt/autotx/bin/autotx", run_as="autotx")
    assert f"ExecStart=/opt/autotx/bin/autotx run -c {config}" in unit
    assert "User=autotx" in unit and "WantedBy=multi-user.target" in unit
    assert "KillSignal=SIGTERM" in unit
    user_unit = systemd_unit(config, user_level=True, run_as="ignored")
    assert "WantedBy=default.target" in user_unit and "User=" not in user_unit


def test_service_install_print_checks_the_config_first(facility, tmp_path):
    runner = CliRunner()
    config = write_config(facility, tmp_path / "autotx.toml")
    result = runner.invoke(app, ["service", "install", "-c", str(config), "--print", "--user"])
    assert result.exit_code == 0, result.output
    assert "[Service]" in result.output and "systemctl --user daemon-reload" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text("incoming = 1\n")
    result = runner.invoke(app, ["service", "install", "-c", str(bad), "--print"])
    assert result.exit_code == 2 and "[Service]" not in result.output
