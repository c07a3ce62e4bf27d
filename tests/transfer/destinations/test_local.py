"""The local transport classifies its errors by errno (a real tmpfs for full and read-only)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from autotx_lib.errors import (
    DestinationFullError,
    DestinationMissing,
    DestinationPermission,
    DestinationReadOnly,
)
from autotx_lib.transfer.destinations import LocalDestination


@pytest.mark.parametrize(("code", "kind"), [
    (errno.ENOSPC, DestinationFullError), (errno.EDQUOT, DestinationFullError),
    (errno.EROFS, DestinationReadOnly), (errno.EACCES, DestinationPermission),
    (errno.EPERM, DestinationPermission), (errno.ENOTCONN, DestinationMissing),
    (errno.ESTALE, DestinationMissing)])
def test_local_errors_are_classified_by_errno(tmp_path, code, kind):
    error = LocalDestination(tmp_path).classify(OSError(code, "x"), "a/b")
    assert type(error) is kind


def test_local_missing_entry_stays_file_not_found_but_a_missing_root_is_missing(tmp_path):
    dest = LocalDestination(tmp_path)
    error = FileNotFoundError(errno.ENOENT, "x")
    assert dest.classify(error, "a") is error
    assert isinstance(LocalDestination(tmp_path / "gone").classify(error, "a"),
                      DestinationMissing)


def test_local_read_only_and_full_filesystems(tmp_path, mount_tmpfs):
    mount = mount_tmpfs(tmp_path / "small", "1m")
    dest = LocalDestination(Path(mount.path))
    with pytest.raises(DestinationFullError), dest.open_write("big.bin") as out:
        out.write(b"x" * 2 * 1024 * 1024)
    dest.remove_tree("big.bin")
    mount.remount("ro")
    with pytest.raises(DestinationReadOnly):
        dest.check()
    with pytest.raises(DestinationReadOnly):
        dest.open_write("a.txt")


def test_marker_functions_take_a_path_or_a_destination(tmp_path):
    from autotx_lib.journal import Journal
    from autotx_lib.transfer.destination import check_destination, init_destination, read_marker

    journal = Journal(f"sqlite:///{tmp_path / 'journal.db'}")
    root = tmp_path / "store"
    assert read_marker(root) is None  # missing: no marker, no error
    with pytest.raises(DestinationMissing):
        check_destination(root, journal, "pc")
    root.mkdir()
    marker = init_destination(LocalDestination(root), journal, "pc")
    assert read_marker(root) == marker == read_marker(LocalDestination(root))
    check_destination(root, journal, "pc")
    journal.close()
