"""The agent delivering to an SMB share as a second destination (real Samba on loopback)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from autotx_lib import journal as J
from autotx_lib.config import Config
from autotx_lib.journal import Journal, utcnow
from autotx_lib.transfer.agent import Agent

from ..conftest import assert_delivered_once_to, make_dataset, tree
from .conftest import run_with_server_stopped

FILES = {f"sub{i % 2}/img{i}.tif": os.urandom(200_000 + i) for i in range(6)}
PASSWORD_ENV = "AUTOTX_TEST_SMB_PASSWORD"


def smb_facility(tmp_path: Path, url: str, **backup) -> Config:
    storage = tmp_path / "storage"
    (storage / "alice").mkdir(parents=True)
    return Config(incoming=tmp_path / "incoming", managed=tmp_path / "managed",
                  destinations=[{"name": "storage", "url": str(storage)},
                                {"name": "nas", "url": url, "password_env": PASSWORD_ENV,
                                 **backup}],
                  readiness={"quiet_seconds": 0}, host_alias="test-pc",
                  gate={"max_cpu_percent": 100, "min_available_memory_mb": 0})


def deliveries(config: Config, dataset: int) -> dict:
    return {d.destination: d for d in Journal(config.journal_url).deliveries_of(dataset)}


def test_dataset_goes_to_the_share_verified_with_its_manifest(samba, smb_folder, tmp_path,
                                                               monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    config = smb_facility(tmp_path, samba.url(path=smb_folder))
    make_dataset(config.incoming, "alice", "exp", FILES)
    summary = Agent(config).run(once=True)
    assert len(summary.delivered) == 1, Journal(config.journal_url).recent_events(5)
    on_server = samba.data / smb_folder / "alice" / "exp"
    assert tree(on_server) == FILES
    manifest = (on_server / "autotx-manifest.xxh128").read_text()
    assert len(manifest.splitlines()) == len(FILES)
    nas = deliveries(config, summary.delivered[0])["nas"]
    assert nas.state == "delivered" and nas.dest_path == "alice/exp"
    assert not list((samba.data / smb_folder / ".autotx-tmp").rglob("*.tif"))


def test_wrong_password_leaves_the_share_out_and_says_so(samba, smb_folder, tmp_path,
                                                         monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    config = smb_facility(tmp_path, samba.url(path=smb_folder), required=False)
    make_dataset(config.incoming, "alice", "exp", FILES)
    summary = Agent(config).run(once=True)
    assert len(summary.delivered) == 1  # the optional share does not hold the primary up
    nas = deliveries(config, summary.delivered[0])["nas"]
    assert nas.state == "pending" and "not-the-password" not in nas.error
    assert "password" in nas.error.lower() or "auth" in nas.error.lower() \
        or "logon" in nas.error.lower()
    assert not (samba.data / smb_folder / "alice").exists()


def test_server_stopped_mid_transfer_then_back_delivers_once(samba, smb_folder, tmp_path,
                                                             monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    config = smb_facility(tmp_path, samba.url(path=smb_folder))
    config.copy_.workers = 1
    make_dataset(config.incoming, "alice", "exp", FILES)
    summary = run_with_server_stopped(samba, config)
    assert not summary.delivered
    dataset = summary.retrying[0]
    rows = deliveries(config, dataset)
    assert rows["storage"].state == "delivered" and rows["nas"].state == "pending"
    row = Journal(config.journal_url).dataset(dataset)
    assert row.state == J.QUEUED and tree(Path(row.processing_path)) == FILES
    journal = Journal(config.journal_url)
    journal.update_dataset(dataset, next_attempt_at=utcnow() - dt.timedelta(seconds=1))
    journal.update_delivery(rows["nas"].id, next_attempt_at=None)  # time passes
    summary = Agent(config).run(once=True)
    assert summary.delivered == [dataset]
    assert tree(samba.data / smb_folder / "alice" / "exp") == FILES
    assert sorted(os.listdir(samba.data / smb_folder / "alice")) == ["exp"]  # once
    assert sorted(os.listdir(tmp_path / "storage" / "alice")) == ["exp"]


def test_verify_reads_the_copy_on_an_smb_backup(samba, smb_folder, tmp_path, monkeypatch):
    from autotx_lib.transfer.recheck import recheck_delivered

    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    config = smb_facility(tmp_path, samba.url(path=smb_folder))
    make_dataset(config.incoming, "alice", "exp", FILES)
    assert len(Agent(config).run(once=True).delivered) == 1
    assert recheck_delivered(config, destination="nas").ok
    (samba.data / smb_folder / "alice" / "exp" / "sub0" / "img0.tif").unlink()  # deleted there
    report = recheck_delivered(config, destination="nas")
    assert report.failed and any("sub0/img0.tif" in p for p in report.failed[0].problems)
    assert recheck_delivered(config).ok  # the primary's copy is intact


def close_connections(agent: Agent) -> None:
    """What a crashed process's end does: its connections close and the server lets go of
    the files it held open."""
    for destination in agent._opened.values():
        destination.close()


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("step", ["SMB open_write", "Journal.mark_verified", "move_dir"])
def test_crash_at_every_step_with_a_folder_and_a_share(samba, smb_folder, tmp_path, monkeypatch,
                                                        step, when):
    """The share written alongside the folder (its own threads): a crash before or after
    every call of each step, then a restart, ends with one verified copy at each."""
    from autotx_lib.transfer import steps as steps_module
    from autotx_lib.transfer.destinations.smb import SMBDestination
    from tests.transfer.test_crash import crash_at_every_call

    owners = {"SMB open_write": (SMBDestination, "open_write"),
              "Journal.mark_verified": (Journal, "mark_verified"),
              "move_dir": (steps_module, "move_dir")}
    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    config = smb_facility(tmp_path, samba.url(path=smb_folder))
    files = dict(list(FILES.items())[:4])
    make_dataset(config.incoming, "alice", "exp", files)
    crash_at_every_call(config, monkeypatch, step, *owners[step], when,
                        after_crash=close_connections)
    Agent(config).run(once=True)
    assert_delivered_once_to((tmp_path / "storage", samba.data / smb_folder), files,
                             config.journal_url)


def test_the_idle_agent_rechecks_the_copy_on_the_share(samba, smb_folder, tmp_path, monkeypatch):
    """[verify] recheck_days goes over an smb:// destination too, through the agent's own
    connection to it."""
    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    config = smb_facility(tmp_path, samba.url(path=smb_folder))
    config.verify.recheck_days = 7
    make_dataset(config.incoming, "alice", "exp", FILES)
    Agent(config).run(once=True)
    rotten = samba.data / smb_folder / "alice" / "exp" / "sub1" / "img1.tif"
    rotten.write_bytes(b"\0" + rotten.read_bytes()[1:])
    journal = Journal(config.journal_url)
    for _ in range(4):  # the primary's round (check, close), then the share's
        Agent(config).run(once=True)
    failed = [e.message for e in journal.recent_events(50) if e.kind == "recheck-failed"]
    assert len(failed) == 1 and "sub1/img1.tif" in failed[0] and "alice/exp" in failed[0]
    assert journal.get_setting("recheck")["at"]  # the primary's round closed, clean
