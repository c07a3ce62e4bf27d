"""Names a destination would change or merge: ``A.tif`` beside ``a.tif`` on a share that
does not tell letter case apart (real Samba on loopback: one file overwrote the other and
both still "verified"), Windows-only rules on SMB. Such a dataset is quarantined untouched
before anything is written; a destination that can hold the names gets them as they are."""

from __future__ import annotations

import shutil
import subprocess
import unicodedata

import pytest

from autotx_lib import journal as J
from autotx_lib.config import Config
from autotx_lib.errors import UnsafePathError
from autotx_lib.journal import Journal
from autotx_lib.transfer._platform import filesystem_type, filesystem_type_in
from autotx_lib.transfer.agent import Agent
from autotx_lib.transfer.destinations.local import LocalDestination
from autotx_lib.transfer.names import case_clashes, check_storable, windows_name_problem

from ..conftest import make_dataset, tree
from ..test_agent import quarantined
from .conftest import open_smb
from .test_smb_primary import PASSWORD_ENV, on_server, smb_only, user_folder

CASE_CLASH = {"plate/A01.tif": b"upper" * 100, "plate/a01.tif": b"lower" * 100,
              "plate/b01.tif": b"other"}


# --- the rules --------------------------------------------------------------------------


def test_case_clashes_finds_files_and_folders_that_differ_only_in_case():
    assert case_clashes(["a/X.tif", "a/x.tif", "a/y.tif"]) == [("a/X.tif", "a/x.tif")]
    # a folder clash is reported once, however many files lie below it
    assert case_clashes(["Run/1.tif", "run/1.tif", "run/2.tif"]) == [("Run", "run")]
    assert case_clashes(["scan", "Scan/1.tif"]) == [("scan", "Scan")]  # a file and a folder
    nfd = unicodedata.normalize("NFD", "Zürich.tif")
    assert case_clashes(["Zürich.tif", nfd]) == [("Zürich.tif", nfd)]  # same name on macOS
    assert case_clashes(["a/1.tif", "b/1.tif", "A1.tif"]) == []


@pytest.mark.parametrize(("name", "words"), [
    ("x:y.tif", "':'"), ("what?.tif", "'?'"), ('say"hi".tif', "'\"'"), ("a|b", "'|'"),
    ("back\\slash", "'\\\\'"), ("tab\there", "control character"), ("trailing.", "end with"),
    ("trailing ", "end with"), ("CON", "device name"), ("nul.txt", "device name"),
    ("com1.tif", "device name"),
])
def test_windows_name_problem_names_the_rule(name, words):
    assert words in windows_name_problem(name)


@pytest.mark.parametrize("name", ["scan.tif", "CONSOLE.txt", "a.b.c", ".hidden", "Zürich"])
def test_windows_name_problem_accepts_ordinary_names(name):
    assert windows_name_problem(name) is None


def test_a_local_disk_here_is_case_sensitive_and_the_probe_leaves_nothing(tmp_path):
    destination = LocalDestination(tmp_path)
    assert destination.case_sensitive() is True  # no marker: a probe file, removed
    assert list(tmp_path.iterdir()) == []
    check_storable(destination, "storage", "exp", list(CASE_CLASH) + ["x:y.tif"])  # no error


def test_samba_is_case_insensitive_and_refuses_windows_names(samba, smb_env, smb_folder):
    with open_smb(samba, smb_env, path=smb_folder) as share:
        share.write_marker("test-pc")
        before = sorted((samba.data / smb_folder).iterdir())
        assert share.case_sensitive() is False  # the marker's name in capitals is found
        assert sorted((samba.data / smb_folder).iterdir()) == before  # nothing written
        assert share.name_problem("x:y.tif") and share.name_problem("ok.tif") is None
        with pytest.raises(UnsafePathError, match="'plate/A01.tif' only in letter case"):
            check_storable(share, "storage", "exp", list(CASE_CLASH))
        with pytest.raises(UnsafePathError, match="exp/run 1:2"):
            check_storable(share, "storage", "exp", ["ok.tif", "run 1:2/a.tif"])
        with pytest.raises(UnsafePathError, match="'\\?' is not allowed"):
            check_storable(share, "storage", "exp?", ["ok.tif"])  # the dataset's own name


# --- the agent ----------------------------------------------------------------------------


def deliver_to_share(samba, smb_folder, tmp_path, monkeypatch, files):
    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    user_folder(samba, smb_folder)
    config = smb_only(tmp_path, samba.url(path=smb_folder))
    make_dataset(config.incoming, "alice", "exp", files)
    return config, Agent(config).run(once=True)


def test_a_case_clash_bound_for_a_share_is_quarantined_untouched(samba, smb_folder, tmp_path,
                                                                 monkeypatch):
    config, summary = deliver_to_share(samba, smb_folder, tmp_path, monkeypatch, CASE_CLASH)
    assert summary.failed and not summary.delivered
    folder, reason = quarantined(config, "alice")
    assert tree(folder) == CASE_CLASH  # both files, as they were
    assert "plate/a01.tif" in reason and "only in letter case" in reason
    assert Journal(config.journal_url).dataset(summary.failed[0]).state == J.ERROR
    share = on_server(samba, smb_folder)
    assert not list(share.rglob("*.tif"))  # nothing was written, not even to tmp


def test_a_name_windows_refuses_bound_for_a_share_is_quarantined(samba, smb_folder, tmp_path,
                                                                 monkeypatch):
    files = {"ok.tif": b"ok", "t=0:00:05.tif": b"time"}
    config, summary = deliver_to_share(samba, smb_folder, tmp_path, monkeypatch, files)
    assert summary.failed and not summary.delivered
    folder, reason = quarantined(config, "alice")
    assert tree(folder) == files
    assert "t=0:00:05.tif" in reason and "':' is not allowed in a Windows file name" in reason


def test_a_case_sensitive_folder_takes_both_names(facility):
    files = dict(CASE_CLASH, **{"t=0:00:05.tif": b"time"})
    make_dataset(facility.incoming, "alice", "exp", files)
    summary = Agent(facility).run(once=True)
    assert summary.delivered and summary.ok
    assert tree(facility.destination / "alice" / "exp") == files


def folder_and_share(tmp_path, samba, smb_folder, monkeypatch, required: bool):
    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    user_folder(samba, smb_folder)
    (tmp_path / "storage" / "alice").mkdir(parents=True)
    config = Config(incoming=tmp_path / "incoming", managed=tmp_path / "managed",
                    destinations=[{"name": "storage", "url": str(tmp_path / "storage")},
                                  {"name": "backup", "url": samba.url(path=smb_folder),
                                   "password_env": PASSWORD_ENV, "required": required}],
                    readiness={"quiet_seconds": 0}, host_alias="test-pc",
                    gate={"max_cpu_percent": 100, "min_available_memory_mb": 0})
    make_dataset(config.incoming, "alice", "exp", CASE_CLASH)
    return config, Agent(config).run(once=True)


def test_an_optional_share_that_would_merge_names_is_left_out_and_the_folder_delivered(
        samba, smb_folder, tmp_path, monkeypatch):
    config, summary = folder_and_share(tmp_path, samba, smb_folder, monkeypatch, False)
    assert summary.delivered and summary.ok
    assert tree(tmp_path / "storage" / "alice" / "exp") == CASE_CLASH
    journal = Journal(config.journal_url)
    backup = next(d for d in journal.deliveries_of(summary.delivered[0])
                  if d.destination == "backup")
    assert backup.state == "pending" and "only in letter case" in backup.error
    failed = [e for e in journal.recent_events(20) if e[4] == "catch-up-failed"]
    assert len(failed) == 1 and "plate/a01.tif" in failed[0][5]
    assert not list(on_server(samba, smb_folder).rglob("*.tif"))


def test_a_required_share_that_would_merge_names_quarantines_the_dataset(
        samba, smb_folder, tmp_path, monkeypatch):
    config, summary = folder_and_share(tmp_path, samba, smb_folder, monkeypatch, True)
    assert summary.failed and not summary.delivered
    folder, reason = quarantined(config, "alice")
    assert tree(folder) == CASE_CLASH and "destination backup" in reason
    assert not (tmp_path / "storage" / "alice" / "exp").exists()


# --- a folder on a Windows file system (exFAT on a loop device) ---------------------------


def test_filesystem_type_agrees_with_findmnt(tmp_path):
    if shutil.which("findmnt") is None:
        pytest.skip("findmnt (util-linux) is not installed: no reference to compare with")
    reference = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "--target", str(tmp_path)],
                               capture_output=True, text=True, check=True).stdout.strip()
    assert filesystem_type(tmp_path) == reference


def test_filesystem_type_reads_escaped_and_stacked_mounts():
    mounts = ("/dev/vda / ext4 rw 0 0\n"
              "//nas/lab /mnt/lab\\040share cifs rw 0 0\n"
              "tmpfs /mnt/lab\\040share/tmp tmpfs rw 0 0\n"
              "/dev/loop0 /media/usb vfat rw 0 0\n/dev/loop1 /media/usb exfat rw 0 0\n")
    assert filesystem_type_in("/mnt/lab share/alice/exp", mounts) == "cifs"
    assert filesystem_type_in("/mnt/lab share/tmp/x", mounts) == "tmpfs"
    assert filesystem_type_in("/mnt/lab sharefoo", mounts) == "ext4"
    assert filesystem_type_in("/media/usb/data", mounts) == "exfat"  # mounted over


@pytest.fixture
def windows_folder(tmp_path):
    """A folder on a small exFAT file system (a loop device, mounted through FUSE): Windows'
    naming rules and no letter case, as on a USB disk or a mounted Windows share."""
    for tool in ("mkfs.exfat", "mount.exfat-fuse", "losetup"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install exfatprogs exfat-fuse); "
                        "this test needs a real exFAT file system")
    image, point = tmp_path / "exfat.img", tmp_path / "exfat"
    with open(image, "wb") as handle:
        handle.truncate(32 * 1024 * 1024)
    subprocess.run(["mkfs.exfat", str(image)], check=True, capture_output=True)
    point.mkdir()
    attached = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True,
                              text=True)
    if attached.returncode != 0:
        pytest.skip(f"no loop device here ({attached.stderr.strip()}); this test needs root")
    device = attached.stdout.strip()
    try:
        mounted = subprocess.run(["mount.exfat-fuse", device, str(point)], capture_output=True,
                                 text=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount exFAT through FUSE here ({mounted.stderr.strip()})")
        try:
            (point / "alice").mkdir()
            yield point
        finally:
            subprocess.run(["umount", str(point)], check=False)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def deliver_to_folder(tmp_path, folder, files):
    config = Config(incoming=tmp_path / "incoming", managed=tmp_path / "managed",
                    destination=folder, readiness={"quiet_seconds": 0}, host_alias="test-pc",
                    gate={"max_cpu_percent": 100, "min_available_memory_mb": 0})
    make_dataset(config.incoming, "alice", "exp", files)
    return config, Agent(config).run(once=True)


def test_an_exfat_folder_takes_ordinary_names(tmp_path, windows_folder):
    files = {"plate/A01.tif": b"a" * 5000, "plate/B01.tif": b"b" * 5000}
    config, summary = deliver_to_folder(tmp_path, windows_folder, files)
    assert summary.delivered and summary.ok
    assert tree(windows_folder / "alice" / "exp") == files


@pytest.mark.parametrize(("files", "words"), [
    (CASE_CLASH, "only in letter case"),
    ({"ok.tif": b"ok", "t=0:05.tif": b"t"}, "':' is not allowed in a Windows file name (the "
                                            "folder is on a Windows file system)"),
], ids=["case-clash", "colon"])
def test_names_an_exfat_folder_would_merge_or_refuse_quarantine_the_dataset(
        tmp_path, windows_folder, files, words):
    config, summary = deliver_to_folder(tmp_path, windows_folder, files)
    assert summary.failed and not summary.delivered
    folder, reason = quarantined(config, "alice")
    assert tree(folder) == files and words in reason
    assert not (windows_folder / "alice" / "exp").exists()
