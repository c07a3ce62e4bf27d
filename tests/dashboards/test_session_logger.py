"""The SessionLogger widget: one button starts and ends a session; what is already safe."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("ipywidgets", reason="the dashboards need ipywidgets (the viz extra)")

from autotx_lib.config import Config  # noqa: E402
from autotx_lib.dashboards import SessionLogger  # noqa: E402
from autotx_lib.transfer.agent import Agent  # noqa: E402
from autotx_lib.transfer.sessions import current_session  # noqa: E402


@pytest.fixture
def config(tmp_path) -> Config:
    (tmp_path / "storage" / "alice").mkdir(parents=True)
    return Config(incoming=tmp_path / "incoming", managed=tmp_path / "managed",
                  destination=tmp_path / "storage", host_alias="LSM880",
                  readiness={"quiet_seconds": 0},
                  sessions={"live_sync": True, "live_quiet_seconds": 0},
                  gate={"max_cpu_percent": 100, "min_available_memory_mb": 0})


def test_the_button_starts_and_ends_and_the_counts_show_what_is_safe(config):
    logger = SessionLogger(config, start=False)
    assert logger.button.description == "Start session"
    logger.user.value = "mallory"
    logger.button.click()
    assert "unknown user" in logger.message.value and current_session(config) is None

    logger.user.value = "alice"
    logger.project.value = "P-17"
    logger.button.click()
    session = current_session(config)
    assert session.user == "alice" and session.project == "P-17"
    assert logger.button.description == "End session" and logger.user.disabled

    folder = config.incoming / "alice" / "run1"
    folder.mkdir(parents=True)
    (folder / "a.tif").write_bytes(os.urandom(3000))
    Agent(config).run(once=True)  # live sync
    logger.refresh()
    assert "seen: 1 files" in logger.state.value and "already safe: 1 files" in logger.state.value

    logger.button.click()
    assert current_session(config) is None and "ended after" in logger.message.value
    assert logger.button.description == "Start session"
