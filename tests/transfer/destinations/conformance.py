"""The conformance suite every destination transport runs (like restic's backend test suite).

Each test takes the ``dest`` fixture: a destination on an empty folder. A new transport
gets the whole suite by parametrizing ``dest`` over it (see conftest.py) and importing
these tests (test_conformance.py).
"""

from __future__ import annotations

import os

import pytest

from autotx_lib.errors import DestinationMissing, DestinationNameTaken
from autotx_lib.transfer.destinations import MARKER_NAME, Destination


def _write(dest: Destination, relpath: str, data: bytes) -> None:
    with dest.open_write(relpath) as out:
        out.write(data)


def test_written_file_reads_back_the_same(dest: Destination):
    data = os.urandom(3 * 1024 * 1024 + 17)  # several SMB writes, not a round size
    dest.make_tmp("tmp/ds/sub")
    _write(dest, "tmp/ds/sub/img.tif", data)
    with dest.open_read("tmp/ds/sub/img.tif") as stream:
        chunks = []
        while chunk := stream.read(1 << 20):
            chunks.append(chunk)
    assert b"".join(chunks) == data
    info = dest.stat("tmp/ds/sub/img.tif")
    assert info.size == len(data) and not info.is_dir and dest.stat("tmp/ds").is_dir
    assert dest.listdir("tmp/ds") == ["sub"] and dest.exists("tmp/ds/sub/img.tif")


def test_rewriting_a_file_truncates_it(dest: Destination):
    _write(dest, "a.bin", b"x" * 1000)
    _write(dest, "a.bin", b"short")
    assert dest.read_bytes("a.bin") == b"short"


def test_rename_moves_a_dataset_into_place(dest: Destination):
    dest.make_tmp(".autotx-tmp/alice/exp/z")
    _write(dest, ".autotx-tmp/alice/exp/z/a.txt", b"a")
    dest.make_dirs("alice")
    dest.rename(".autotx-tmp/alice/exp", "alice/exp")
    assert dest.read_bytes("alice/exp/z/a.txt") == b"a"
    assert not dest.exists(".autotx-tmp/alice/exp")


@pytest.mark.parametrize("taken", ["folder with a file", "empty folder", "file"])
def test_rename_never_overwrites(dest: Destination, taken: str):
    dest.make_tmp("tmp/exp")
    _write(dest, "tmp/exp/new.txt", b"new")
    if taken == "file":
        _write(dest, "exp", b"old")
    else:
        dest.make_dirs("exp")
        if taken == "folder with a file":
            _write(dest, "exp/old.txt", b"old")
    with pytest.raises(DestinationNameTaken):
        dest.rename("tmp/exp", "exp")
    assert dest.read_bytes("tmp/exp/new.txt") == b"new"
    if taken == "file":
        assert dest.read_bytes("exp") == b"old"
    else:
        assert dest.listdir("exp") == ([] if taken == "empty folder" else ["old.txt"])
    free = dest.free_name("", "exp")
    assert free == "exp_1"
    dest.rename("tmp/exp", free)
    assert dest.read_bytes("exp_1/new.txt") == b"new"


def test_missing_entries_raise_file_not_found(dest: Destination):
    with pytest.raises(FileNotFoundError):
        dest.stat("nope")
    with pytest.raises(FileNotFoundError):
        dest.open_read("nope.txt")
    with pytest.raises(FileNotFoundError):
        dest.rename("nope", "other")
    assert not dest.exists("nope")
    dest.remove_tree("nope")  # nothing to remove is fine


def test_remove_tree_removes_a_tmp_copy(dest: Destination):
    dest.make_tmp("tmp/exp/a/b")
    _write(dest, "tmp/exp/a/b/c.bin", b"c")
    _write(dest, "tmp/exp/top.bin", b"t")
    dest.remove_tree("tmp/exp")
    assert dest.listdir("tmp") == []
    _write(dest, "single", b"s")
    dest.remove_tree("single")
    assert not dest.exists("single")


def test_free_space_is_reported(dest: Destination):
    free = dest.free_bytes()
    assert isinstance(free, int) and free > 0


def test_check_writes_nothing_but_the_marker_it_is_asked_for(dest: Destination):
    assert dest.check() is None  # first use: reachable, writable, no marker yet
    assert dest.listdir() == []  # the writability probe left nothing behind
    marker = dest.write_marker("pc1")
    assert dest.check(marker["id"]) == marker and dest.read_marker() == marker
    assert dest.listdir() == [MARKER_NAME]
    # a second writer finds the first one's marker and keeps it
    assert dest.write_marker("pc2")["id"] == marker["id"]


def test_paths_cannot_leave_the_destination(dest: Destination):
    for bad in ("../x", "a/../../x", "/etc/passwd"):
        with pytest.raises(ValueError):
            dest.open_write(bad)


def test_a_vanished_destination_is_missing_not_an_os_error(dest: Destination,
                                                           vanish_destination):
    vanish_destination(dest)
    with pytest.raises(DestinationMissing) as info:
        dest.check()
    assert info.value.retryable
    with pytest.raises(DestinationMissing):
        dest.make_tmp("tmp/exp")


def test_parallel_writers_and_readers(dest: Destination):
    """The agent copies with several threads through one destination."""
    from concurrent.futures import ThreadPoolExecutor

    files = {f"f{i}.bin": os.urandom(2 * 1024 * 1024 + i) for i in range(8)}
    dest.make_tmp("tmp")

    def copy(name: str) -> bool:
        _write(dest, f"tmp/{name}", files[name])
        return dest.read_bytes(f"tmp/{name}") == files[name]

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(copy, files))
    assert dest.listdir("tmp") == sorted(files)
