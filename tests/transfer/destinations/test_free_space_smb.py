"""The agent's housekeeping measures the free space of smb:// destinations too (real Samba on
loopback, real SMTP server), through its own connection."""

from __future__ import annotations

import shutil
from pathlib import Path

from autotx_lib.config import Config
from autotx_lib.journal import Journal
from autotx_lib.transfer import notify
from autotx_lib.transfer.agent import Agent
from autotx_lib.transfer.destinations.free_space import last_free_space

from ..test_notify import Server, body, with_email
from .conftest import share_folder

PASSWORD_ENV = "AUTOTX_TEST_SMB_PASSWORD"
WRONG_ENV = "AUTOTX_TEST_SMB_WRONG_PASSWORD"



def test_a_share_below_its_floor_is_reported_and_one_that_cannot_be_asked_is_skipped(
        samba, smb_folder, tmp_path: Path, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    monkeypatch.setenv(WRONG_ENV, "not-the-password")
    free_mb = shutil.disk_usage(samba.data).free // 1_000_000
    floor = int(free_mb * 2 + 1000)  # above what the disk under the share has: "low"
    spare, locked = (share_folder(samba, f"{smb_folder}-{n}") for n in ("spare", "locked"))
    config = Config(
        incoming=tmp_path / "incoming", managed=tmp_path / "managed", host_alias="test-pc",
        destinations=[
            {"name": "storage", "url": samba.url(path=smb_folder), "password_env": PASSWORD_ENV,
             "min_free_mb": floor},
            {"name": "spare", "url": samba.url(path=spare), "password_env": PASSWORD_ENV,
             "required": False, "min_free_mb": 1},
            {"name": "locked", "url": samba.url(path=locked), "password_env": WRONG_ENV,
             "required": False, "min_free_mb": floor}],
        readiness={"quiet_seconds": 0},
        gate={"max_cpu_percent": 100, "min_available_memory_mb": 0})
    server = Server()
    try:
        with_email(config, server.port)
        Agent(config).run(once=True)  # nothing to copy: the housekeeping runs
        journal = Journal(config.journal_url)
        low = [e for e in journal.recent_events(50) if e.kind == "low-space"]
        assert len(low) == 1, [e.message for e in low]  # the spare is above its floor
        assert low[0].message.startswith(f"{config.primary.url}: ")
        assert f"below {floor} MB" in low[0].message
        [mail] = [m for m in server.inbox.to("admin@example.org")
                  if m["X-Autotx-Kind"] == notify.LOW_SPACE]
        assert config.primary.url in body(mail) and f"{floor} MB" in body(mail)
        # the share refusing the logon is skipped, not an error
        assert not [e for e in journal.recent_events(50)
                    if e.level == "error" or "locked" in e.message]
        measured = last_free_space(journal)
        assert set(measured) == {"storage", "spare"}  # the agent recorded what it measured
        assert measured["storage"].free_bytes / 1e6 < floor
    finally:
        server.stop()
