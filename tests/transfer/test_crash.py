"""Killed at any instant and restarted, the agent finishes without loss, duplicates or re-copies."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

from autotx_lib import journal as J
from autotx_lib.journal import Journal
from autotx_lib.transfer import steps as steps_module
from autotx_lib.transfer.agent import Agent
from autotx_lib.transfer.copy import verify_manifest

from ..conftest import wait_for
from .conftest import assert_delivered_once_to, make_dataset, tree


class Crash(BaseException):
    """Stands for the process dying at this instant (not caught by the agent)."""


def assert_delivered_exactly_once(config, files: dict[str, bytes]) -> None:
    user_folder = config.destination / "alice"
    assert sorted(p.name for p in user_folder.iterdir()) == ["exp"], "delivered twice or never"
    delivered = user_folder / "exp"
    assert tree(delivered) == files
    manifests = list(delivered.glob("autotx-manifest.*"))
    assert len(manifests) == 1 and verify_manifest(delivered, manifests[0], "xxh3_128") == []
    done = list((config.managed / "done" / "alice").iterdir())
    assert len(done) == 1 and tree(done[0]) == files
    assert list((config.managed / "processing").iterdir()) == []
    assert not [p for p in (config.destination / ".autotx-tmp").rglob("*") if p.is_file()]
    assert not (config.incoming / "alice" / "exp").exists()
    rows = Journal(config.journal_url).all_datasets()
    assert [r.state for r in rows if r.state != J.VANISHED] == [J.DONE]


def crash_at_every_call(config, monkeypatch, label: str, owner, name: str, when: str,
                        after_crash=None) -> None:
    """Run the agent again and again, crashing before or after the k-th call of
    ``owner.name`` for k = 1, 2, ... until a run no longer reaches the k-th call.

    ``after_crash(agent)`` does what the death of the process would (e.g. close its SMB
    connections, so the server drops the files it held open)."""
    original = getattr(owner, name)
    crashes = 0
    for k in range(1, 100):
        calls = {"n": 0}

        def crashing(*args, _k=k, _calls=calls, **kwargs):
            _calls["n"] += 1
            if _calls["n"] == _k and when == "before":
                raise Crash(f"{label} call {_k}")
            result = original(*args, **kwargs)
            if _calls["n"] == _k and when == "after":
                raise Crash(f"{label} call {_k}")
            return result

        monkeypatch.setattr(owner, name, crashing)
        agent = Agent(config)
        try:
            agent.run(once=True)
        except Crash:
            crashes += 1
            if after_crash is not None:
                after_crash(agent)
            continue
        finally:
            monkeypatch.setattr(owner, name, original)
        break  # a run went through without reaching the k-th call: all steps were covered
    assert crashes >= 1, f"{label} was never called"


STEP_FUNCTIONS = [
    ("os.rename", os, "rename"),
    ("fsync_dir", steps_module, "fsync_dir"),
    ("move_dir", steps_module, "move_dir"),
    ("Journal.update_dataset", Journal, "update_dataset"),
    ("Journal.mark_verified", Journal, "mark_verified"),
]


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("label,owner,name", STEP_FUNCTIONS, ids=[s[0] for s in STEP_FUNCTIONS])
def test_crash_at_every_step_then_restart(facility, monkeypatch, label, owner, name, when):
    """Crash before or after the k-th call of each filesystem/journal step, for every k."""
    files = {f"d{i % 3}/f{i}.bin": os.urandom(20_000 + i) for i in range(12)}
    make_dataset(facility.incoming, "alice", "exp", files)
    crash_at_every_call(facility, monkeypatch, label, owner, name, when)
    Agent(facility).run(once=True)  # the restart after the last crash, uninterrupted
    assert_delivered_exactly_once(facility, files)


CAP_MB_S = 5.0  # the bandwidth cap: a copy of N MB cannot take less than N / 5 seconds
SLACK_SECONDS = 1.0  # the cap's burst (0.25 s), chunks in flight and the journal's flush lag


def test_kill_9_during_the_copy_resumes_without_recopying(facility, tmp_path):
    """A real agent process is SIGKILLed three times mid-copy; verified files stay put.

    Two kills follow journal events (50 more files verified), one falls at a random instant;
    the bandwidth cap gives the copy a minimum duration, so on a slow machine the copy only
    lasts longer and no kill can miss it.
    """
    rng = random.Random(1234)
    files = {f"a_stack/z{i:04d}.tif": rng.randbytes(10_000) for i in range(800)}
    files.update({f"b_raw/big{i}.raw": rng.randbytes(5_000_000) for i in range(4)})
    total_bytes = sum(len(content) for content in files.values())
    make_dataset(facility.incoming, "alice", "exp", files)
    config_file = tmp_path / "autotx.toml"
    config_file.write_text(f'incoming = "{facility.incoming}"\nmanaged = "{facility.managed}"\n'
                           f'destination = "{facility.destination}"\n[readiness]\n'
                           'quiet_seconds = 0\n[copy]\nworkers = 2\n[gate]\nmax_cpu_percent = 100\n'
                           f'min_available_memory_mb = 0\nbandwidth_mb_s = {CAP_MB_S}\n')
    command = [sys.executable, "-m", "autotx_lib.cli", "run", "--once", "-c", str(config_file)]
    database = facility.managed / "autotx.sqlite"
    stderr = tmp_path / "agent-stderr.txt"
    verified_mtimes: dict[str, int] = {}

    for kill in (1, 2):  # at events: once 50 more files are verified than before this run
        before = _copy_progress(database).verified if database.exists() else 0
        process = _start_agent(command, stderr)
        _wait_for_progress(process, database, stderr, lambda p, b=before: p.verified >= b + 50,
                           f"kill {kill}: 50 more verified files than the {before} before")
        _kill_while_copying(process, database, f"kill {kill}")
        _remember_first_mtimes(verified_mtimes, facility)

    # kill 3: at a random instant within a copy that the cap makes last long enough
    before = _copy_progress(database)
    process = _start_agent(command, stderr)
    seen = _wait_for_progress(process, database, stderr, lambda p: p.verified > before.verified,
                              "kill 3: the restarted agent verifying its first new files")
    guaranteed = (total_bytes - seen.copied_bytes) / (CAP_MB_S * 1e6) - SLACK_SECONDS
    assert guaranteed > 1.0, f"only {guaranteed:.1f} s of copy left for the random kill"
    delay = random.uniform(0.0, guaranteed / 2)  # half the window: slack for a busy machine
    print(f"random kill {delay:.2f} s after the first new progress (>= {guaranteed:.1f} s left)")
    time.sleep(delay)  # this sleep *chooses* the instant; it waits for nothing
    _kill_while_copying(process, database, f"kill 3 (random, after {delay:.2f} s)")
    _remember_first_mtimes(verified_mtimes, facility)

    final = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert_delivered_exactly_once(facility, files)
    delivered = facility.destination / "alice" / "exp"
    recopied = [p for p, m in verified_mtimes.items() if (delivered / p).stat().st_mtime_ns != m]
    assert len(verified_mtimes) >= 100, "too few files verified before the kills to test resuming"
    assert recopied == [], f"files verified before a kill were copied again: {recopied[:5]}"
    journal = Journal(facility.journal_url)
    dataset = [r for r in journal.all_datasets() if r.state == J.DONE][0]
    copies = {r.relpath: r.copies for r in journal.files_of(dataset.id)}
    journal.close()
    assert sorted(copies) == sorted(files)
    assert {p: n for p, n in copies.items() if n != 1} == {}, "files verified more than once"


class CopyProgress(NamedTuple):
    """What the journal says about the dataset being copied."""

    state: str
    verified: int
    total_files: int
    copied_bytes: int


def _copy_progress(database: Path) -> CopyProgress | None:
    """Read-only look at the journal: the one dataset's state and verified files, or None."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    try:
        row = connection.execute(
            "SELECT state, (SELECT count(*) FROM files WHERE dataset_id = datasets.id AND verified),"
            " total_files, copied_bytes FROM datasets WHERE state != ?", (J.VANISHED,)).fetchone()
    except sqlite3.OperationalError:  # the agent has not created its tables yet
        return None
    finally:
        connection.close()
    return CopyProgress(*row) if row else None


def _start_agent(command: list[str], stderr: Path) -> subprocess.Popen:
    with stderr.open("w") as sink:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=sink)


def _wait_for_progress(process: subprocess.Popen, database: Path, stderr: Path,
                       reached: Callable[[CopyProgress], bool], what: str) -> CopyProgress:
    """Wait until the journal shows the dataset copying with ``reached`` true."""
    def check() -> CopyProgress | None:
        if process.poll() is not None:
            pytest.fail(f"the agent exited ({process.returncode}) before {what}:\n"
                        f"{stderr.read_text()[-2000:]}")
        progress = _copy_progress(database) if database.exists() else None
        return progress if progress and progress.state == J.COPYING and reached(progress) \
            else None
    return wait_for(check, timeout=120, what=what)


def _kill_while_copying(process: subprocess.Popen, database: Path, which: str) -> None:
    """SIGKILL the agent; then check the kill hit it alive and in the middle of the copy."""
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, f"{which}: the agent had already exited"
    after = _copy_progress(database)
    assert after.state == J.COPYING and after.verified < after.total_files, \
        f"{which} missed the copy: the journal says {after}"


def _remember_first_mtimes(seen: dict[str, int], config) -> None:
    """Keep the mtime a file had when first found verified: any later re-copy changes it."""
    for relpath, mtime_ns in _verified_tmp_files(config).items():
        seen.setdefault(relpath, mtime_ns)


def _verified_tmp_files(config) -> dict[str, int]:
    """relpath -> mtime_ns of files the journal says are verified in the tmp area."""
    journal = Journal(config.journal_url)
    found = {}
    for row in journal.datasets_in([J.COPYING]):
        for entry in journal.files_of(row.id):
            target = Path(row.tmp_path) / entry.relpath
            if entry.verified and target.exists():
                found[entry.relpath] = target.stat().st_mtime_ns
    journal.close()
    return found


TWO_DESTINATION_STEPS = STEP_FUNCTIONS + [
    ("Journal.update_delivery", Journal, "update_delivery"),
]


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("label,owner,name", TWO_DESTINATION_STEPS,
                         ids=[s[0] for s in TWO_DESTINATION_STEPS])
def test_crash_at_every_step_with_two_destinations(tmp_path, monkeypatch, label, owner, name,
                                                   when):
    """The same crashes with a primary and a backup: each ends with one verified copy."""
    from autotx_lib.config import Config

    storage, backup = tmp_path / "storage", tmp_path / "backup"
    (storage / "alice").mkdir(parents=True)
    backup.mkdir()
    config = Config(incoming=tmp_path / "incoming", managed=tmp_path / "managed",
                    destinations=[{"name": "storage", "url": str(storage)},
                                  {"name": "backup", "url": str(backup)}],
                    readiness={"quiet_seconds": 0}, host_alias="test-pc",
                    gate={"max_cpu_percent": 100, "min_available_memory_mb": 0})
    files = {f"d{i % 3}/f{i}.bin": os.urandom(20_000 + i) for i in range(6)}
    make_dataset(config.incoming, "alice", "exp", files)
    crash_at_every_call(config, monkeypatch, label, owner, name, when)
    Agent(config).run(once=True)
    assert_delivered_once_to((storage, backup), files, config.journal_url)
