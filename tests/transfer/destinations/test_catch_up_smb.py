"""An optional destination catching up from an smb:// primary's delivered copy once the
original left the grace area (real Samba on loopback)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from autotx_lib import journal as J
from autotx_lib.config import Config
from autotx_lib.journal import Journal, utcnow
from autotx_lib.transfer.agent import Agent
from autotx_lib.transfer.copy import verify_manifest
from autotx_lib.transfer.grace import purge

from ..conftest import make_dataset, tree
from .conftest import share_folder

FILES = {f"sub{i % 2}/img{i}.tif": os.urandom(120_000 + i) for i in range(5)}
PASSWORD_ENV = "AUTOTX_TEST_SMB_PASSWORD"



def share_primary(tmp_path: Path, samba, smb_folder: str, backup: str) -> tuple[Config, Path]:
    """An smb:// primary with alice's folder, and an optional backup (a folder, or another
    folder of the share) that is not there yet; returns the config and where the backup's
    folder appears once it is back."""
    share_folder(samba, f"{smb_folder}/alice")
    if backup == "folder":
        place, url = tmp_path / "backup", str(tmp_path / "backup")
    else:
        name = f"{smb_folder}-backup"
        place, url = samba.data / name, samba.url(path=name)
    entry = {"name": "backup", "url": url, "required": False}
    if backup == "share":
        entry["password_env"] = PASSWORD_ENV
    config = Config(incoming=tmp_path / "incoming", managed=tmp_path / "managed",
                    destinations=[{"name": "storage", "url": samba.url(path=smb_folder),
                                   "password_env": PASSWORD_ENV}, entry],
                    readiness={"quiet_seconds": 0}, host_alias="test-pc",
                    gate={"max_cpu_percent": 100, "min_available_memory_mb": 0})
    return config, place


def deliver_then_purge(config: Config) -> tuple[int, Journal]:
    """Deliver to the primary while the backup is down, then purge the grace original."""
    make_dataset(config.incoming, "alice", "exp", FILES)
    summary = Agent(config).run(once=True)
    journal = Journal(config.journal_url)
    assert len(summary.delivered) == 1, journal.recent_events(5)
    dataset = summary.delivered[0]
    assert backup_delivery(journal, dataset).state == "pending"
    original = Path(journal.dataset(dataset).final_path)
    result = purge(config, 0, dry_run=False)
    assert [e.dataset_id for e in result.removed] == [dataset] and not original.exists()
    return dataset, journal


def backup_delivery(journal: Journal, dataset: int):
    return next(d for d in journal.deliveries_of(dataset) if d.destination == "backup")


def bring_back(place: Path, journal: Journal, dataset: int) -> None:
    """The backup is there again, and its back-off is over (time passes, no sleeping)."""
    place.mkdir()
    place.chmod(0o777)
    journal.update_delivery(backup_delivery(journal, dataset).id, next_attempt_at=None)


@pytest.mark.parametrize("backup", ["folder", "share"])
def test_a_backup_catches_up_from_the_copy_on_the_share_once_the_original_is_purged(
        samba, smb_folder, tmp_path, monkeypatch, backup):
    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    config, place = share_primary(tmp_path, samba, smb_folder, backup)
    dataset, journal = deliver_then_purge(config)
    bring_back(place, journal, dataset)

    Agent(config).run(once=True)  # idle: the backup catches up
    delivery = backup_delivery(journal, dataset)
    assert delivery.state == "delivered", delivery.error
    copy = place / "alice" / "exp"
    assert tree(copy) == FILES
    [manifest] = copy.glob("autotx-manifest.*")
    assert verify_manifest(copy, manifest, "xxh3_128") == []
    [caught] = [e.message for e in journal.recent_events(50) if e.kind == "caught-up"]
    assert journal.dataset(dataset).dest_path in caught  # read from the share
    assert tree(samba.data / smb_folder / "alice" / "exp") == FILES  # the primary untouched
    assert journal.dataset(dataset).state == J.DONE


@pytest.mark.parametrize("backup", ["folder", "share"])
def test_a_file_damaged_on_the_share_fails_the_catch_up_naming_it(samba, smb_folder, tmp_path,
                                                                   monkeypatch, backup):
    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    config, place = share_primary(tmp_path, samba, smb_folder, backup)
    dataset, journal = deliver_then_purge(config)
    damaged = samba.data / smb_folder / "alice" / "exp" / "sub1" / "img3.tif"
    rotten = bytearray(damaged.read_bytes())
    rotten[0] ^= 0xFF
    damaged.write_bytes(bytes(rotten))  # bit rot on the server, same size
    bring_back(place, journal, dataset)

    Agent(config).run(once=True)
    delivery = backup_delivery(journal, dataset)
    assert delivery.state == "pending"
    assert "sub1/img3.tif" in delivery.error and "no longer matches" in delivery.error
    assert delivery.next_attempt_at > utcnow() + dt.timedelta(hours=1)  # final: not retried soon
    [failed] = [e for e in journal.recent_events(50) if e.kind == "catch-up-failed"]
    assert failed.level == "error" and "sub1/img3.tif" in failed.message
    assert not (place / "alice" / "exp").exists()  # nothing delivered to the backup
    assert not [p for p in place.rglob("*") if p.is_file() and p.name != ".autotx-destination"]


def test_a_primary_share_that_does_not_answer_only_postpones_the_catch_up(samba, smb_folder,
                                                                          tmp_path, monkeypatch):
    """Whether the copy on the share is still there cannot be told while the server is
    away: the catch-up waits (backs off), it is not given up."""
    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    config, place = share_primary(tmp_path, samba, smb_folder, "folder")
    dataset, journal = deliver_then_purge(config)
    bring_back(place, journal, dataset)
    samba.stop()
    try:
        Agent(config).run(once=True)
    finally:
        samba.start()
    delivery = backup_delivery(journal, dataset)
    assert delivery.state == "pending" and "cannot be read now" in delivery.error
    assert delivery.next_attempt_at < utcnow() + dt.timedelta(hours=1)  # retried, not final
    assert "neither the original" not in delivery.error

    journal.update_delivery(delivery.id, next_attempt_at=None)  # time passes
    Agent(config).run(once=True)
    assert backup_delivery(journal, dataset).state == "delivered"
    assert tree(place / "alice" / "exp") == FILES
