"""Several destinations: one read of the source, a verified copy and manifest at each, one
delivery row per destination, grace only after every required one, optional ones catch up."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest

from autotx_lib import journal as J
from autotx_lib.config import Config, check_config
from autotx_lib.errors import ConfigError
from autotx_lib.journal import Journal, utcnow
from autotx_lib.transfer import status as S
from autotx_lib.transfer.agent import Agent

from .conftest import make_dataset, tree, write_tree

FILES = {f"d{i % 2}/f{i}.bin": os.urandom(30_000 + i) for i in range(8)}


def two_destinations(tmp_path: Path, **backup) -> Config:
    storage, spare = tmp_path / "storage", tmp_path / "backup"
    (storage / "alice").mkdir(parents=True)
    spare.mkdir()
    return Config(incoming=tmp_path / "incoming", managed=tmp_path / "managed",
                  destinations=[{"name": "storage", "url": str(storage)},
                                {"name": "backup", "url": str(spare), **backup}],
                  readiness={"quiet_seconds": 0}, host_alias="test-pc",
                  gate={"max_cpu_percent": 100, "min_available_memory_mb": 0})


def deliveries(config: Config, dataset_id: int) -> dict[str, object]:
    return {d.destination: d for d in Journal(config.journal_url).deliveries_of(dataset_id)}


def manifest_checks(folder: Path) -> None:
    """The standard tool accepts the manifest at this destination."""
    result = subprocess.run(["xxhsum", "-c", "autotx-manifest.xxh128"], cwd=folder,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def make_due(config: Config, dataset_id: int | None = None) -> None:
    """Time passes: every back-off of this journal is over (no sleeping in tests)."""
    journal = Journal(config.journal_url)
    for row in journal.all_datasets():
        if dataset_id in (None, row.id):
            journal.update_dataset(row.id, next_attempt_at=utcnow() - dt.timedelta(seconds=1))
            for delivery in journal.deliveries_of(row.id):
                journal.update_delivery(delivery.id, next_attempt_at=None)


def test_two_destinations_each_get_a_verified_copy_and_manifest(tmp_path):
    config = two_destinations(tmp_path)
    make_dataset(config.incoming, "alice", "exp", FILES)
    summary = Agent(config).run(once=True)
    assert len(summary.delivered) == 1 and summary.ok
    for target in config.targets:
        copy = target.local_path / "alice" / "exp"
        assert tree(copy) == FILES
        manifest_checks(copy)
    rows = deliveries(config, summary.delivered[0])
    assert {name: d.state for name, d in rows.items()} == {"storage": "delivered",
                                                            "backup": "delivered"}
    assert rows["backup"].dest_path == str(tmp_path / "backup" / "alice" / "exp")
    row = Journal(config.journal_url).dataset(summary.delivered[0])
    assert row.state == J.DONE and tree(Path(row.final_path)) == FILES  # the original in grace
    assert not list((tmp_path / "backup" / ".autotx-tmp").rglob("*.bin"))


def test_one_destination_config_still_works_and_records_its_delivery(facility):
    make_dataset(facility.incoming, "alice", "exp", FILES)
    summary = Agent(facility).run(once=True)
    rows = deliveries(facility, summary.delivered[0])
    assert list(rows) == ["primary"] and rows["primary"].state == "delivered"
    assert rows["primary"].dest_path == str(facility.destination / "alice" / "exp")


def test_optional_backup_down_never_holds_up_the_primary_and_catches_up_later(tmp_path):
    config = two_destinations(tmp_path, required=False)
    spare = tmp_path / "backup"
    spare.rename(tmp_path / "backup-unmounted")  # the backup share is not there
    make_dataset(config.incoming, "alice", "exp", FILES)
    summary = Agent(config).run(once=True)
    assert len(summary.delivered) == 1, "the optional backup must not hold the dataset"
    dataset = summary.delivered[0]
    row = Journal(config.journal_url).dataset(dataset)
    assert row.state == J.DONE and tree(tmp_path / "storage" / "alice" / "exp") == FILES
    backup = deliveries(config, dataset)["backup"]
    assert backup.state == "pending" and "backup" in backup.error
    assert backup.next_attempt_at is not None
    events = [e.kind for e in Journal(config.journal_url).recent_events(50)]
    assert "destination-failed" in events and "catch-up" in events

    (tmp_path / "backup-unmounted").rename(spare)  # mounted again
    make_due(config)
    Agent(config).run(once=True)  # idle: the backup catches up from the grace copy
    assert deliveries(config, dataset)["backup"].state == "delivered"
    assert tree(spare / "alice" / "exp") == FILES
    manifest_checks(spare / "alice" / "exp")
    assert "caught-up" in [e.kind for e in Journal(config.journal_url).recent_events(20)]


def test_a_catch_up_keeps_the_backup_above_its_free_space_floor(tmp_path):
    config = two_destinations(tmp_path, required=False, min_free_mb=10**12)  # an exabyte
    (tmp_path / "backup").rename(tmp_path / "away")
    make_dataset(config.incoming, "alice", "exp", FILES)
    dataset = Agent(config).run(once=True).delivered[0]
    (tmp_path / "away").rename(tmp_path / "backup")
    make_due(config)
    Agent(config).run(once=True)  # idle: the catch-up would fill the backup past its floor
    backup = deliveries(config, dataset)["backup"]
    assert backup.state == "pending" and "no space" in backup.error, backup.error
    assert not (tmp_path / "backup" / "alice" / "exp").exists()
    assert not list((tmp_path / "backup").rglob("*.bin"))


def test_catch_up_from_a_grace_copy_that_changed_is_refused_and_reported(tmp_path):
    config = two_destinations(tmp_path, required=False)
    (tmp_path / "backup").rename(tmp_path / "away")
    make_dataset(config.incoming, "alice", "exp", FILES)
    dataset = Agent(config).run(once=True).delivered[0]
    (tmp_path / "away").rename(tmp_path / "backup")
    grace = Path(Journal(config.journal_url).dataset(dataset).final_path)
    (grace / "d0" / "f0.bin").write_bytes(b"tampered")
    make_due(config)
    Agent(config).run(once=True)
    backup = deliveries(config, dataset)["backup"]
    assert backup.state == "pending" and "no longer matches" in backup.error
    assert backup.next_attempt_at > utcnow() + dt.timedelta(hours=1)
    assert not (tmp_path / "backup" / "alice" / "exp").exists()


def test_required_backup_outside_its_window_keeps_the_original_until_it_is_written(tmp_path):
    later = (dt.datetime.now() + dt.timedelta(hours=3)).strftime("%H:%M")
    end = (dt.datetime.now() + dt.timedelta(hours=4)).strftime("%H:%M")
    config = two_destinations(tmp_path, time_windows=[f"{later}-{end}"])
    make_dataset(config.incoming, "alice", "exp", FILES)
    summary = Agent(config).run(once=True)
    assert not summary.delivered
    dataset = summary.retrying[0]
    row = Journal(config.journal_url).dataset(dataset)
    assert row.state == J.QUEUED and "backup" in row.error and "window" in row.error
    assert tree(Path(row.processing_path)) == FILES  # not in grace: a required copy is missing
    assert tree(tmp_path / "storage" / "alice" / "exp") == FILES  # the primary went already
    assert not (tmp_path / "backup" / "alice" / "exp").exists()

    config.destinations[1].time_windows = []  # the night has come
    make_due(config)
    summary = Agent(config).run(once=True)
    assert summary.delivered == [dataset]
    assert tree(tmp_path / "backup" / "alice" / "exp") == FILES
    assert tree(tmp_path / "storage" / "alice" / "exp") == FILES  # delivered exactly once
    assert not (tmp_path / "storage" / "alice" / "exp_1").exists()


def test_backup_full_while_the_primary_is_fine(tmp_path, mount_tmpfs):
    config = two_destinations(tmp_path, required=False)
    mount_tmpfs(tmp_path / "backup", size="100k")  # far smaller than the dataset
    make_dataset(config.incoming, "alice", "exp", FILES)
    summary = Agent(config).run(once=True)
    assert len(summary.delivered) == 1
    backup = deliveries(config, summary.delivered[0])["backup"]
    assert backup.state == "pending" and "no space left" in backup.error
    assert tree(tmp_path / "storage" / "alice" / "exp") == FILES
    assert not [p for p in (tmp_path / "backup").rglob("*.bin")]  # its partial copy removed


def test_primary_gone_mid_transfer_while_the_backup_succeeds(tmp_path):
    config = two_destinations(tmp_path)
    storage = tmp_path / "storage"
    make_dataset(config.incoming, "alice", "exp", FILES)
    seen = []

    def unmount_primary(progress) -> None:
        if progress.files_done >= 2 and not seen:
            seen.append(progress.files_done)
            storage.rename(tmp_path / "storage-gone")

    config.copy_.workers = 1
    summary = Agent(config, on_progress=unmount_primary).run(once=True)
    assert seen and not summary.delivered
    dataset = summary.retrying[0]
    rows = deliveries(config, dataset)
    assert rows["backup"].state == "delivered" and rows["storage"].state == "pending"
    assert tree(tmp_path / "backup" / "alice" / "exp") == FILES
    row = Journal(config.journal_url).dataset(dataset)
    assert row.state == J.QUEUED and tree(Path(row.processing_path)) == FILES

    (tmp_path / "storage-gone").rename(storage)  # mounted again
    make_due(config)
    summary = Agent(config).run(once=True)
    assert summary.delivered == [dataset]
    assert tree(storage / "alice" / "exp") == FILES
    manifest_checks(storage / "alice" / "exp")
    assert sorted(os.listdir(tmp_path / "backup" / "alice")) == ["exp"]  # delivered once


def test_status_shows_each_destination(tmp_path):
    config = two_destinations(tmp_path, required=False)
    (tmp_path / "backup").rename(tmp_path / "away")
    make_dataset(config.incoming, "alice", "exp", FILES)
    Agent(config).run(once=True)
    report = S.status(config)
    shown = report.history[0].destinations_line()
    assert shown.startswith("storage: delivered; backup: pending (optional), next attempt ")
    recent = report.to_dict()["history"][0]
    assert {d["destination"]: d["state"] for d in recent["deliveries"]} == {
        "storage": "delivered", "backup": "pending"}
    assert recent["deliveries"][1]["next_attempt_at"].endswith("+00:00")  # aware UTC in JSON


@pytest.mark.parametrize("entries,problem", [
    ([{"name": "a", "url": "ftp://nas/share"}], "unknown scheme"),
    ([{"name": "a", "url": "/x"}, {"name": "b", "url": "smb://nas"}], "names no share"),
    ([{"name": "a", "url": "/x"}, {"name": "b", "url": "smb://u:pw@nas/s"}], "never put the password"),
    ([{"name": "a", "url": "/x"}, {"name": "a", "url": "/y"}], "names must differ"),
    ([{"name": "a", "url": "/x", "required": False}], "cannot be required = false"),
    ([{"name": "a", "url": "smb://u@nas/share", "required": False}], "cannot be required"),
    ([], "give `destination`"),
])
def test_bad_destination_settings_are_refused_with_the_reason(tmp_path, entries, problem):
    from autotx_lib.config import config_from_dict

    with pytest.raises(ConfigError, match=problem):
        config_from_dict({"incoming": str(tmp_path / "in"), "managed": str(tmp_path / "m"),
                          "destinations": entries})


@pytest.mark.parametrize("feature,named", [
    ({"sessions": {"live_sync": True}}, "live_sync"),
    ({"pipelines": {"rules": [{"workflow": "previews"}]}}, "pipelines.rules"),
    ({"omero": {"enabled": True, "host": "omero.example.org", "user": "importer"}}, "omero"),
])
def test_an_smb_primary_refuses_what_reads_delivered_data_from_a_folder(tmp_path, feature,
                                                                          named):
    from autotx_lib.config import config_from_dict

    base = {"incoming": str(tmp_path / "in"), "managed": str(tmp_path / "m"),
            "destinations": [{"name": "storage", "url": "smb://u@nas/share"}]}
    config = config_from_dict(base)  # on its own an smb:// primary is fine
    assert config.destination is None and config.primary_shown == "smb://u@nas/share"
    with pytest.raises(ConfigError, match=f"(?s){named}.*mount the share"):
        config_from_dict({**base, **feature})


def test_destinations_that_overlap_each_other_or_managed_are_problems(tmp_path):
    storage = tmp_path / "storage"
    storage.mkdir()
    config = Config(incoming=tmp_path / "in", managed=tmp_path / "managed",
                    destinations=[{"name": "storage", "url": str(storage)},
                                  {"name": "inside", "url": str(storage / "backup")},
                                  {"name": "grace", "url": str(tmp_path / "managed" / "b")}])
    keys = {p.key: p.message for p in check_config(config, for_run=True)}
    assert "overlaps destinations.storage" in keys["destinations.inside"]
    assert "overlaps managed" in keys["destinations.grace"]


def test_a_journal_from_before_deliveries_finishes_its_dataset(facility):
    """A dataset already being copied when the journal was upgraded has no delivery rows."""
    make_dataset(facility.incoming, "alice", "exp", FILES)
    dataset = Agent(facility).run(once=True).delivered[0]
    journal = Journal(facility.journal_url)
    assert journal.dataset(dataset).state == J.DONE
    from sqlalchemy import delete

    with journal.engine.begin() as conn:  # as a journal of the release before would be
        conn.execute(delete(J.deliveries))
    journal.update_dataset(dataset, state=J.DELIVERED)
    Agent(facility).process(dataset)
    rows = deliveries(facility, dataset)
    assert rows["primary"].state == "delivered"
    assert rows["primary"].dest_path == str(facility.destination / "alice" / "exp")


def test_verify_checks_the_copies_at_a_named_destination(tmp_path):
    from autotx_lib.transfer.recheck import recheck_delivered

    config = two_destinations(tmp_path)
    make_dataset(config.incoming, "alice", "exp", FILES)
    Agent(config).run(once=True)
    assert recheck_delivered(config, destination="backup").ok
    (tmp_path / "backup" / "alice" / "exp" / "d1" / "f1.bin").write_bytes(b"bit rot")
    report = recheck_delivered(config, destination="backup")
    assert [c.dest_path for c in report.failed] == [str(tmp_path / "backup" / "alice" / "exp")]
    assert any("d1/f1.bin" in p for p in report.failed[0].problems)
    assert recheck_delivered(config).ok  # the primary's copy is untouched
    with pytest.raises(ValueError, match="no destination named 'nas'"):
        recheck_delivered(config, destination="nas")


def test_the_arrival_mail_names_every_destination(tmp_path):
    from autotx_lib.transfer import notify
    from autotx_lib.transfer.notify import Notifier

    from .test_notify import with_email

    config = two_destinations(tmp_path, required=False)
    (tmp_path / "backup").rename(tmp_path / "away")
    make_dataset(config.incoming, "alice", "exp", FILES)
    dataset = Agent(config).run(once=True).delivered[0]
    with_email(config, 2525)  # queued only: nothing is sent in this test
    journal = Journal(config.journal_url)
    Notifier(config, journal).transfer_finished(journal.dataset(dataset), ["d0/f0.bin"])
    text = journal.last_mail_of_kind(notify.TRANSFER_FINISHED).body
    assert "Verified copies also go to:\n  backup: not yet: it gets its copy later" in text


def test_a_destination_below_its_free_space_floor_is_left_out(tmp_path):
    config = two_destinations(tmp_path, required=False, min_free_mb=10**12)  # never enough
    make_dataset(config.incoming, "alice", "exp", FILES)
    dataset = Agent(config).run(once=True).delivered[0]
    backup = deliveries(config, dataset)["backup"]
    assert backup.state == "pending" and "no space left" in backup.error
    assert not (tmp_path / "backup" / "alice").exists()


def test_missing_or_exposed_smb_credentials_are_named_and_never_block_the_primary(
        tmp_path, monkeypatch):
    monkeypatch.delenv("AUTOTX_TEST_NAS_PW", raising=False)
    config = two_destinations(tmp_path, required=False)
    config.destinations[1] = config.destinations[1].model_copy(update={
        "url": "smb://autotx@127.0.0.1:9/imaging", "password_env": "AUTOTX_TEST_NAS_PW"})
    [problem] = [p for p in check_config(config, for_run=True) if "backup" in p.key]
    assert "AUTOTX_TEST_NAS_PW" in problem.message and "not set" in problem.message
    make_dataset(config.incoming, "alice", "exp", FILES)
    dataset = Agent(config).run(once=True).delivered[0]  # the agent itself does not stop
    backup = deliveries(config, dataset)["backup"]
    assert backup.state == "pending" and "AUTOTX_TEST_NAS_PW" in backup.error

    secret = tmp_path / "nas.pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    config.destinations[1] = config.destinations[1].model_copy(update={
        "password_env": None, "password_file": secret})
    [problem] = [p for p in check_config(config, for_run=True) if "backup" in p.key]
    assert f"chmod 600 {secret}" in problem.message and "s3cret" not in problem.message


def test_a_catch_up_gives_way_to_a_new_acquisition(tmp_path, monkeypatch):
    from autotx_lib.transfer import steps

    config = two_destinations(tmp_path, required=False)
    (tmp_path / "backup").rename(tmp_path / "away")
    make_dataset(config.incoming, "alice", "exp", FILES)
    dataset = Agent(config).run(once=True).delivered[0]
    (tmp_path / "away").rename(tmp_path / "backup")
    make_due(config)
    real_scan, calls = steps.scan_incoming, []

    def scan_while_a_user_saves(incoming):
        calls.append(1)
        if len(calls) == 2:  # during the catch-up's copy, an acquisition appears
            make_dataset(config.incoming, "alice", "new_run", {"a.tif": b"new"})
        return real_scan(incoming)

    monkeypatch.setattr(steps, "CATCH_UP_LOOK_SECONDS", 0.0)
    monkeypatch.setattr(steps, "scan_incoming", scan_while_a_user_saves)
    Agent(config).run(once=True)
    backup = deliveries(config, dataset)["backup"]
    assert backup.state == "pending" and backup.error and backup.next_attempt_at is None
    assert "catch-up-paused" in [e.kind for e in Journal(config.journal_url).recent_events(10)]
    assert not (tmp_path / "backup" / "alice" / "exp").exists()
    assert not list((tmp_path / "backup" / ".autotx-tmp").rglob("*.bin"))

    monkeypatch.setattr(steps, "scan_incoming", real_scan)
    summary = Agent(config).run(once=True)  # the new acquisition first, then the catch-up
    assert len(summary.delivered) == 1
    assert deliveries(config, dataset)["backup"].state == "delivered"
    assert tree(tmp_path / "backup" / "alice" / "exp") == FILES


def test_the_idle_agent_rechecks_the_backup_copies_too(tmp_path):
    config = two_destinations(tmp_path)
    config.verify.recheck_days = 7
    make_dataset(config.incoming, "alice", "exp", FILES)
    Agent(config).run(once=True)
    (tmp_path / "backup" / "alice" / "exp" / "d0" / "f2.bin").write_bytes(b"rotten")
    journal = Journal(config.journal_url)
    for _ in range(4):  # the primary's round (check, close), then the backup's
        Agent(config).run(once=True)
    failed = [e.message for e in journal.recent_events(50) if e.kind == "recheck-failed"]
    assert len(failed) == 1 and str(tmp_path / "backup") in failed[0]
    assert journal.get_setting("recheck")["at"]  # the primary's round closed, clean
    assert journal.get_setting("recheck:backup")["after_id"] in (0, 1)


def test_require_signing_reaches_the_smb_destination(monkeypatch):
    pytest.importorskip("smbprotocol", reason="needs the smb extra")
    from autotx_lib.config import DestinationSettings
    from autotx_lib.transfer.fanout import open_member_destination

    monkeypatch.setenv("AUTOTX_TEST_NAS_PW", "pw")
    settings = {"name": "nas", "url": "smb://autotx@nas/imaging",
                "password_env": "AUTOTX_TEST_NAS_PW"}
    assert open_member_destination(DestinationSettings(**settings)).require_signing is False
    signed = open_member_destination(DestinationSettings(**settings, require_signing=True))
    assert signed.require_signing is True  # nothing connects until it is used


def test_a_user_unknown_at_the_primary_gets_no_backup_copy_while_the_primary_waits(tmp_path):
    later = (dt.datetime.now() + dt.timedelta(hours=3)).strftime("%H:%M")
    end = (dt.datetime.now() + dt.timedelta(hours=4)).strftime("%H:%M")
    config = two_destinations(tmp_path)
    config.destinations[0].time_windows = [f"{later}-{end}"]  # the primary is not due now
    make_dataset(config.incoming, "bob", "exp", FILES)  # no folder bob at the primary
    summary = Agent(config).run(once=True)
    assert len(summary.unmatched) == 1
    assert not (tmp_path / "backup" / "bob").exists()
    row = Journal(config.journal_url).dataset(summary.unmatched[0])
    assert tree(Path(row.final_path)) == FILES  # kept in managed/unmatched/


class _HeldDestination:
    """A real folder destination whose first write waits until the test lets it go."""

    def __init__(self, root: Path):
        import threading

        from autotx_lib.transfer.destinations import LocalDestination

        self.real, self.release, self.threads = LocalDestination(root), threading.Event(), set()
        self.url = self.real.url

    def open_write(self, relpath: str):
        import threading

        self.threads.add(threading.current_thread().name)
        if relpath.endswith("f0.bin"):
            assert self.release.wait(30), "the test never released the first write"
        return self.real.open_write(relpath)

    def __getattr__(self, name: str):
        return getattr(self.real, name)


def replica_members(tmp_path: Path, destination) -> list:
    from types import SimpleNamespace

    from autotx_lib.config import DestinationSettings
    from autotx_lib.transfer.fanout import Member

    destination.make_dirs("tmp/d0")
    destination.make_dirs("tmp/d1")
    settings = DestinationSettings(name="nas", url=str(tmp_path / "nas"))
    return [Member(SimpleNamespace(tmp_path="tmp"), settings, 1, destination)]


def test_a_share_is_written_alongside_and_a_file_counts_once_every_copy_is_checked(tmp_path):
    """Replicas: a slow destination does not hold the caller (the local copy) up, and a file
    is handed over only once every protocol destination holds its checked copy, in order."""
    from autotx_lib.transfer import copy as C
    from autotx_lib.transfer.fanout import Replicas

    source = write_tree(tmp_path / "source", FILES)
    (tmp_path / "nas").mkdir()
    held = _HeldDestination(tmp_path / "nas")
    done: list[str] = []
    ordered = sorted(FILES, key=lambda r: int(r.split("f")[1].split(".")[0]))
    with Replicas(replica_members(tmp_path, held), source, "xxh3_128", lambda r: done.append(
            r.relpath)) as replicas:
        for relpath in ordered:  # as copy_files hands over locally verified files
            replicas.add(C.CopiedFile(relpath, len(FILES[relpath]), 0,
                                      C.hash_file(source / relpath, "xxh3_128"), 1))
        replicas.collect()
        assert done == []  # every file was handed in while the first write still waited
        held.release.set()
        replicas.finish()
    assert done == ordered
    assert tree(tmp_path / "nas" / "tmp") == FILES
    assert held.threads == {"autotx-nas_0"}  # written in the destination's own thread


def test_a_failing_share_is_raised_to_the_caller_and_its_file_does_not_count(tmp_path):
    from autotx_lib.errors import DestinationError
    from autotx_lib.transfer import copy as C
    from autotx_lib.transfer.destinations import LocalDestination
    from autotx_lib.transfer.fanout import Replicas

    source = tmp_path / "source"
    source.mkdir()
    (source / "a.bin").write_bytes(b"a" * 1000)
    (tmp_path / "nas").mkdir()
    nas = LocalDestination(tmp_path / "nas")
    members = replica_members(tmp_path, nas)
    (tmp_path / "nas").rename(tmp_path / "gone")  # unmounted under the agent
    done: list[str] = []
    with pytest.raises(DestinationError), Replicas(members, source, "xxh3_128",
                                                   lambda r: done.append(r.relpath)) as replicas:
        replicas.add(C.CopiedFile("a.bin", 1000, 0, C.hash_file(source / "a.bin", "xxh3_128"), 1))
        replicas.finish()
    assert done == []


def test_files_go_to_a_share_several_at_once_with_their_dataset_paths(tmp_path):
    """With no local destination the first share reads the source: ``copy.workers`` files
    are in flight at once (the first is held until another one completed)."""
    from autotx_lib.transfer.fanout import replicate_files
    from autotx_lib.transfer.layout import SourceFile

    source = write_tree(tmp_path / "source", FILES)
    (tmp_path / "nas").mkdir()
    held = _HeldDestination(tmp_path / "nas")
    [member] = replica_members(tmp_path, held)
    entries = [SourceFile(r, len(d), 0) for r, d in sorted(FILES.items(),
                                                          key=lambda i: "f0" not in i[0])]
    got = []
    for copied in replicate_files(entries, source, member, "xxh3_128", workers=3,
                                  tick_seconds=0.05):
        if copied is not None:
            got.append(copied.relpath)
            held.release.set()
    assert got[0] != "d0/f0.bin" and sorted(got) == sorted(FILES)
    assert tree(tmp_path / "nas" / "tmp") == FILES


# --- a destination added later ------------------------------------------------------------


def config_file(tmp_path: Path, with_backup: bool) -> Path:
    """The agent's TOML: the folder 'storage', and later also 'backup' (required)."""
    (tmp_path / "storage" / "alice").mkdir(parents=True, exist_ok=True)
    (tmp_path / "backup").mkdir(exist_ok=True)
    text = (f'incoming = "{tmp_path / "incoming"}"\nmanaged = "{tmp_path / "managed"}"\n'
            'host_alias = "test-pc"\n[readiness]\nquiet_seconds = 0\n'
            '[gate]\nmax_cpu_percent = 100\nmin_available_memory_mb = 0\n'
            f'[[destinations]]\nname = "storage"\nurl = "{tmp_path / "storage"}"\n')
    if with_backup:
        text += f'[[destinations]]\nname = "backup"\nurl = "{tmp_path / "backup"}"\n'
    path = tmp_path / ("later.toml" if with_backup else "first.toml")
    path.write_text(text)
    return path


def test_a_destination_added_later_is_backfilled_from_grace_and_from_the_primary(tmp_path):
    from typer.testing import CliRunner

    from autotx_lib.cli.main import app
    from autotx_lib.config import load_config
    from autotx_lib.transfer.grace import purge

    first = load_config(config_file(tmp_path, with_backup=False))
    make_dataset(first.incoming, "alice", "old", FILES)
    assert Agent(first).run(once=True).delivered
    assert purge(first, 0, dry_run=False).removed  # its original is gone: the primary's copy
    make_dataset(first.incoming, "alice", "recent", FILES)
    assert Agent(first).run(once=True).delivered  # its original rests in grace

    later = config_file(tmp_path, with_backup=True)
    runner = CliRunner()
    listed = runner.invoke(app, ["destination", "backfill", "-c", str(later), "backup",
                                 "--dry-run"])
    assert listed.exit_code == 0, listed.output
    assert "2 delivered dataset(s) would be given a copy at backup" in listed.output
    config = load_config(later)
    journal = Journal(config.journal_url)
    assert not journal.catch_ups()  # a dry run writes nothing
    given = runner.invoke(app, ["destination", "backfill", "-c", str(later), "backup"])
    assert given.exit_code == 0 and "2 delivered dataset(s) given" in given.output
    assert len(journal.catch_ups()) == 2

    for _ in range(4):  # the idle agent catches up one dataset a pass
        if not journal.catch_ups():
            break
        Agent(config).run(once=True)
    assert not journal.catch_ups(), journal.recent_events(5)
    for name in ("old", "recent"):
        assert tree(tmp_path / "backup" / "alice" / name) == FILES
        manifest_checks(tmp_path / "backup" / "alice" / name)
    again = runner.invoke(app, ["destination", "backfill", "-c", str(later), "backup"])
    assert again.exit_code == 0 and "0 delivered dataset(s)" in again.output


@pytest.mark.parametrize(("args", "words"), [
    (["nas"], "no destination 'nas' in the configuration; its destinations are storage, backup"),
    (["storage"], "'storage' is the primary destination"),
    (["backup", "--since", "last week"], "is not a date; write it as YYYY-MM-DD"),
])
def test_backfill_refuses_what_it_cannot_do(tmp_path, args, words):
    from typer.testing import CliRunner

    from autotx_lib.cli.main import app

    done = CliRunner().invoke(app, ["destination", "backfill", "-c",
                                    str(config_file(tmp_path, with_backup=True)), *args])
    assert done.exit_code == 2 and words in " ".join(done.output.split()), done.output
