"""An SMB share as the one (primary) destination, written without a mount (real Samba on
loopback): AutoTx's UNC target. Delivery, the marker, `autotx verify`, the grace purge and
`autotx destination` all go through SMB."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autotx_lib import journal as J
from autotx_lib.cli.main import app
from autotx_lib.config import Config
from autotx_lib.journal import Journal, utcnow
from autotx_lib.transfer.agent import Agent
from autotx_lib.transfer.copy import verify_manifest
from autotx_lib.transfer.grace import purge
from autotx_lib.transfer.recheck import recheck_delivered

from ..conftest import make_dataset, tree
from .conftest import run_with_server_stopped

FILES = {f"sub{i % 2}/img{i}.tif": os.urandom(150_000 + i) for i in range(5)}
PASSWORD_ENV = "AUTOTX_TEST_SMB_PASSWORD"


def smb_only(tmp_path: Path, url: str, **settings) -> Config:
    return Config(incoming=tmp_path / "incoming", managed=tmp_path / "managed",
                  destinations=[{"name": "storage", "url": url, "password_env": PASSWORD_ENV}],
                  readiness={"quiet_seconds": 0}, host_alias="test-pc",
                  gate={"max_cpu_percent": 100, "min_available_memory_mb": 0}, **settings)


def on_server(samba, folder: str) -> Path:
    return samba.data / folder


def user_folder(samba, folder: str, user: str = "alice") -> Path:
    """The user's folder on the share, writable by the server's user (nobody)."""
    path = on_server(samba, folder) / user
    path.mkdir()
    path.chmod(0o777)
    return path


def test_a_dataset_is_delivered_verified_to_an_smb_primary(samba, smb_folder, tmp_path,
                                                           monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    user_folder(samba, smb_folder)
    config = smb_only(tmp_path, samba.url(path=smb_folder))
    assert config.destination is None
    make_dataset(config.incoming, "alice", "exp", FILES)
    summary = Agent(config).run(once=True)
    journal = Journal(config.journal_url)
    assert len(summary.delivered) == 1, journal.recent_events(5)
    delivered = on_server(samba, smb_folder) / "alice" / "exp"
    assert tree(delivered) == FILES
    assert len((delivered / "autotx-manifest.xxh128").read_text().splitlines()) == len(FILES)
    assert (on_server(samba, smb_folder) / ".autotx-destination").is_file()  # the marker
    row = journal.dataset(summary.delivered[0])
    assert row.state == J.DONE and row.dest_path == f"{config.primary_shown}/alice/exp"
    assert tree(Path(row.final_path)) == FILES  # the original rests in grace
    assert not list((on_server(samba, smb_folder) / ".autotx-tmp").rglob("*.tif"))


def test_a_run_that_ends_leaves_no_connection_to_the_share(samba, smb_folder, tmp_path,
                                                            monkeypatch):
    import psutil

    def ports() -> set[int]:
        return {c.laddr.port for c in psutil.Process().net_connections(kind="tcp")
                if c.raddr and c.raddr.port == samba.port and c.status == "ESTABLISHED"}

    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    user_folder(samba, smb_folder)
    config = smb_only(tmp_path, samba.url(path=smb_folder), copy={"workers": 3})
    make_dataset(config.incoming, "alice", "exp", FILES)
    before = ports()
    agent = Agent(config)
    assert agent.run(once=True).delivered
    assert ports() - before == set()  # logged off: no session left on the server
    make_dataset(config.incoming, "alice", "exp2", FILES)
    assert agent.run(once=True).delivered  # the same agent connects again
    assert tree(on_server(samba, smb_folder) / "alice" / "exp2") == FILES


def test_a_user_without_a_folder_on_the_share_goes_to_unmatched(samba, smb_folder, tmp_path,
                                                                monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    config = smb_only(tmp_path, samba.url(path=smb_folder))
    make_dataset(config.incoming, "mallory", "exp", FILES)
    summary = Agent(config).run(once=True)
    assert summary.unmatched and not summary.delivered
    row = Journal(config.journal_url).dataset(summary.unmatched[0])
    assert f"{config.primary_shown}/mallory" in row.error
    assert not (on_server(samba, smb_folder) / "mallory").exists()
    assert tree(config.managed / "unmatched" / "mallory" / os.listdir(
        config.managed / "unmatched" / "mallory")[0]) == FILES

    config = smb_only(tmp_path / "second", samba.url(path=smb_folder), create_user_dirs=True)
    make_dataset(config.incoming, "bob", "exp", FILES)
    assert len(Agent(config).run(once=True).delivered) == 1
    assert tree(on_server(samba, smb_folder) / "bob" / "exp") == FILES


def test_verify_and_grace_purge_read_the_copy_on_the_share(samba, smb_folder, tmp_path,
                                                           monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    user_folder(samba, smb_folder)
    config = smb_only(tmp_path, samba.url(path=smb_folder))
    make_dataset(config.incoming, "alice", "exp", FILES)
    dataset = Agent(config).run(once=True).delivered[0]
    original = Path(Journal(config.journal_url).dataset(dataset).final_path)
    assert recheck_delivered(config).ok

    damaged = on_server(samba, smb_folder) / "alice" / "exp" / "sub1" / "img1.tif"
    good = damaged.read_bytes()
    damaged.write_bytes(b"\0" + good[1:])  # bit rot on the server, same size
    report = recheck_delivered(config)
    assert not report.ok and "sub1/img1.tif" in report.failed[0].problems[0]
    result = purge(config, 0, dry_run=False)
    assert not result.removed and original.is_dir()  # the original is kept ...
    assert any("sub1/img1.tif" in r and "delivered copy" in r
               for r in result.skipped[0].reasons)  # ... and the file named

    damaged.write_bytes(good)
    (damaged.parent / "added.tif").write_bytes(b"x")  # a file added after delivery
    result = purge(config, 0, dry_run=False)
    assert not result.removed and original.is_dir()
    assert any("added.tif" in r and "added after delivery" in r
               for r in result.skipped[0].reasons)

    (damaged.parent / "added.tif").unlink()
    result = purge(config, 0, dry_run=False)
    assert [e.dataset_id for e in result.removed] == [dataset] and not original.exists()
    assert tree(on_server(samba, smb_folder) / "alice" / "exp")  # the copy is untouched


def test_an_emptied_share_is_not_taken_for_the_destination(samba, smb_folder, tmp_path,
                                                           monkeypatch):
    """The share's folder replaced (a restore, another export): no marker, the data waits."""
    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    root = on_server(samba, smb_folder)
    user_folder(samba, smb_folder)
    config = smb_only(tmp_path, samba.url(path=smb_folder))
    make_dataset(config.incoming, "alice", "first", FILES)
    assert len(Agent(config).run(once=True).delivered) == 1
    root.rename(root.with_name(root.name + "-old"))
    root.mkdir()
    root.chmod(0o777)
    user_folder(samba, smb_folder)
    make_dataset(config.incoming, "alice", "second", FILES)
    summary = Agent(config).run(once=True)
    assert not summary.delivered and summary.retrying
    row = Journal(config.journal_url).dataset(summary.retrying[0])
    assert row.state == J.QUEUED and "marker" in (row.error or "")
    assert tree(Path(row.processing_path)) == FILES and not (root / "alice" / "second").exists()


def test_server_stopped_mid_transfer_then_back_delivers_once(samba, smb_folder, tmp_path,
                                                             monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    user_folder(samba, smb_folder)
    config = smb_only(tmp_path, samba.url(path=smb_folder))
    make_dataset(config.incoming, "alice", "exp", FILES)
    summary = run_with_server_stopped(samba, config)
    assert not summary.delivered
    dataset = summary.retrying[0]
    journal = Journal(config.journal_url)
    row = journal.dataset(dataset)
    assert row.state in (J.QUEUED, J.COPYING) and tree(Path(row.processing_path)) == FILES
    journal.update_dataset(dataset, next_attempt_at=utcnow() - dt.timedelta(seconds=1))
    for delivery in journal.deliveries_of(dataset):  # time passes
        journal.update_delivery(delivery.id, next_attempt_at=None)
    summary = Agent(config).run(once=True)
    assert summary.delivered == [dataset], journal.recent_events(5)
    assert tree(on_server(samba, smb_folder) / "alice" / "exp") == FILES
    assert sorted(os.listdir(on_server(samba, smb_folder) / "alice")) == ["exp"]  # once


def test_destination_init_and_show_speak_smb(samba, smb_folder, tmp_path, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    url = samba.url(path=smb_folder)
    file = tmp_path / "agent.toml"
    file.write_text(f'incoming = "{tmp_path / "in"}"\nmanaged = "{tmp_path / "m"}"\n'
                    f'[[destinations]]\nname = "storage"\nurl = "{url}"\n'
                    f'password_env = "{PASSWORD_ENV}"\n')
    runner = CliRunner()
    shown = runner.invoke(app, ["destination", "show", "-c", str(file)])
    assert shown.exit_code == 1 and "no marker" in shown.output and url in shown.output
    made = runner.invoke(app, ["destination", "init", "-c", str(file)])
    assert made.exit_code == 0, made.output
    assert (on_server(samba, smb_folder) / ".autotx-destination").is_file()
    shown = runner.invoke(app, ["destination", "show", "-c", str(file)])
    assert shown.exit_code == 0 and "this agent's destination" in shown.output

    checked = runner.invoke(app, ["verify", "-c", str(file)])
    assert checked.exit_code == 0, checked.output  # nothing delivered yet, nothing wrong

    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    for command in (["destination", "init"], ["verify"]):
        refused = runner.invoke(app, [*command, "-c", str(file)])
        assert refused.exit_code == 2, (command, refused.output)
        assert "wrong" not in refused.output and "Traceback" not in refused.output


def _smb_steps():
    from autotx_lib.transfer import steps as steps_module
    from autotx_lib.transfer.destinations.smb import SMBDestination

    return [("SMB rename", SMBDestination, "rename"),
            ("SMB write_bytes", SMBDestination, "write_bytes"),
            ("move_dir", steps_module, "move_dir"),
            ("Journal.update_delivery", Journal, "update_delivery"),
            ("Journal.mark_verified", Journal, "mark_verified")]


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("step", range(5), ids=[s[0] for s in _smb_steps()])
def test_crash_at_every_step_with_an_smb_primary(samba, smb_folder, tmp_path, monkeypatch,
                                                  step, when):
    """A crash before or after every call of each step, then a restart: one verified copy
    with one manifest on the share, the original in grace."""
    from tests.transfer.test_crash import crash_at_every_call

    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    user_folder(samba, smb_folder)
    config = smb_only(tmp_path, samba.url(path=smb_folder))
    files = dict(list(FILES.items())[:3])
    make_dataset(config.incoming, "alice", "exp", files)
    crash_at_every_call(config, monkeypatch, *_smb_steps()[step], when)
    Agent(config).run(once=True)
    delivered = on_server(samba, smb_folder) / "alice"
    assert sorted(os.listdir(delivered)) == ["exp"]
    assert tree(delivered / "exp") == files
    [manifest] = (delivered / "exp").glob("autotx-manifest.*")
    assert verify_manifest(delivered / "exp", manifest, "xxh3_128") == []
    journal = Journal(config.journal_url)
    [row] = [r for r in journal.all_datasets() if r.state != J.VANISHED]
    assert row.state == J.DONE and tree(Path(row.final_path)) == files


def test_a_missing_share_folder_keeps_the_dataset_waiting_with_the_reason(samba, smb_folder,
                                                                          tmp_path, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    config = smb_only(tmp_path, samba.url(path=f"{smb_folder}/not-there"))
    make_dataset(config.incoming, "alice", "exp", FILES)
    summary = Agent(config).run(once=True)
    assert summary.retrying and not summary.delivered
    row = Journal(config.journal_url).dataset(summary.retrying[0])
    assert row.state == J.QUEUED and "not-there" in (row.error or "")
    assert tree(Path(row.processing_path)) == FILES  # nothing lost, nothing moved to grace
    assert not (config.managed / "done").exists() or not list((config.managed / "done").iterdir())
