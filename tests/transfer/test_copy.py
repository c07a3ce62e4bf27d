"""The verified copy: hashes equal to reference implementations, change detection, the
verification modes (what the storage holds vs the page cache), manifests."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import mmap
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import blake3
import pytest
import xxhash

from autotx_lib.config import Config
from autotx_lib.errors import (
    DestinationError,
    DestinationFullError,
    SourceChangedError,
    UnreadableFileError,
    UnsafePathError,
    VerificationError,
)
from autotx_lib.transfer import copy as C
from autotx_lib.transfer.layout import SourceFile, check_name, list_dataset

REFERENCE = {
    "xxh3_128": lambda b: xxhash.xxh3_128(b).hexdigest(),
    "blake3": lambda b: blake3.blake3(b).hexdigest(),
    "sha256": lambda b: hashlib.sha256(b).hexdigest(),
    "md5": lambda b: hashlib.md5(b).hexdigest(),
}


@pytest.mark.parametrize("algorithm", sorted(REFERENCE))
@pytest.mark.parametrize("size", [0, 1, C.BUFFER_SIZE - 1, C.BUFFER_SIZE, 2 * C.BUFFER_SIZE + 7,
                                  C.WRITEBACK_STEP + 5])
@pytest.mark.parametrize("verify", C.VERIFY_MODES)
def test_copy_file_digest_matches_reference(tmp_path, algorithm, size, verify):
    data = os.urandom(size)
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(data)
    seen = []
    result = C.copy_file(src, dst, algorithm, verify=verify, on_bytes=seen.append,
                         relpath="src.bin")
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


# --- a source truncated while it is hashed ---------------------------------------------

CUT_WHILE_HASHING = """
import os, sys
from pathlib import Path
from autotx_lib.errors import SourceChangedError
from autotx_lib.transfer import copy as C

src, dst, verify, how = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
real_new_hasher, cuts = C.new_hasher, []


class CuttingHasher:  # the real hasher; the acquisition truncates the file as it is hashed
    def __init__(self, algorithm):
        self.real = real_new_hasher(algorithm)

    def update(self, data):
        if how == "always" or not cuts:
            cuts.append(os.stat(src).st_size)
            os.truncate(src, max(cuts[-1] // 2, 4096))
        self.real.update(data)

    def hexdigest(self):
        return self.real.hexdigest()


C.new_hasher = CuttingHasher
try:
    result = C.copy_file(src, dst, "xxh3_128", verify=verify)
    print("copied", result.copies, result.size, result.digest)
except SourceChangedError as error:
    print("changed", error)
"""


@pytest.mark.parametrize("verify", C.VERIFY_MODES)
@pytest.mark.parametrize("how", ["once", "always"])
def test_source_truncated_while_hashed_is_a_changed_source_not_a_crash(tmp_path, verify, how):
    # Hashing through mmap died here with SIGBUS (exit -7), taking the agent with it.
    src, dst = tmp_path / "src.raw", tmp_path / "dst.raw"
    src.write_bytes(os.urandom(8 * 1024 * 1024))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", CUT_WHILE_HASHING, str(src), str(dst), verify,
                           how], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    if how == "once":  # copied again, whole, once the file held still
        assert done.stdout.split()[:3] == ["copied", "2", str(src.stat().st_size)]
        assert dst.read_bytes() == src.read_bytes()
        assert done.stdout.split()[3] == REFERENCE["xxh3_128"](src.read_bytes())
    else:
        assert done.stdout.startswith("changed") and "changed during 3 copy attempts" in \
            done.stdout


# --- verification modes ---------------------------------------------------------------


def test_verify_mode_names_and_the_old_alias(tmp_path):
    assert C.verify_mode("readback") == "storage"
    assert [C.verify_mode(m) for m in C.VERIFY_MODES] == list(C.VERIFY_MODES)
    with pytest.raises(ValueError, match="use one of storage, cache, stream"):
        C.verify_mode("paranoid")
    folders = {"incoming": tmp_path / "i", "managed": tmp_path / "m", "destination": tmp_path}
    assert Config(**folders).verify.mode == "storage"
    assert Config(**folders, verify={"mode": "readback"}).verify.mode == "storage"
    assert Config(**folders, verify={"mode": "cache"}).verify.mode == "cache"
    with pytest.raises(ValueError, match="storage"):
        Config(**folders, verify={"mode": "paranoid"})


def cached_pages(path: Path, offset: int, length: int) -> int:
    """Pages of ``path`` in ``[offset, offset + length)`` that sit in the page cache (mincore
    on a mapping that is never touched, so asking does not load them)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    fd = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, offset)
        assert address not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        pages = (length + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vector = ctypes.create_string_buffer(pages)
        try:
            assert libc.mincore(address, length, vector) == 0, os.strerror(ctypes.get_errno())
        finally:
            libc.munmap(address, length)
        return sum(byte & 1 for byte in vector.raw)
    finally:
        os.close(fd)


def need_a_disk(folder: Path) -> None:
    """Skip on a filesystem in memory: its pages are the storage, they cannot be dropped."""
    best = ("", "")
    for line in Path("/proc/mounts").read_text().splitlines():
        point, fstype = line.split()[1:3]
        if (str(folder) + "/").startswith(point.rstrip("/") + "/") and len(point) >= len(best[0]):
            best = (point, fstype)
    if best[1] in {"tmpfs", "ramfs"}:
        pytest.skip(f"{folder} is on {best[1]}: its pages are the storage and cannot be dropped; "
                    "run the tests with the temporary folder on a disk")


def resident_pages(path: Path) -> int:
    """Pages of ``path`` in the page cache."""
    return cached_pages(path, 0, path.stat().st_size)


def test_drop_cached_pages_empties_the_cache_of_a_flushed_file(tmp_path):
    need_a_disk(tmp_path)
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(2 * 1024 * 1024))
    assert resident_pages(path) == 512  # just written: all in the cache
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        C.drop_cached_pages(fd)
    finally:
        os.close(fd)
    assert resident_pages(path) == 0


@pytest.mark.parametrize("verify", C.VERIFY_MODES)
def test_storage_mode_reads_each_file_back_after_dropping_its_pages(tmp_path, monkeypatch,
                                                                   verify):
    need_a_disk(tmp_path)
    dropped: dict[str, int] = {}
    real_drop = C.drop_cached_pages

    def watched_drop(fd: int) -> None:  # the real call; then ask the kernel what is cached
        real_drop(fd)
        path = os.readlink(f"/proc/self/fd/{fd}")
        dropped[path] = resident_pages(Path(path))

    monkeypatch.setattr(C, "drop_cached_pages", watched_drop)
    src, dst = tmp_path / "src", tmp_path / "dst"
    sizes = {"a/small1": 5000, "a/small2": 70_000, "b/large.raw": 3 * C.LARGE_FILE + 11}
    for relpath, size in sizes.items():
        (src / relpath).parent.mkdir(parents=True, exist_ok=True)
        (src / relpath).write_bytes(os.urandom(size))
    results = C.copy_files(list_dataset(src).files, src, dst, "xxh3_128", verify=verify)
    assert {r.relpath for r in results} == set(sizes)
    if verify == "storage":  # every written file, and nothing else, was dropped from the cache
        assert dropped == {str(dst / relpath): 0 for relpath in sizes}
    else:
        assert dropped == {}


def test_a_large_file_is_read_back_from_storage_while_it_is_copied(tmp_path, monkeypatch):
    need_a_disk(tmp_path)
    size = 3 * C.WRITEBACK_STEP + 12345
    src, dst = tmp_path / "src.raw", tmp_path / "dst.raw"
    src.write_bytes(os.urandom(size))
    copied = [0]
    drops: list[tuple[int, int, int, int]] = []  # offset, length, pages left, bytes copied
    real_drop = C.drop_cached_pages

    def watched_drop(fd: int, offset: int = 0, length: int = 0) -> None:
        real_drop(fd, offset, length)
        span = length or os.fstat(fd).st_size
        drops.append((offset, length, cached_pages(dst, offset, span), copied[0]))

    monkeypatch.setattr(C, "drop_cached_pages", watched_drop)
    result = C.copy_file(src, dst, "xxh3_128", verify="storage",
                         on_bytes=lambda n: copied.__setitem__(0, copied[0] + n))
    assert result.digest == REFERENCE["xxh3_128"](src.read_bytes()) and result.copies == 1
    ranges = [d for d in drops if d[1]]
    # step after step, while the copy went on, each range written back was dropped ...
    assert [(o, n) for o, n, _, _ in ranges] == [(0, C.WRITEBACK_STEP),
                                                 (C.WRITEBACK_STEP, C.WRITEBACK_STEP)]
    assert all(done < size for _, _, _, done in ranges)
    # ... so that reading it back went to the disk; then the rest, after the last write
    assert all(left == 0 for _, _, left, _ in drops)
    assert drops[-1][:2] == (0, 0) and drops[-1][3] == size


@pytest.fixture
def ext4_image(tmp_path):
    """A small ext4 filesystem on a loop device: its raw bytes can be changed under the
    page cache, as a failing disk or another writer on a server would."""
    for tool in ("mkfs.ext4", "filefrag", "mount"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed; this test needs a real ext4 image")
    image, point = tmp_path / "ext4.img", tmp_path / "mnt"
    with open(image, "wb") as handle:
        handle.truncate(16 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", str(image)], check=True, capture_output=True)
    point.mkdir()
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot loop-mount an ext4 image here ({mounted.stderr.strip()}); "
                    "this test needs root and loop devices")
    try:
        yield image, point
    finally:
        subprocess.run(["umount", str(point)], check=False)


def first_block_on_disk(path: Path) -> int:
    """The byte offset, in the filesystem image, of the file's first block (filefrag)."""
    out = subprocess.run(["filefrag", "-v", "-b4096", str(path)], capture_output=True,
                         text=True, check=True).stdout
    match = re.search(r"^\s*0:\s+0\.\.\s*\d+:\s+(\d+)\.\.", out, re.MULTILINE)
    assert match, out
    return int(match[1]) * 4096


def test_storage_readback_sees_what_the_disk_holds_not_the_cache(tmp_path, ext4_image):
    image, point = ext4_image
    src, dst = tmp_path / "src.raw", point / "dst.raw"
    data = os.urandom(256 * 1024)
    src.write_bytes(data)
    copied = C.copy_file(src, dst, "xxh3_128", verify="storage")
    assert copied.digest == REFERENCE["xxh3_128"](data)
    # the disk now loses bytes under the cached pages (a bad sector, a server-side change)
    hash_file_before = C.hash_file(dst, "xxh3_128")
    with open(image, "r+b") as raw:
        raw.seek(first_block_on_disk(dst))
        raw.write(b"\0" * 512)
        raw.flush()
        os.fsync(raw.fileno())
    damaged = b"\0" * 512 + data[512:]
    assert hash_file_before == C.hash_file(dst, "xxh3_128") == copied.digest  # cache: fine
    assert C.hash_stored_file(dst, "xxh3_128") == REFERENCE["xxh3_128"](damaged)


def test_a_stored_file_that_differs_is_copied_again(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"payload")
    first = C.copy_file(src, dst, "md5", verify="stream")
    first = C._Copy(first.size, first.mtime_ns, first.digest, first.copies)
    again = []

    def copy_again():
        again.append(1)
        return C._copy_settled(src, [dst], "md5", "storage", None, 3, None)

    checked = C._check_stored(first, ["not-the-digest"], [dst], "md5", copy_again)
    assert again == [1] and checked.copies == 2 and checked.digest == first.digest
    with pytest.raises(VerificationError, match="verification failed"):
        C._check_stored(first, ["x"], [dst], "md5", lambda: C._Copy(7, 0, "wrong", 1))


# --- manifests ------------------------------------------------------------------------


def test_manifest_round_trip_with_awkward_names(tmp_path):
    entries = [("a b.txt", "00ff"), ("back\\slash.txt", "11ee"), ("ünï/cødé.tif", "22dd"),
               ("\\lead", "33cc"), ("line\u2028sep", "44bb")]
    path = C.write_manifest(tmp_path, entries, "sha256")
    assert path.name == "autotx-manifest.sha256"
    assert sorted(C.read_manifest(path)) == sorted(entries)
    assert C.algorithm_of_manifest(path) == "sha256"
    assert "\\\\" not in path.read_text()  # names as they are: no escaping


def test_old_escaped_manifest_lines_are_still_read(tmp_path):
    path = tmp_path / "autotx-manifest.md5"
    path.write_text("\\11ee  back\\\\slash.txt\n00ff  plain\n")
    assert C.read_manifest(path) == [("back\\slash.txt", "11ee"), ("plain", "00ff")]


def test_a_name_with_a_line_break_cannot_enter_a_manifest(tmp_path):
    with pytest.raises(UnsafePathError, match="line break"):
        C.write_manifest(tmp_path, [("two\nlines", "00")], "md5")
    assert os.listdir(tmp_path) == []


def test_backslash_names_are_accepted_and_listed(tmp_path):
    check_name("back\\slash.tif")
    (tmp_path / "back\\slash.tif").write_bytes(b"x")
    assert [f.relpath for f in list_dataset(tmp_path).files] == ["back\\slash.tif"]


def manifests_in(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if "autotx-manifest" in n)


def test_manifest_never_replaces_a_dataset_file_and_stays_one(tmp_path):
    (tmp_path / "autotx-manifest.md5").write_text("user data")
    entries = [("x", "00"), ("autotx-manifest.md5", REFERENCE["md5"](b"user data"))]
    path = C.write_manifest(tmp_path, entries, "md5")
    assert path.name == "autotx-manifest-1.md5"
    again = C.write_manifest(tmp_path, entries, "md5", taken={"x", "autotx-manifest.md5"})
    assert again == path  # a retry writes the same name: still exactly one manifest
    assert manifests_in(tmp_path) == ["autotx-manifest-1.md5", "autotx-manifest.md5"]
    assert (tmp_path / "autotx-manifest.md5").read_text() == "user data"
    assert sorted(C.read_manifest(path)) == sorted(entries)


def test_a_dataset_file_with_the_manifests_temporary_name_is_never_touched(tmp_path):
    (tmp_path / ".autotx-manifest.md5.tmp").write_text("user data")
    path = C.write_manifest(tmp_path, [(".autotx-manifest.md5.tmp", "00")], "md5")
    assert path.name == "autotx-manifest-1.md5"
    assert (tmp_path / ".autotx-manifest.md5.tmp").read_text() == "user data"


def test_rewriting_leaves_exactly_one_complete_manifest(tmp_path):
    # what a crash (between writing and recording it) or an older version left behind
    (tmp_path / "a").write_bytes(b"1")
    (tmp_path / "autotx-manifest.md5").write_text("c4ca4238a0b923820dcc509a6f75849b  ")  # torn
    (tmp_path / "autotx-manifest-1.md5").write_text("from an earlier attempt\n")
    (tmp_path / ".autotx-manifest.md5.tmp").write_text("half a")
    path = C.write_manifest(tmp_path, [("a", REFERENCE["md5"](b"1"))], "md5")
    assert manifests_in(tmp_path) == ["autotx-manifest.md5"] == [path.name]
    assert path.read_text() == f"{REFERENCE['md5'](b'1')}  a\n"
    assert C.verify_manifest(tmp_path, path, "md5") == []


def test_a_full_disk_never_leaves_a_torn_manifest(tmp_path, mount_tmpfs):
    folder = mount_tmpfs(tmp_path / "small", size="256k").path / "dataset"
    folder.mkdir()
    first = C.write_manifest(folder, [("a", "00" * 16)], "md5")
    complete = first.read_text()
    fd = os.open(tmp_path / "small" / "filler", os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk ...
        with contextlib.suppress(OSError):
            while os.write(fd, b"\0" * 4096):
                pass
        os.ftruncate(fd, os.lseek(fd, 0, os.SEEK_CUR) - 8192)  # ... but for a few lines
    finally:
        os.close(fd)
    entries = [(f"plate/well_{i:05d}.tif", "ff" * 16) for i in range(4000)]  # ~200 kB
    with pytest.raises(DestinationFullError, match="no space left"):
        C.write_manifest(folder, entries, "md5")
    assert manifests_in(folder) == ["autotx-manifest.md5"]
    assert first.read_text() == complete  # the previous one, whole


TOOLS = {"xxh3_128": "xxhsum", "blake3": "b3sum", "sha256": "sha256sum", "md5": "md5sum"}


def tool_version(tool: str) -> str:
    done = subprocess.run([tool, "--version"], capture_output=True, text=True)
    return (done.stdout or done.stderr).splitlines()[0]


@pytest.mark.parametrize("algorithm", sorted(TOOLS))
def test_standard_tool_checks_the_whole_manifest(tmp_path, algorithm):
    tool = shutil.which(TOOLS[algorithm])
    if tool is None:
        pytest.skip(f"{TOOLS[algorithm]} is not installed (./run-tests installs it with apt-get "
                    "when it runs as root)")
    files = {"a.txt": b"alpha", "sub/b b.bin": os.urandom(5000), "back\\slash": b"z",
             "\\lead": b"y", "end\\": b"x", "x\\\\y\\n": b"w", " space": b"v", "*star": b"u"}
    results = []
    for relpath, content in files.items():
        (tmp_path / relpath).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relpath).write_bytes(content)
        results.append((relpath, REFERENCE[algorithm](content)))
    manifest = C.write_manifest(tmp_path, results, algorithm)
    check = subprocess.run([tool, "-c", manifest.name], cwd=tmp_path, capture_output=True,
                           text=True)
    report = f"{tool_version(tool)}: {check.stdout}{check.stderr}"
    assert check.returncode == 0, report
    assert check.stdout.count(": OK") == len(files), report  # every line read, none skipped
    for damaged in ("a.txt", "back\\slash"):  # xxhsum 0.8 skipped escaped lines, exit 0
        (tmp_path / damaged).write_bytes(b"tampered")
        check = subprocess.run([tool, "-c", manifest.name], cwd=tmp_path, capture_output=True,
                               text=True)
        assert check.returncode != 0, f"{tool_version(tool)} missed damage to {damaged!r}"
        (tmp_path / damaged).write_bytes(files[damaged])


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


@pytest.mark.parametrize("names", [["top.bin"], ["top.bin", "a/b/deep.bin"]])
def test_copy_files_makes_missing_roots_and_folders(tmp_path, names):
    src = tmp_path / "src"
    expected = {name: name.encode() * 10 for name in names}
    for relpath, content in expected.items():
        (src / relpath).parent.mkdir(parents=True, exist_ok=True)
        (src / relpath).write_bytes(content)
    roots = [tmp_path / "one" / "tmp", tmp_path / "two"]  # neither exists yet
    results = C.copy_files(list_dataset(src).files, src, roots, "md5", verify="cache")
    assert sorted(r.relpath for r in results) == sorted(expected)
    for root in roots:
        assert {relpath: (root / relpath).read_bytes() for relpath in expected} == expected


def test_sync_filesystem_runs_on_a_folder(tmp_path: Path):
    C.sync_filesystem(tmp_path)  # must not raise; durability itself cannot be observed here
    assert tmp_path.is_dir()


def test_small_files_travel_in_batches_and_large_ones_alone():
    small = [SourceFile(f"s{i}", 10_000, 0) for i in range(70)]
    large = SourceFile("big.raw", C.LARGE_FILE, 0)
    batches = list(C._batches(small[:40] + [large] + small[40:]))
    assert [large] in batches
    assert all(len(b) <= C.BATCH_FILES for b in batches)
    assert all(sum(f.size for f in b) <= C.BATCH_BYTES for b in batches if large not in b)
    assert sorted(f.relpath for b in batches for f in b) == sorted(
        f.relpath for f in small + [large])  # every file exactly once


def test_batches_take_their_size_limit_when_made():
    """Under a bandwidth cap a batch holds what the cap passes in about 0.1 s; a cap set
    during the copy bounds the batches made after it."""
    files = [SourceFile(f"s{i:03d}", 32 * 1024, 0) for i in range(200)]
    limits = iter([C.BATCH_BYTES, 256 * 1024, 256 * 1024, 256 * 1024] + [128 * 1024] * 200)
    batches = list(C._batches(files, lambda: next(limits)))
    assert [len(b) for b in batches[:4]] == [C.BATCH_FILES, 8, 8, 8]
    assert {len(b) for b in batches[4:-1]} == {4}
    assert [f for b in batches for f in b] == files  # in order, every file once


def test_batches_stay_within_the_open_files_limit():
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < 0:
        soft = 1 << 20
    assert C._batch_files(4) == min(C.BATCH_FILES, soft // 8)
    for open_at_once in (8, 64 * 2 * 3, 10 ** 9):  # e.g. 64 workers, 3 destinations
        assert 1 <= C._batch_files(open_at_once) * open_at_once <= max(soft // 2, open_at_once)
    small = [SourceFile(f"s{i}", 10, 0) for i in range(10)]
    assert [len(b) for b in C._batches(small, batch_files=3)] == [3, 3, 3, 1]


def test_copy_files_sizes_batches_by_the_throttle(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"f{i:02d}.bin").write_bytes(os.urandom(32 * 1024))
    sizes = []
    original = C._copy_batch
    monkeypatch.setattr(C, "_copy_batch", lambda batch, job: (sizes.append(len(batch)),
                                                             original(batch, job))[1])

    class Capped:  # a bandwidth cap passing 128 KiB per 0.1 s, never pausing
        def throttle(self, copied: int) -> None:
            pass

        def chunk_size(self, default: int) -> int:
            return min(default, 128 * 1024)

    results = C.copy_files(list_dataset(src).files, src, tmp_path / "dst", "md5",
                           verify="storage", throttle=Capped())
    assert len(results) == 40 and sizes == [4] * 10
    sizes.clear()
    C.copy_files(list_dataset(src).files, src, tmp_path / "again", "md5", verify="storage")
    assert sizes[0] == min(40, C._batch_files(4 * 2)) and sum(sizes) == 40  # uncapped


# --- several destinations: read and hash once, write and verify each ------------------------

@pytest.mark.parametrize("mode", ["storage", "cache", "stream"])
def test_copy_files_to_two_roots_reads_each_source_once(tmp_path, mode, monkeypatch):
    src = tmp_path / "src"
    files = {"a.bin": os.urandom(3 * C.LARGE_FILE), "sub/b.txt": b"small", "c.raw": b""}
    for relpath, data in files.items():
        (src / relpath).parent.mkdir(parents=True, exist_ok=True)
        (src / relpath).write_bytes(data)
    listed = [SourceFile(r, len(d), (src / r).stat().st_mtime_ns) for r, d in files.items()]
    opened: list[str] = []
    real_open = os.open

    def counting_open(path, flags, *args):
        if str(path).startswith(str(src)):
            opened.append(str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(C.os, "open", counting_open)
    roots = [tmp_path / "one", tmp_path / "two"]
    results = C.copy_files(listed, src, roots, "xxh3_128", verify=mode, workers=2)
    assert sorted(opened) == sorted(str(src / r) for r in files)  # each source opened once
    assert {r.relpath: r.digest for r in results} == {
        r: REFERENCE["xxh3_128"](d) for r, d in files.items()}
    for root in roots:
        assert {r: (root / r).read_bytes() for r in files} == files


def test_a_write_error_names_the_destination_that_failed(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"x" * 4096)
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    (bad / "a.bin").mkdir()  # the file cannot be created there
    with pytest.raises(DestinationError) as caught:
        C.copy_file(src / "a.bin", [good / "a.bin", bad / "a.bin"], "md5")
    assert caught.value.destination.startswith(str(bad))
    assert (src / "a.bin").read_bytes() == b"x" * 4096  # the source is untouched


def test_a_copy_that_differs_at_one_of_two_destinations_is_refused(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.write_bytes(b"payload" * 1000)
    one, two = tmp_path / "one", tmp_path / "two"
    real = C.hash_stored_files

    def second_is_damaged(paths, algorithm):
        digests = real(paths, algorithm)
        return [d if Path(p) != two else "0" * 32 for p, d in zip(paths, digests, strict=True)]

    monkeypatch.setattr(C, "hash_stored_files", second_is_damaged)
    with pytest.raises(VerificationError) as caught:
        C.copy_file(src, [one, two], "md5", verify="storage")
    assert caught.value.path == str(two)
