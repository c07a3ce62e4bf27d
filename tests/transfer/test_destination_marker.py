"""The destination proves it is the destination: an unmounted share never gets a delivery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autotx_lib import journal as J
from autotx_lib.errors import DestinationNotMountedError
from autotx_lib.journal import Journal
from autotx_lib.transfer.agent import Agent
from autotx_lib.transfer.destination import MARKER_NAME, check_destination, init_destination

from .conftest import make_dataset, tree


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_first_delivery_writes_the_marker_and_records_it(facility):
    make_dataset(facility.incoming, "alice", "exp", {"a.txt": b"a"})
    assert Agent(facility).run(once=True).delivered
    marker = json.loads((facility.destination / MARKER_NAME).read_text())
    assert marker["created_by"] == "test-pc"
    assert Journal(facility.journal_url).get_setting("destination_id") == marker["id"]


def test_empty_mount_point_gets_nothing_and_the_original_is_never_purged(facility):
    """The issue's data loss: create_user_dirs and an unmounted share's empty mount point."""
    facility.create_user_dirs = True
    make_dataset(facility.incoming, "alice", "first", {"a.txt": b"a"})
    assert Agent(facility).run(once=True).delivered
    share = facility.destination.with_name("storage-share")
    os.rename(facility.destination, share)      # the share goes away ...
    facility.destination.mkdir()                # ... and leaves its empty mount point
    files = {"img.tif": os.urandom(5000)}
    make_dataset(facility.incoming, "alice", "second", files)

    summary = Agent(facility).run(once=True)

    assert summary.retrying and not summary.delivered
    assert _files_under(facility.destination) == [], "written to the empty mount point"
    row = Journal(facility.journal_url).dataset(summary.retrying[0])
    assert row.state == J.QUEUED and MARKER_NAME in row.error and "not mounted" in row.error
    assert tree(Path(row.processing_path)) == files
    assert not list((facility.managed / "done" / "alice").glob("*second"))

    os.rmdir(facility.destination)
    os.rename(share, facility.destination)      # mounted again
    assert Agent(facility).run(once=True).delivered
    assert tree(facility.destination / "alice" / "second") == files


def test_a_real_unmounted_tmpfs_share_waits(facility, mount_tmpfs):
    mount = mount_tmpfs(facility.destination, "8m")
    (facility.destination / "alice").mkdir()
    facility.create_user_dirs = True
    make_dataset(facility.incoming, "alice", "first", {"a.txt": b"a"})
    assert Agent(facility).run(once=True).delivered
    mount.unmount()  # the mount point below still has the folder alice/, no marker
    assert not (facility.destination / MARKER_NAME).exists()
    make_dataset(facility.incoming, "alice", "second", {"b.txt": b"b"})

    summary = Agent(facility).run(once=True)

    assert summary.retrying and _files_under(facility.destination) == []


def test_marker_of_another_destination_waits_with_the_reason(facility):
    make_dataset(facility.incoming, "alice", "first", {"a.txt": b"a"})
    assert Agent(facility).run(once=True).delivered
    (facility.destination / MARKER_NAME).write_text(json.dumps({"id": "someone-else"}))
    make_dataset(facility.incoming, "alice", "second", {"b.txt": b"b"})

    summary = Agent(facility).run(once=True)

    row = Journal(facility.journal_url).dataset(summary.retrying[0])
    assert "someone-else" in row.error and "another share" in row.error
    assert not (facility.destination / "alice" / "second").exists()


def test_check_and_init_refuse_another_destination_unless_forced(facility):
    journal = Journal(facility.journal_url)
    facility.destination.mkdir(exist_ok=True)
    first = init_destination(facility.destination, journal, "pc")
    check_destination(facility.destination, journal, "pc")
    (facility.destination / MARKER_NAME).unlink()
    with pytest.raises(DestinationNotMountedError, match="missing"):
        check_destination(facility.destination, journal, "pc")
    (facility.destination / MARKER_NAME).write_text(json.dumps({"id": "other"}))
    with pytest.raises(DestinationNotMountedError, match="other"):
        init_destination(facility.destination, journal, "pc")
    forced = init_destination(facility.destination, journal, "pc", force=True)
    assert forced["id"] == "other" != first["id"]
    assert journal.get_setting("destination_id") == "other"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autotx_lib.cli", *args], capture_output=True,
                          text=True)


def test_destination_init_and_show_commands(facility, tmp_path):
    config = tmp_path / "autotx.toml"
    config.write_text(f'incoming = "{facility.incoming}"\nmanaged = "{facility.managed}"\n'
                      f'destination = "{facility.destination}"\nhost_alias = "pc1"\n')
    shown = _cli("destination", "show", "-c", str(config))
    assert shown.returncode == 1 and "no marker" in shown.stdout
    made = _cli("destination", "init", "-c", str(config))
    assert made.returncode == 0, made.stderr
    assert "made by pc1" in made.stdout and (facility.destination / MARKER_NAME).is_file()
    shown = _cli("destination", "show", "-c", str(config), "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["matches"] is True
    (facility.destination / MARKER_NAME).write_text(json.dumps({"id": "other"}))
    refused = _cli("destination", "init", "-c", str(config))
    assert refused.returncode == 2 and "--force" not in refused.stdout
    assert "another share" in refused.stderr and "Traceback" not in refused.stderr
