"""The heartbeat's free space of an smb:// destination: the agent's last measurement (real
hub on loopback, real Samba on loopback)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from autotx_lib.config import Config
from autotx_lib.hub.reporter import FREE_SPACE_MAX_AGE, Reporter
from autotx_lib.journal import Journal
from autotx_lib.transfer.agent import Agent
from autotx_lib.transfer.destinations.free_space import last_free_space, record_free_space

from ..transfer.destinations.conftest import samba, smb_folder  # noqa: F401 - fixtures
from .test_reporter import link

PASSWORD_ENV = "AUTOTX_TEST_SMB_PASSWORD"


def share_and_folder(tmp_path: Path, url: str) -> Config:
    """An smb:// primary and a folder backup."""
    (tmp_path / "backup").mkdir()
    return Config(incoming=tmp_path / "incoming", managed=tmp_path / "managed",
                  destinations=[{"name": "storage", "url": url, "password_env": PASSWORD_ENV},
                                {"name": "backup", "url": str(tmp_path / "backup"),
                                 "required": False}],
                  readiness={"quiet_seconds": 0}, host_alias="test-pc",
                  gate={"max_cpu_percent": 100, "min_available_memory_mb": 0})


def test_the_heartbeat_carries_the_free_space_the_agent_measured_on_the_share(
        samba, smb_folder, hub, tmp_path, monkeypatch):  # noqa: F811 - fixtures
    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    config = share_and_folder(tmp_path, samba.url(path=smb_folder))
    journal = Journal(config.journal_url)
    reporter = Reporter(link(config.model_copy(deep=True), hub.url, hub.agent, tmp_path),
                        journal)
    shown = hub.client(hub.viewer)
    try:
        reporter.heartbeat()
        free = shown.agent("test-pc")["free_space"]
        assert free["storage"] is None and free["backup"] > 0  # the share: not measured yet

        Agent(config, journal=journal).run(once=True)  # its housekeeping measures the share
        measured = last_free_space(journal)["storage"]
        reporter.heartbeat()
        assert shown.agent("test-pc")["free_space"]["storage"] == measured.free_bytes > 0

        stale = dt.datetime.now(dt.UTC) - FREE_SPACE_MAX_AGE - dt.timedelta(minutes=1)
        record_free_space(journal, "storage", 123, now=stale)  # the agent stopped measuring
        reporter.heartbeat()
        assert shown.agent("test-pc")["free_space"]["storage"] is None
    finally:
        reporter.close()
        shown.close()
