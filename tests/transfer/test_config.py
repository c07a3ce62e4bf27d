"""Configuration: TOML, AutoTx XML layering, every problem reported at once, `config check`."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autotx_lib.autotx_xml import read_autotx_xml
from autotx_lib.cli import app
from autotx_lib.config import Config, check_config, load_config
from autotx_lib.errors import ConfigError

runner = CliRunner()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_minimal_toml_gets_autotx_defaults(tmp_path):
    file = write(tmp_path / "a.toml", 'incoming = "in"\nmanaged = "m"\ndestination = "d"\n')
    config = load_config(file)
    assert config.incoming == tmp_path / "in"  # relative to the file
    assert config.verify.algorithm == "xxh3_128" and config.verify.mode == "storage"
    assert config.create_user_dirs is False and config.grace_period_days == 30
    assert config.tmp_transfer_dir == ".autotx-tmp"
    assert config.journal_url == f"sqlite:///{tmp_path / 'm' / 'autotx.sqlite'}"


def test_every_problem_is_reported_at_once(tmp_path):
    file = write(tmp_path / "bad.toml", 'incoming = "in"\ndestination = "d"\n'
                 'tmp_transfer_dir = "../escape"\ncolour = "blue"\n'
                 '[verify]\nalgorithm = "crc32"\n[readiness]\nquiet_seconds = -1\n')
    with pytest.raises(ConfigError) as caught:
        load_config(file)
    keys = {p.key for p in caught.value.problems}
    assert {"managed", "tmp_transfer_dir", "colour", "verify.algorithm",
            "readiness.quiet_seconds"} <= keys
    text = str(caught.value)
    assert "add this key" in text and "check its spelling" in text


def test_toml_syntax_error_names_the_fix(tmp_path):
    file = write(tmp_path / "broken.toml", 'incoming = "in\n')
    with pytest.raises(ConfigError, match="fix the TOML syntax"):
        load_config(file)


def test_check_config_finds_filesystem_problems(tmp_path):
    config = Config(incoming=tmp_path / "in", managed=tmp_path / "in" / "managed",
                    destination=tmp_path / "missing")
    problems = {p.key: p.message for p in check_config(config)}
    assert "overlap" in problems["incoming/managed"]
    assert "not reachable" in problems["destination"]


COMMON = """<ServiceConfig>
  <SourceDrive>D:\\</SourceDrive>
  <IncomingDirectory>AUTOTRANSFER\\INCOMING</IncomingDirectory>
  <ManagedDirectory>AUTOTRANSFER\\MANAGED</ManagedDirectory>
  <DestinationDirectory>\\\\fileserver\\share\\</DestinationDirectory>
  <TmpTransferDir>AUTOTX_TMP</TmpTransferDir>
  <ServiceTimer>1000</ServiceTimer>
  <MaxCpuUsage>25</MaxCpuUsage>
  <MinAvailableMemory>512</MinAvailableMemory>
  <GracePeriod>5</GracePeriod>
  <EnforceInheritedACLs>false</EnforceInheritedACLs>
  <InterPacketGap>0</InterPacketGap>
  <SmtpHost>smtp.example.org</SmtpHost>
  <AdminEmailAdress>admin@example.org</AdminEmailAdress>
  <BlacklistedProcesses><ProcessName>calc</ProcessName></BlacklistedProcesses>
  <SpaceMonitoring>
    <DriveToCheck><DriveName>D:</DriveName><SpaceThreshold>20000</SpaceThreshold></DriveToCheck>
  </SpaceMonitoring>
</ServiceConfig>
"""

HOST = """<ServiceConfig>
  <HostAlias>LSM880</HostAlias>
  <MaxCpuUsage>60</MaxCpuUsage>
  <MarkerFile>transfer.txt</MarkerFile>
  <BlacklistedProcesses><ProcessName>ZEN.exe</ProcessName><ProcessName>Zen</ProcessName></BlacklistedProcesses>
</ServiceConfig>
"""


def test_autotx_xml_host_file_wins_over_common(tmp_path):
    write(tmp_path / "config.common.xml", COMMON)
    write(tmp_path / f"{socket.gethostname()}.xml", HOST)
    data, ignored = read_autotx_xml(tmp_path)
    assert data["host_alias"] == "LSM880"
    assert data["gate"]["max_cpu_percent"] == 60.0  # host value, not the common 25
    assert data["gate"]["min_available_memory_mb"] == 512  # from the common file
    assert data["gate"]["blacklisted_processes"] == ["ZEN.exe", "Zen"]
    assert data["readiness"]["marker_file"] == "transfer.txt"
    assert data["incoming"] == "D:/AUTOTRANSFER/INCOMING"
    assert data["tmp_transfer_dir"] == "AUTOTX_TMP"
    assert data["poll_seconds"] == 1.0 and data["grace_period_days"] == 5
    assert data["email"]["smtp_host"] == "smtp.example.org"
    assert data["space_monitoring"] == [{"path": "D:", "min_free_mb": 20000}]
    assert set(ignored) == {"EnforceInheritedACLs", "InterPacketGap"}
    config = load_config(tmp_path)
    assert config.gate.max_cpu_percent == 60.0


def test_autotx_xml_bad_number_and_bad_xml(tmp_path):
    write(tmp_path / "config.common.xml", COMMON.replace("<GracePeriod>5", "<GracePeriod>five"))
    with pytest.raises(ConfigError, match="GracePeriod"):
        read_autotx_xml(tmp_path / "config.common.xml")
    write(tmp_path / "broken.xml", "<ServiceConfig><HostAlias>x</ServiceConfig>")
    with pytest.raises(ConfigError, match="fix the XML"):
        read_autotx_xml(tmp_path / "broken.xml")


def test_config_check_command_exit_codes(tmp_path):
    (tmp_path / "storage").mkdir()
    good = write(tmp_path / "good.toml", 'incoming = "in"\nmanaged = "m"\ndestination = "storage"\n')
    result = runner.invoke(app, ["config", "check", str(good)])
    assert result.exit_code == 0 and "valid" in result.output

    bad = write(tmp_path / "bad.toml", 'incoming = "in"\nmanaged = "m"\ndestination = "nowhere"\n'
                '[verify]\nalgorithm = "crc"\n')
    result = runner.invoke(app, ["config", "check", str(bad)])
    assert result.exit_code == 2
    assert "verify.algorithm" in result.output and "2 problem(s)" in result.output
    assert "nowhere is not reachable" in result.output

    result = runner.invoke(app, ["config", "check", str(tmp_path / "absent.toml")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_config_check_reports_ignored_autotx_keys(tmp_path):
    write(tmp_path / "config.common.xml", COMMON)
    result = runner.invoke(app, ["config", "check", str(tmp_path / "config.common.xml")])
    assert "ignored AutoTx key EnforceInheritedACLs" in result.output
    assert result.exit_code == 2  # D:/... and the UNC share do not exist on this machine
    assert "destination" in result.output


def test_bad_config_never_starts_an_agent(tmp_path):
    bad = write(tmp_path / "bad.toml", 'incoming = "in"\nmanaged = "m"\ndestination = "nowhere"\n')
    result = runner.invoke(app, ["run", "--once", "-c", str(bad)])
    assert result.exit_code == 2 and "not reachable" in result.output
    assert not (tmp_path / "m").exists()


def test_config_check_reports_an_unreachable_smtp_host(tmp_path):
    (tmp_path / "storage").mkdir()
    file = write(tmp_path / "mail.toml", 'incoming = "in"\nmanaged = "m"\n'
                 'destination = "storage"\n[email]\nsmtp_host = "127.0.0.1"\nsmtp_port = 1\n')
    result = runner.invoke(app, ["config", "check", str(file)])
    assert result.exit_code == 2
    assert "email.smtp_host" in result.output and "transfers go on" in result.output
