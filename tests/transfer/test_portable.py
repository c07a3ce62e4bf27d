"""The portable copy path (macOS, Windows): the same results without any Linux-only call.

``_platform.FORCE_PORTABLE`` makes every platform function take its fallback; the Linux
calls are then made to fail if anything still reaches them.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from autotx_lib.transfer import _platform as P
from autotx_lib.transfer import copy as C
from autotx_lib.transfer.agent import Agent
from autotx_lib.transfer.layout import SourceFile

from .conftest import make_dataset, tree


@pytest.fixture
def portable(monkeypatch):
    monkeypatch.setattr(P, "FORCE_PORTABLE", True)

    def linux_only(*args, **kwargs):
        raise AssertionError("a Linux-only call was made on the portable path")

    for name in ("preadv", "readv", "posix_fadvise", "fdatasync"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, linux_only)
    monkeypatch.setattr(P, "_libc", None)
    assert P.libc() is None


@pytest.mark.parametrize("mode", ["storage", "cache", "stream"])
def test_files_copy_and_verify_on_the_portable_path(tmp_path, portable, mode):
    big = os.urandom(9 * 1024 * 1024 + 17)  # several buffers, a read-back in ranges
    small = {f"s/{i}.bin": os.urandom(1000 + i) for i in range(40)}
    source = tmp_path / "src"
    (source / "s").mkdir(parents=True)
    (source / "big.raw").write_bytes(big)
    for relpath, content in small.items():
        (source / relpath).write_bytes(content)
    files = [SourceFile(p.relative_to(source).as_posix(), p.stat().st_size,
                        p.stat().st_mtime_ns) for p in sorted(source.rglob("*")) if p.is_file()]

    copied = C.copy_files(files, source, tmp_path / "dst", "xxh3_128", verify=mode)

    assert len(copied) == len(files)
    for result in copied:
        target = tmp_path / "dst" / result.relpath
        assert target.read_bytes() == (source / result.relpath).read_bytes()
        assert result.digest == C.hash_file(target, "xxh3_128")
    assert C.hash_stored_file(tmp_path / "dst" / "big.raw", "xxh3_128") == \
        C.hash_file(source / "big.raw", "xxh3_128")


def test_the_agent_delivers_on_the_portable_path(facility, portable):
    files = {"img.tif": os.urandom(3 * 1024 * 1024), "meta/a.xml": b"<OME/>"}
    make_dataset(facility.incoming, "alice", "exp", files)
    assert Agent(facility).run(once=True).delivered
    delivered = facility.destination / "alice" / "exp"
    assert tree(delivered) == files
    if shutil.which("xxhsum"):
        check = subprocess.run(["xxhsum", "-c", "autotx-manifest.xxh128"], cwd=delivered,
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
