"""The agent's log: a rotating file at the configured level, without secrets."""

from __future__ import annotations

import logging

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
