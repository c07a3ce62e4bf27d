"""Agents with several [[destinations]]: each destination's copy reaches the hub, in the
dataset's detail and in the statistics per destination."""

from __future__ import annotations

import os
from pathlib import Path

from autotx_lib.config import Config
from autotx_lib.journal import Journal

from ..transfer.conftest import make_dataset
from .conftest import wait_for
from .test_reporter import RunningAgent, link


def storage_and_backup(tmp_path: Path) -> Config:
    (tmp_path / "storage" / "alice").mkdir(parents=True)
    return Config(incoming=tmp_path / "incoming", managed=tmp_path / "managed",
                  destinations=[{"name": "storage", "url": str(tmp_path / "storage")},
                                {"name": "backup", "url": str(tmp_path / "backup"),
                                 "required": False}],
                  readiness={"quiet_seconds": 0}, host_alias="test-pc",
                  gate={"max_cpu_percent": 100, "min_available_memory_mb": 0})


def copies_at_hub(hub) -> dict[str, str]:
    rows = hub.store.datasets(agent_id="test-pc")[0]
    if not rows:
        return {}
    [row] = rows
    detail = hub.client(hub.viewer).dataset("test-pc", row.dataset_id)
    return {d["destination"]: d["state"] for d in detail["deliveries"]}


def test_each_destination_copy_reaches_the_hub_and_its_statistics(hub, tmp_path):
    config = link(storage_and_backup(tmp_path), hub.url, hub.agent, tmp_path)
    make_dataset(config.incoming, "alice", "exp", {"a.bin": os.urandom(5000), "b/c": b"c"})
    running = RunningAgent(config)  # the backup folder is missing: it waits, optional
    try:
        wait_for(lambda: copies_at_hub(hub) == {"storage": "delivered", "backup": "pending"},
                 what="the primary delivered and the backup pending at the hub")
        [row] = hub.store.datasets(agent_id="test-pc")[0]
        backup = next(d for d in row.deliveries if d["destination"] == "backup")
        assert backup["error"] and not backup["required"]  # why it waits, seen at the hub
        free = hub.client(hub.viewer).agent("test-pc")["free_space"]
        assert free["storage"] > 0 and free["backup"] is None  # per destination; one missing
        (tmp_path / "backup").mkdir()  # the backup comes back; time passes
        journal = Journal(config.journal_url)
        [delivery] = [d for d in journal.deliveries_of(row.dataset_id)
                      if d.destination == "backup"]
        journal.update_delivery(delivery.id, next_attempt_at=None)
        wait_for(lambda: copies_at_hub(hub) == {"storage": "delivered", "backup": "delivered"},
                 what="the backup's catch-up at the hub (a delivery-only change)")
    finally:
        running.stop()
    table = hub.client(hub.viewer).stats("destination").set_index("destination")
    assert set(table.index) == {"storage", "backup"}
    assert table.loc["storage", "bytes"] == table.loc["backup", "bytes"] == 5001
    assert table.loc["backup", "datasets"] == 1 and table.loc["backup", "failures"] == 0
