"""Killed at any instant and restarted, the agent finishes without loss, duplicates or re-copies."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autotx_lib import journal as J
from autotx_lib.journal import Journal
from autotx_lib.transfer import agent as agent_module
from autotx_lib.transfer.agent import Agent
from autotx_lib.transfer.copy import verify_manifest

from .conftest import make_dataset, tree


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


STEP_FUNCTIONS = [
    ("os.rename", os, "rename"),
    ("fsync_dir", agent_module, "fsync_dir"),
    ("move_dir", agent_module, "move_dir"),
    ("Journal.update_dataset", Journal, "update_dataset"),
    ("Journal.mark_verified", Journal, "mark_verified"),
]


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("label,owner,name", STEP_FUNCTIONS, ids=[s[0] for s in STEP_FUNCTIONS])
def test_crash_at_every_step_then_restart(facility, monkeypatch, label, owner, name, when):
    """Crash before or after the k-th call of each filesystem/journal step, for every k."""
    files = {f"d{i % 3}/f{i}.bin": os.urandom(20_000 + i) for i in range(12)}
    make_dataset(facility.incoming, "alice", "exp", files)
    original = getattr(owner, name)
    crashes = 0
    for k in range(1, 60):
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
        try:
            Agent(facility).run(once=True)
        except Crash:
            crashes += 1
            continue
        finally:
            monkeypatch.setattr(owner, name, original)
        break  # a run went through without reaching the k-th call: all steps were covered
    assert crashes >= 1, f"{label} was never called"
    Agent(facility).run(once=True)  # the restart after the last crash, uninterrupted
    assert_delivered_exactly_once(facility, files)


def test_kill_9_at_random_instants_resumes_without_recopying(facility, tmp_path):
    """A real agent process is SIGKILLed repeatedly mid-transfer; verified files stay put."""
    rng = random.Random(1234)
    files = {f"stack/z{i:04d}.tif": rng.randbytes(10_000) for i in range(3000)}
    files.update({f"raw/big{i}.raw": rng.randbytes(6_000_000) for i in range(4)})
    make_dataset(facility.incoming, "alice", "exp", files)
    config_file = tmp_path / "autotx.toml"
    config_file.write_text(f'incoming = "{facility.incoming}"\nmanaged = "{facility.managed}"\n'
                           f'destination = "{facility.destination}"\n[readiness]\n'
                           'quiet_seconds = 0\n[copy]\nworkers = 2\n[gate]\nmax_cpu_percent = 100\n')
    command = [sys.executable, "-m", "autotx_lib.cli", "run", "--once", "-c", str(config_file)]
    verified_mtimes: dict[str, int] = {}
    kills = 0
    for _attempt in range(12):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_new_progress(facility, process, len(verified_mtimes))
        time.sleep(rng.uniform(0.0, 0.2))
        if process.poll() is not None:
            break
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        kills += 1
        verified_mtimes.update(_verified_tmp_files(facility))
    final = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert kills >= 2, "the agent finished before it could be killed twice; enlarge the dataset"
    assert_delivered_exactly_once(facility, files)
    delivered = facility.destination / "alice" / "exp"
    recopied = [p for p, m in verified_mtimes.items() if (delivered / p).stat().st_mtime_ns != m]
    assert verified_mtimes, "no file was verified before a kill; the test did not test resuming"
    assert recopied == [], f"files verified before a kill were copied again: {recopied[:5]}"


def _wait_for_new_progress(config, process, verified_before: int) -> None:
    """Wait until the journal shows more verified files than before (or the agent exits)."""
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        if config.journal_url and Path(config.managed / "autotx.sqlite").exists():
            journal = Journal(config.journal_url)
            copying = journal.datasets_in([J.COPYING])
            journal.close()
            if copying and copying[0].copied_files > verified_before:
                return
        time.sleep(0.05)


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
