"""The agent's log: a rotating file at the configured level, without secrets."""

from __future__ import annotations

import logging
import os
import stat

from autotx_lib.logging_setup import configure_logging
from autotx_lib.transfer.agent import Agent

from .conftest import make_dataset


def test_agent_logs_to_a_rotating_file_at_the_configured_level(facility, tmp_path):
    facility.log_file = tmp_path / "logs" / "autotx.log"
    facility.log_level = "INFO"
    configure_logging(facility, max_bytes=400, backups=2)
    try:
        for i in range(6):
            make_dataset(facility.incoming, "alice", f"run{i}", {"a.txt": b"a"})
            Agent(facility).run(once=True)
        logger = logging.getLogger("autotx")
        assert logger.level == logging.INFO
        logger.debug("a debug line that must not appear")
        for handler in logger.handlers:
            handler.flush()
        files = sorted(p.name for p in facility.log_file.parent.iterdir())
        assert files == ["autotx.log", "autotx.log.1", "autotx.log.2"]  # rotated, capped
        text = "".join(p.read_text() for p in facility.log_file.parent.iterdir())
        assert "run5 is ready; queued" in text and "delivered to" in text
        assert "must not appear" not in text
    finally:
        facility.log_file = None
        configure_logging(facility)  # removes the file handler again
    assert not any(getattr(h, "_autotx", False) for h in logging.getLogger("autotx").handlers)


def test_log_files_are_readable_by_the_agents_user_only(facility, tmp_path):
    facility.log_file = tmp_path / "logs" / "autotx.log"
    facility.log_file.parent.mkdir()
    facility.log_file.write_text("an old line\n")
    facility.log_file.chmod(0o644)  # as an older version left it
    old_umask = os.umask(0o022)
    try:
        configure_logging(facility, max_bytes=300, backups=2)
        logger = logging.getLogger("autotx")
        for i in range(20):
            logger.warning("mail to user%d@example.org failed", i)  # addresses: private
        modes = {p.name: stat.S_IMODE(p.stat().st_mode)
                 for p in facility.log_file.parent.iterdir()}
        assert set(modes) == {"autotx.log", "autotx.log.1", "autotx.log.2"}  # rotated
        assert set(modes.values()) == {0o600}, modes
    finally:
        os.umask(old_umask)
        facility.log_file = None
        configure_logging(facility)


def test_a_password_file_others_can_read_is_in_the_log_from_the_start(facility, tmp_path):
    secret = tmp_path / "smtp-password"
    secret.write_text("s3cr3t-pw\n")
    secret.chmod(0o640)
    facility.email.password_file = secret
    facility.log_file = tmp_path / "autotx.log"
    try:
        configure_logging(facility)
        for handler in logging.getLogger("autotx").handlers:
            handler.flush()
        text = facility.log_file.read_text()
    finally:
        facility.log_file = None
        configure_logging(facility)
    assert "WARNING" in text and f"email.password_file: {secret}" in text
    assert f"chmod 600 {secret}" in text and "s3cr3t-pw" not in text
