"""The verified copy: hashes equal to reference implementations, change detection, manifests."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import blake3
import pytest
import xxhash

from autotx_lib.errors import SourceChangedError, UnreadableFileError
from autotx_lib.transfer import copy as C

REFERENCE = {
    "xxh3_128": lambda b: xxhash.xxh3_128(b).hexdigest(),
    "blake3": lambda b: blake3.blake3(b).hexdigest(),
    "sha256": lambda b: hashlib.sha256(b).hexdigest(),
    "md5": lambda b: hashlib.md5(b).hexdigest(),
}


@pytest.mark.parametrize("algorithm", sorted(REFERENCE))
@pytest.mark.parametrize("size", [0, 1, C.BUFFER_SIZE - 1, C.BUFFER_SIZE, 2 * C.BUFFER_SIZE + 7])
def test_copy_file_digest_matches_reference(tmp_path, algorithm, size):
    data = os.urandom(size)
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(data)
    seen = []
    result = C.copy_file(src, dst, algorithm, on_bytes=seen.append, relpath="src.bin")
    assert dst.read_bytes() == data
    assert result.digest == REFERENCE[algorithm](data)
    assert result.size == size and sum(seen) == size and result.copies == 1


def test_source_changed_during_copy_is_copied_again(tmp_path):
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(b"a" * (3 * C.BUFFER_SIZE))
    state = {"grown": False}

    def grow_once(_n):
        if not state["grown"]:
            state["grown"] = True
            with open(src, "ab") as handle:
                handle.write(b"tail")

    result = C.copy_file(src, dst, "xxh3_128", on_bytes=grow_once)
    assert result.copies == 2
    assert dst.read_bytes() == src.read_bytes()
    assert result.digest == REFERENCE["xxh3_128"](src.read_bytes())


def test_source_that_never_settles_raises(tmp_path):
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(b"a" * 1000)

    def always_grow(_n):
        with open(src, "ab") as handle:
            handle.write(b"x")

    with pytest.raises(SourceChangedError, match="changed during 3 copy attempts"):
        C.copy_file(src, dst, "xxh3_128", on_bytes=always_grow)


def test_missing_source_is_unreadable(tmp_path):
    with pytest.raises(UnreadableFileError, match="cannot read"):
        C.copy_file(tmp_path / "nope", tmp_path / "dst", "md5")


def test_manifest_round_trip_with_awkward_names(tmp_path):
    entries = [("a b.txt", "00ff"), ("back\\slash.txt", "11ee"), ("ünï/cødé.tif", "22dd")]
    path = C.write_manifest(tmp_path, entries, "sha256")
    assert path.name == "autotx-manifest.sha256"
    assert sorted(C.read_manifest(path)) == sorted(entries)
    assert C.algorithm_of_manifest(path) == "sha256"


def test_manifest_never_replaces_a_dataset_file(tmp_path):
    (tmp_path / "autotx-manifest.md5").write_text("user data")
    path = C.write_manifest(tmp_path, [("x", "00")], "md5")
    assert path.name == "autotx-manifest-1.md5"
    assert (tmp_path / "autotx-manifest.md5").read_text() == "user data"


TOOLS = {"xxh3_128": "xxhsum", "blake3": "b3sum", "sha256": "sha256sum", "md5": "md5sum"}


@pytest.mark.parametrize("algorithm", sorted(TOOLS))
def test_standard_tool_checks_the_manifest(tmp_path, algorithm):
    tool = shutil.which(TOOLS[algorithm])
    if tool is None:
        pytest.skip(f"{TOOLS[algorithm]} is not installed (./run-tests installs it with apt-get "
                    "when it runs as root)")
    files = {"a.txt": b"alpha", "sub/b b.bin": os.urandom(5000), "back\\slash": b"z"}
    results = []
    for relpath, content in files.items():
        (tmp_path / relpath).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relpath).write_bytes(content)
        results.append((relpath, REFERENCE[algorithm](content)))
    manifest = C.write_manifest(tmp_path, results, algorithm)
    check = subprocess.run([tool, "-c", manifest.name], cwd=tmp_path, capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    (tmp_path / "a.txt").write_bytes(b"tampered")
    check = subprocess.run([tool, "-c", manifest.name], cwd=tmp_path, capture_output=True,
                           text=True)
    assert check.returncode != 0


def test_verify_manifest_reports_missing_and_changed_files(tmp_path):
    (tmp_path / "a").write_bytes(b"1")
    (tmp_path / "b").write_bytes(b"2")
    manifest = C.write_manifest(tmp_path, [("a", REFERENCE["md5"](b"1")),
                                           ("b", REFERENCE["md5"](b"2"))], "md5")
    assert C.verify_manifest(tmp_path, manifest, "md5") == []
    (tmp_path / "a").write_bytes(b"changed")
    os.remove(tmp_path / "b")
    problems = C.verify_manifest(tmp_path, manifest, "md5")
    assert any(p.startswith("a: digest") for p in problems) and "b: missing" in problems


def test_copy_files_copies_a_tree_in_parallel(tmp_path):
    from autotx_lib.transfer.layout import list_dataset

    src = tmp_path / "src"
    expected = {}
    for i in range(50):
        path = src / f"d{i % 5}" / f"f{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        expected[f"d{i % 5}/f{i}.bin"] = os.urandom(i * 100)
        path.write_bytes(expected[f"d{i % 5}/f{i}.bin"])
    seen = []
    results = C.copy_files(list_dataset(src).files, src, tmp_path / "dst", "blake3", workers=4,
                           on_file=seen.append)
    assert len(results) == len(seen) == 50
    for relpath, content in expected.items():
        assert (tmp_path / "dst" / relpath).read_bytes() == content
    assert {r.relpath: r.digest for r in results} == {
        k: REFERENCE["blake3"](v) for k, v in expected.items()}


def test_sync_filesystem_runs_on_a_folder(tmp_path: Path):
    C.sync_filesystem(tmp_path)  # must not raise; durability itself cannot be observed here
    assert tmp_path.is_dir()


def test_small_files_travel_in_batches_and_large_ones_alone():
    from autotx_lib.transfer.layout import SourceFile

    small = [SourceFile(f"s{i}", 10_000, 0) for i in range(70)]
    large = SourceFile("big.raw", C.KERNEL_COPY_MIN, 0)
    batches = C._batches(small[:40] + [large] + small[40:])
    assert [large] in batches
    assert all(len(b) <= C.BATCH_FILES for b in batches)
    assert all(sum(f.size for f in b) <= C.BATCH_BYTES for b in batches if large not in b)
    assert sorted(f.relpath for b in batches for f in b) == sorted(
        f.relpath for f in small + [large])  # every file exactly once
