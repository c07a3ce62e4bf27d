"""The SMB destination against a real Samba server on loopback (see conftest.py)."""

from __future__ import annotations

import logging
import os

import pytest

from autotx_lib.errors import (
    DestinationAuth,
    DestinationError,
    DestinationFullError,
    DestinationMissing,
    DestinationPermission,
)
from autotx_lib.transfer.destinations import open_destination

from .conftest import open_smb


def test_wrong_password_is_an_auth_error_that_never_shows_the_password(samba, caplog):
    caplog.set_level(logging.DEBUG)
    env = {"PW": "not-the-Password-42"}
    dest = open_destination(samba.url(), {"password_env": "PW"}, environ=env, timeout=5)
    with pytest.raises(DestinationAuth) as info:
        dest.check()
    assert not info.value.retryable and "password" in str(info.value)
    shown = str(info.value) + repr(dest) + dest.url + caplog.text
    assert "not-the-Password-42" not in shown


def test_unknown_user_is_an_auth_error(samba, smb_env):
    dest = open_destination(samba.url(user="mallory"), {"password_env": "AUTOTX_TEST_SMB_PASSWORD"},
                            environ=smb_env, timeout=5)
    with pytest.raises(DestinationAuth):
        dest.free_bytes()


def test_missing_share_is_missing_and_retryable(samba, smb_env):
    with open_smb(samba, smb_env, share="no-such-share") as dest, \
            pytest.raises(DestinationMissing, match="no such share") as info:
        dest.check()
    assert info.value.retryable


def test_a_server_that_does_not_answer_is_missing(samba, smb_env):
    url = samba.url().replace(f":{samba.port}/", f":{samba.port + 1}/")  # nothing listens
    dest = open_destination(url, {"password_env": "AUTOTX_TEST_SMB_PASSWORD"},
                            environ=smb_env, timeout=5)
    with pytest.raises(DestinationMissing, match="cannot be reached"):
        dest.check()


def test_read_only_share_and_folder_are_permission_errors(samba, smb_env, smb_folder):
    """Samba answers ACCESS_DENIED for both: a read-only share cannot be told apart."""
    with open_smb(samba, smb_env, share="ro", path=smb_folder) as dest:
        with pytest.raises(DestinationPermission) as info:
            dest.check()
        assert not info.value.retryable
    locked = samba.data / smb_folder / "locked"
    locked.mkdir(mode=0o555)  # owned by root: the share's user may not write in it
    with open_smb(samba, smb_env, path=f"{smb_folder}/locked") as dest, \
            pytest.raises(DestinationPermission):
        dest.write_bytes("a.txt", b"a")


def test_full_server_is_full_and_the_partial_copy_can_be_removed(samba, smb_env):
    if not samba.has_full:
        pytest.skip("the small share needs a tmpfs mount (root); none could be mounted")
    with open_smb(samba, smb_env, share="full") as dest:
        free = dest.free_bytes()
        assert 0 < free <= 4 * 1024 * 1024
        dest.make_tmp("tmp/big")
        with pytest.raises(DestinationFullError) as info, dest.open_write("tmp/big/a.bin") as out:
            for _ in range(6):
                out.write(os.urandom(1024 * 1024))
        assert info.value.retryable
        dest.remove_tree("tmp/big")
        assert dest.listdir("tmp") == [] and dest.free_bytes() >= free - 64 * 1024


def _copy_verified(dest, files: dict[str, bytes], done: set[str]) -> None:
    """Write each file not yet done into tmp/exp and read it back (what the agent does)."""
    for name, data in files.items():
        if name in done:
            continue
        dest.write_bytes(f"tmp/exp/{name}", data)
        assert dest.read_bytes(f"tmp/exp/{name}") == data
        done.add(name)


def test_server_stopped_mid_transfer_resumes_and_delivers_once(samba, smb_env, smb_folder):
    files = {f"f{i}.bin": os.urandom(200_000 + i) for i in range(6)}
    done: set[str] = set()
    dest = open_smb(samba, smb_env, path=smb_folder)
    dest.make_tmp("tmp/exp")
    _copy_verified(dest, dict(list(files.items())[:3]), done)

    try:
        with pytest.raises(DestinationMissing) as info, dest.open_write("tmp/exp/f3.bin") as out:
            out.write(files["f3.bin"][:100_000])
            samba.stop()  # the server goes away in the middle of a file
            out.write(files["f3.bin"][100_000:])
        assert info.value.retryable
        with pytest.raises(DestinationMissing):
            dest.check()  # still away: the agent waits and retries
    finally:
        samba.start()

    # back: the same destination object reconnects; verified files are kept, the rest copied
    assert all(dest.read_bytes(f"tmp/exp/{name}") == files[name] for name in done)
    _copy_verified(dest, files, done)
    dest.rename("tmp/exp", "exp")
    with pytest.raises(FileNotFoundError):
        dest.rename("tmp/exp", "exp")  # a repeated delivery step finds nothing to deliver
    assert dest.listdir() == ["exp", "tmp"] and dest.listdir("exp") == sorted(files)
    assert all(dest.read_bytes(f"exp/{name}") == data for name, data in files.items())
    dest.close()


def test_connections_of_finished_copies_are_closed(samba, smb_env, smb_folder):
    """One connection per copying thread; a long-running agent must not pile them up."""
    from concurrent.futures import ThreadPoolExecutor

    import psutil

    def ports() -> set[int]:
        return {c.laddr.port for c in psutil.Process().net_connections(kind="tcp")
                if c.raddr and c.raddr.port == samba.port and c.status == "ESTABLISHED"}

    before = ports()  # another test's objects may still hold theirs

    def connections() -> int:
        return len(ports() - before)

    with open_smb(samba, smb_env, path=smb_folder) as dest:
        dest.check()
        for copy in range(3):  # three datasets, each copied by a pool of 4 threads
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda i, c=copy: dest.write_bytes(f"c{c}-{i}", b"x"), range(8)))
        assert connections() <= 4 + 1  # the last pool's and this thread's
    assert connections() == 0


def _smb_destination(samba, folder: str, require_signing: bool):
    from autotx_lib.transfer.destinations.smb import SMBDestination

    return SMBDestination("127.0.0.1", "data", folder, username=samba.user,
                          password=samba.password, port=samba.port, timeout=5,
                          require_signing=require_signing)


@pytest.mark.parametrize("require_signing", [False, True], ids=["data-unsigned", "all-signed"])
def test_files_of_every_size_round_trip_with_and_without_signing(samba, smb_folder,
                                                                 require_signing):
    """Default: the data goes beside smbprotocol's messages, unsigned; signed: the usual way.

    Sizes around the request size (CHUNK), written and read in pieces that do not line
    up with it, through read(n), readinto and read().
    """
    from autotx_lib.transfer.destinations.smb import CHUNK

    sizes = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12345]
    with _smb_destination(samba, smb_folder, require_signing) as dest:
        for size in sizes:
            data = os.urandom(size)
            with dest.open_write(f"f{size}.bin") as out:
                assert out._raw._direct is not require_signing  # the path under test
                for start in range(0, size, 700_001):
                    out.write(memoryview(data)[start:start + 700_001])
            assert (samba.data / smb_folder / f"f{size}.bin").read_bytes() == data
            with dest.open_read(f"f{size}.bin") as back:
                assert back._raw._direct is not require_signing
                first = back.read(1000)
                buffer = bytearray(333_333)
                count = back.readinto(buffer)
                rest = back.read()
            assert first + bytes(buffer[:count]) + rest == data
            assert dest.read_bytes(f"f{size}.bin") == data


def test_a_file_that_shrinks_while_read_back_is_a_destination_error(samba, smb_env,
                                                                    smb_folder):
    """A short READ answer must not be glued to the next one: the read-back fails, typed."""
    from autotx_lib.transfer.destinations.smb import CHUNK, IN_FLIGHT

    size = 2 * IN_FLIGHT * CHUNK + CHUNK  # the last chunks are asked for only later
    path = samba.data / smb_folder / "shrinks.bin"
    path.write_bytes(os.urandom(size))
    with open_smb(samba, smb_env, path=smb_folder) as dest:
        with pytest.raises(DestinationError) as info, dest.open_read("shrinks.bin") as back:
            assert len(back.read(CHUNK)) == CHUNK  # IN_FLIGHT more chunks are asked for
            os.truncate(path, size - CHUNK // 2)  # the last chunk, not asked yet, shrinks
            while back.read(CHUNK):
                pass
        assert not isinstance(info.value, DestinationMissing)  # the server is there
        assert dest.read_bytes("shrinks.bin") == path.read_bytes()  # the connection works


def test_the_next_copys_threads_take_over_the_connections_of_the_last(samba, smb_env,
                                                                      smb_folder):
    """Logging on again for every dataset's copy costs round trips and CPU on both ends."""
    from concurrent.futures import ThreadPoolExecutor

    import psutil

    earlier = set()  # another test's objects may still hold theirs

    def local_ports() -> set[int]:
        return {c.laddr.port for c in psutil.Process().net_connections(kind="tcp")
                if c.raddr and c.raddr.port == samba.port and c.status == "ESTABLISHED"} - earlier

    earlier = local_ports()
    with open_smb(samba, smb_env, path=smb_folder) as dest:
        dest.check()
        after_copy = []
        for copy in range(2):  # two datasets, each copied by a pool of 4 threads
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda i, c=copy: dest.write_bytes(f"c{c}-{i}", b"x"), range(8)))
            after_copy.append(local_ports())
        assert after_copy[0] <= after_copy[1]  # the same connections, none closed
        assert len(after_copy[1]) <= 4 + 1


def test_a_server_that_requires_signing_gets_the_data_signed_too(samba):
    """The data goes unsigned only where the server allows it."""
    import shutil
    import tempfile
    from pathlib import Path

    from .samba import SambaServer

    class SigningSamba(SambaServer):
        def _config(self) -> str:
            return super()._config().replace("[global]\n",
                                             "[global]\n  server signing = mandatory\n", 1)

    base = Path(tempfile.mkdtemp(prefix="autotx-smb-signing-"))
    base.chmod(0o755)  # the share's user (nobody) must reach its folders
    server = SigningSamba(base, small_share=False)
    try:
        server.start()
        data = os.urandom(3 * 1024 * 1024 + 7)
        with _smb_destination(server, "", require_signing=False) as dest:
            with dest.open_write("signed.bin") as out:
                assert not out._raw._direct  # signed, the usual way
                out.write(data)
            with dest.open_read("signed.bin") as back:
                assert not back._raw._direct
                assert back.read() == data
        assert (server.data / "signed.bin").read_bytes() == data
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def test_sync_waits_for_the_flushes_of_files_other_threads_wrote(samba, smb_env, smb_folder,
                                                                 caplog):
    """A closed stream's FLUSH is answered later; sync() (before a rename) awaits them all."""
    from concurrent.futures import ThreadPoolExecutor

    files = {f"f{i}.bin": os.urandom(300_000 + i) for i in range(8)}
    with open_smb(samba, smb_env, path=smb_folder) as dest:
        dest.make_tmp("tmp/exp")
        with ThreadPoolExecutor(4) as pool:  # written, never read back
            list(pool.map(lambda item: dest.write_bytes(f"tmp/exp/{item[0]}", item[1]),
                          files.items()))
        assert dest._closing  # some answers not awaited yet: the copy threads went on
        dest.sync("tmp/exp")
        assert dest._closing == []
        dest.rename("tmp/exp", "exp")
    assert "did not reach the disk" not in caplog.text
    assert {p.name: p.read_bytes() for p in (samba.data / smb_folder / "exp").iterdir()} \
        == files
