"""Running as a service: SIGTERM mid-transfer, a clean or unclean end, an unmounted share at
start, the systemd unit and the Windows service files (WinSW, NSSM) with paths with spaces."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest
from typer.testing import CliRunner

from autotx_lib import journal as J
from autotx_lib.cli import app
from autotx_lib.journal import Journal
from autotx_lib.transfer.service import nssm_commands, systemd_unit, winsw_service

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


def test_systemd_unit_quotes_paths_with_spaces_for_systemd(tmp_path):
    program = tmp_path / "my bin" / "autotx"
    program.parent.mkdir()
    shutil.copy("/bin/true", program)
    config = tmp_path / "my configs" / "100% scope.toml"
    unit = systemd_unit(config, executable=str(program))
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    # systemd reads % specifiers ("%%" is "%") and shell-like quotes
    words = shlex.split(exec_start.removeprefix("ExecStart=").replace("%%", "%"))
    assert words == [str(program), "run", "-c", str(config)]
    assert "RestartPreventExitStatus=2" in unit  # only a bad config ends it for good
    assert "finish" not in unit and "abandoned" in unit  # the README's word for SIGTERM
    if shutil.which("systemd-analyze") is None:
        print("systemd-analyze is missing: the unit was not checked by systemd itself")
        return
    path = tmp_path / "autotx.service"
    path.write_text(unit)
    checked = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True,
                             text=True)
    assert checked.returncode == 0, checked.stderr
    assert "not executable" not in checked.stderr


def test_winsw_service_passes_each_argument_whole(facility, tmp_path):
    config = write_config(facility, tmp_path / "autotx config.toml")
    program = r"C:\Program Files\autotx\.venv\Scripts\autotx.exe"
    result = CliRunner().invoke(app, ["service", "install", "-c", str(config), "--print",
                                      "--windows", "--executable", program])
    assert result.exit_code == 0, result.output
    xml = result.stdout
    service = ElementTree.fromstring(xml)
    assert service.findtext("executable") == program
    assert [a.text for a in service.findall("argument")] == ["run", "-c", str(config)]
    assert service.findtext("stoptimeout") == "120 sec"
    assert service.find("onfailure").get("action") == "restart"
    windows = winsw_service(r"C:\ProgramData\autotx\my scope.toml", executable=program)
    arguments = [a.text for a in ElementTree.fromstring(windows).findall("argument")]
    assert arguments == ["run", "-c", r"C:\ProgramData\autotx\my scope.toml"]


def test_nssm_commands_quote_paths_with_spaces():
    commands = nssm_commands(r"C:\Program Data\autotx.toml",
                             executable=r"C:\Program Files\autotx\autotx.exe")
    words = shlex.split(commands[0], posix=False)
    assert words == ["nssm", "install", "autotx", r'"C:\Program Files\autotx\autotx.exe"',
                     "run", "-c", r'"C:\Program Data\autotx.toml"']
    assert "nssm set autotx AppExit 2 Exit" in commands


def test_run_starts_and_waits_when_the_share_is_not_mounted(facility, tmp_path):
    """A share mounted after boot: `autotx run` warns, waits and retries; no exit 2 loop."""
    make_dataset(facility.incoming, "alice", "exp", {"a.raw": b"x" * 1000})
    storage = tmp_path / "not-mounted-yet"
    config = tmp_path / "autotx.toml"
    config.write_text(write_config(facility, config).read_text().replace(
        str(facility.destination), str(storage)))
    command = [sys.executable, "-m", "autotx_lib.cli", "run", "-c", str(config)]
    once = subprocess.run([*command, "--once"], capture_output=True, text=True, timeout=120)
    assert once.returncode == 1, once.stderr  # to retry, not a bad configuration (2)
    assert "not reachable" in once.stderr and "datasets wait for it" in once.stderr

    agent = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        journal = Journal(facility.journal_url)

        def looping() -> bool:  # the agent's own session, past its first heartbeat
            assert agent.poll() is None, agent.communicate()[1]
            session = journal.last_session()
            return session is not None and session.pid == agent.pid and \
                session.state != "starting"

        wait_for(looping, 60, "the agent to get to its loop")
        row = journal.datasets_in([J.QUEUED])[0]
        assert "missing or not mounted" in row.error
        assert agent.poll() is None  # still running, waiting for the share
    finally:
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=60)
    assert agent.returncode in (0, 1), stderr
    assert journal.last_session().clean


def test_ctrl_c_as_windows_service_wrappers_send_it_ends_the_session_cleanly(facility, tmp_path):
    """WinSW and NSSM stop a service with Ctrl+C (SIGINT here): a clean end, as SIGTERM."""
    make_dataset(facility.incoming, "alice", "exp", {f"f{i:02d}.raw": os.urandom(1_500_000)
                                                      for i in range(12)})
    config = write_config(facility, tmp_path / "autotx.toml",
                          "bandwidth_mb_s = 6\n[copy]\nworkers = 2\n")
    agent = subprocess.Popen([sys.executable, "-m", "autotx_lib.cli", "run", "-c", str(config)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_copying(facility, agent)
    agent.send_signal(signal.SIGINT)
    _, stderr = agent.communicate(timeout=30)
    assert agent.returncode == 130, stderr  # interrupted
    journal = Journal(facility.journal_url)
    session = journal.last_session()
    assert session.clean and session.ended_at is not None
    [row] = journal.all_datasets()  # the copy stopped at a checkpoint, as with SIGTERM
    assert row.state != J.DONE and 2 <= row.copied_files < 12, (row.state, stderr)
