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
    assert set(ignored) == {"EnforceInheritedACLs", "InterPacketGap", "DestinationDirectory"}
    # the UNC destination is written through SMB (no mount); credentials are the admin's to add
    assert data["destinations"] == [{"name": "storage", "url": "smb://fileserver/share"}]
    assert "password_env" in ignored["DestinationDirectory"]
    config = load_config(tmp_path)
    assert config.gate.max_cpu_percent == 60.0
    assert config.destination is None and config.primary.url == "smb://fileserver/share"


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
    assert "note on AutoTx key DestinationDirectory: became [[destinations]] url = " \
        "\"smb://fileserver/share\"" in result.output
    assert result.exit_code == 2  # D:/... and the UNC share do not exist on this machine
    assert "destination" in result.output


def test_bad_config_never_starts_an_agent(tmp_path):
    bad = write(tmp_path / "bad.toml", 'incoming = "in"\nmanaged = "in/m"\ndestination = "nowhere"\n')
    result = runner.invoke(app, ["run", "--once", "-c", str(bad)])
    assert result.exit_code == 2 and "overlap" in result.output
    assert not (tmp_path / "in" / "m").exists()


def test_an_unmounted_destination_is_reported_by_check_but_does_not_stop_run(tmp_path):
    """A share mounted after boot: `config check` says so; `run` starts and the data waits."""
    file = write(tmp_path / "late.toml", 'incoming = "in"\nmanaged = "m"\ndestination = "nowhere"\n')
    check = runner.invoke(app, ["config", "check", str(file)])
    assert check.exit_code == 2 and "not reachable" in check.output
    result = runner.invoke(app, ["run", "--once", "-c", str(file)])
    assert result.exit_code == 0, result.output  # nothing to do, nothing failed
    assert "not reachable" in result.output and "datasets wait for it" in result.output


def test_config_check_reports_an_unreachable_smtp_host(tmp_path):
    (tmp_path / "storage").mkdir()
    file = write(tmp_path / "mail.toml", 'incoming = "in"\nmanaged = "m"\n'
                 'destination = "storage"\n[email]\nsmtp_host = "127.0.0.1"\nsmtp_port = 1\n')
    result = runner.invoke(app, ["config", "check", str(file)])
    assert result.exit_code == 2
    assert "email.smtp_host" in result.output and "transfers go on" in result.output


# --- symbolic links, secrets, addresses ------------------------------------------------------


def test_a_destination_that_is_a_symlink_into_incoming_is_refused(tmp_path):
    (tmp_path / "in" / "alice").mkdir(parents=True)
    (tmp_path / "storage").symlink_to(tmp_path / "in" / "alice")
    (tmp_path / "mnt").mkdir()
    (tmp_path / "mnt" / "managed").symlink_to(tmp_path / "storage")  # a link to a link
    file = write(tmp_path / "a.toml", 'incoming = "in"\nmanaged = "m"\ndestination = "storage"\n')
    problems = {p.key: p.message for p in check_config(load_config(file))}
    assert "overlap" in problems["incoming/destination"]
    assert f"-> {tmp_path / 'in' / 'alice'}" in problems["incoming/destination"]
    config = load_config(file)
    config.managed = tmp_path / "mnt" / "managed" / "sub"
    keys = {p.key for p in check_config(config)}
    assert {"incoming/managed", "managed/destination"} <= keys
    result = runner.invoke(app, ["config", "check", str(file)])
    assert result.exit_code == 2 and "overlap" in result.output


def test_config_check_never_prints_the_journal_password(tmp_path):
    (tmp_path / "storage").mkdir()
    file = write(tmp_path / "pg.toml", 'incoming = "in"\nmanaged = "m"\ndestination = "storage"\n'
                 'journal = "postgresql+psycopg://autotx:s3cr3t-pw@db.example.org/autotx"\n')
    result = runner.invoke(app, ["config", "check", str(file)])
    assert result.exit_code == 0, result.output
    assert "s3cr3t-pw" not in result.output
    assert "journal=postgresql+psycopg://autotx:***@db.example.org/autotx" in result.output

    assert "s3cr3t-pw" not in repr(load_config(file))
    unreachable = write(tmp_path / "down.toml", file.read_text().replace(
        "db.example.org", "127.0.0.1:1"))  # nothing listens on port 1
    result = runner.invoke(app, ["run", "--once", "-c", str(unreachable)])
    assert result.exit_code == 2 and "cannot open the journal" in result.output
    assert "autotx:***@127.0.0.1:1" in result.output and "s3cr3t-pw" not in result.output

    bad = write(tmp_path / "bad.toml", 'incoming = "in"\nmanaged = "m"\ndestination = "storage"\n'
                'journal = "postgresql://autotx:s3cr3t-pw@db.example.org:fivefour/autotx"\n')
    result = runner.invoke(app, ["config", "check", str(bad)])
    assert result.exit_code == 2 and "journal: " in result.output
    assert "not a database URL" in result.output and "s3cr3t-pw" not in result.output


@pytest.mark.parametrize("section", ["email", "omero"])
def test_a_password_file_others_can_read_is_warned_about_not_refused(tmp_path, section):
    (tmp_path / "storage").mkdir()
    secret = tmp_path / "smtp-password"
    secret.write_text("s3cr3t-pw\n")
    secret.chmod(0o644)
    file = write(tmp_path / "a.toml", 'incoming = "in"\nmanaged = "m"\ndestination = "storage"\n'
                 f'[{section}]\npassword_file = "{secret}"\n')
    result = runner.invoke(app, ["config", "check", str(file)])
    assert result.exit_code == 0, result.output  # a warning, not a refusal
    assert f"warning: {section}.password_file" in result.output
    assert f"chmod 600 {secret}" in result.output and "0644" in result.output
    assert "s3cr3t-pw" not in result.output

    secret.chmod(0o600)
    result = runner.invoke(app, ["config", "check", str(file)])
    assert result.exit_code == 0 and "warning" not in result.output


@pytest.mark.parametrize(("setting", "key"), [
    ('admin = "admin@example.org, evil@attacker.test"', "email.admin"),
    ('sender = "autotx@pc\\u2028Bcc: evil@attacker.test"', "email.sender"),
    ('user_address_pattern = "{user}@example.org,evil@attacker.test"',
     "email.user_address_pattern"),
    ('user_address_pattern = "{login}@example.org"', "email.user_address_pattern"),
    ('user_addresses = {alice = "alice@example.org;bob@example.org"}', "email.user_addresses"),
])
def test_an_address_setting_that_is_not_one_address_is_a_config_problem(tmp_path, setting, key):
    (tmp_path / "storage").mkdir()
    file = write(tmp_path / "a.toml", 'incoming = "in"\nmanaged = "m"\ndestination = "storage"\n'
                 f'[email]\n{setting}\n')
    with pytest.raises(ConfigError) as caught:
        load_config(file)
    assert [p.key for p in caught.value.problems] == [key]


def test_address_settings_that_are_one_address_are_accepted():
    config = Config(incoming="/in", managed="/m", destination="/d", email={
        "admin": "Facility Admin <admin@example.org>", "sender": "autotx@lsm880.example.org",
        "user_address_pattern": "{user}@example.org", "admin_debug": "",
        "user_addresses": {"jörg": "Jörg Müller <j.mueller@example.org>"}})
    assert config.email.user_addresses["jörg"].endswith("<j.mueller@example.org>")


def test_a_misspelt_key_gets_a_did_you_mean_in_its_own_section(tmp_path):
    file = tmp_path / "typo.toml"
    file.write_text(f'incoming = "{tmp_path / "in"}"\nmanaged = "{tmp_path / "m"}"\n'
                    f'destination = "{tmp_path}"\ndestinaton_alias = "x"\nzzz = 1\n'
                    '[readiness]\nquiet_secnds = 3\n[[space_monitoring]]\npath = "/"\n'
                    'min_free_mb = 1\nmin_fre_mb = 2\n')
    with pytest.raises(ConfigError) as caught:
        load_config(file)
    fixes = {p.key: (p.message, p.fix) for p in caught.value.problems}
    assert fixes["readiness.quiet_secnds"] == ("unknown key",
                                               "did you mean 'quiet_seconds'? Otherwise remove it")
    assert fixes["destinaton_alias"][1].startswith("did you mean 'destination_alias'?")
    assert fixes["space_monitoring.0.min_fre_mb"][1].startswith("did you mean 'min_free_mb'?")
    assert "the keys here are: agent_id, copy, " in fixes["zzz"][1]  # nothing close: valid keys


def test_config_keys_list_every_section_with_defaults():
    from autotx_lib.config import config_keys

    keys = {k.key: k for k in config_keys()}
    assert keys["incoming"].default == "(required)"
    assert keys["copy.workers"].default == "4" and keys["copy.workers"].type == "int"
    assert keys["space_monitoring[].min_free_mb"].default == "(required)"
    assert "xxh3_128" in keys["verify.algorithm"].type
