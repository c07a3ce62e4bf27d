"""Live sync of files still being written (staged in ranges), and the last pass when a
session ends: delivery then takes over staged copies instead of copying."""

from __future__ import annotations

import os

import pytest

from autotx_lib.journal import Journal
from autotx_lib.transfer import control
from autotx_lib.transfer import live_sync as L
from autotx_lib.transfer.agent import Agent
from autotx_lib.transfer.copy import verify_manifest
from autotx_lib.transfer.live_sync import LiveSync, staging_root
from autotx_lib.transfer.sessions import end_session, start_session

from .conftest import make_dataset, tree

KiB = 1024


@pytest.fixture
def writing(facility, monkeypatch):
    """Live sync on; every file counts as being written (never quiet during the session);
    files of 4 KiB and more are staged in ranges of at least 1 KiB."""
    facility.sessions.live_sync = True
    facility.sessions.live_quiet_seconds = 3600
    monkeypatch.setattr(L, "GROWING_MIN_BYTES", 4 * KiB)
    monkeypatch.setattr(L, "GROWING_STEP_BYTES", 1 * KiB)
    return facility


def _append(path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


def _delivered(facility, name: str):
    folder = facility.destination / "alice" / name
    assert verify_manifest(folder, folder / "autotx-manifest.xxh128", "xxh3_128") == []
    return tree(folder)


def test_a_file_being_written_is_staged_in_ranges_and_only_its_rest_copied_at_the_end(writing):
    head, middle, tail = os.urandom(5 * KiB), os.urandom(3 * KiB), os.urandom(500)
    folder = make_dataset(writing.incoming, "alice", "run1", {"big.raw": head})
    session = start_session(writing, "alice")
    sync = LiveSync(writing, Journal(writing.journal_url), session.id)

    first = sync.step(session)
    part = staging_root(writing, session.id) / "run1" / "big.raw.part"
    assert first.growing_bytes == len(head) and first.copied_files == 0
    assert part.read_bytes() == head
    _append(folder / "big.raw", middle)
    assert sync.step(session).growing_bytes == len(middle), "the staged bytes were copied again"
    _append(folder / "big.raw", tail)  # less than a range: left for the end
    assert sync.step(session).growing_bytes == 0

    last = sync.step(end_session(writing))

    assert (last.completed, last.copied_files, last.copied_bytes) == (1, 1, len(tail))
    assert not part.exists()
    assert Agent(writing).run(once=True).delivered
    assert _delivered(writing, "run1") == {"big.raw": head + middle + tail}


@pytest.mark.parametrize("change", ["header rewritten at close", "truncated", "replaced"])
def test_a_file_whose_staged_bytes_changed_is_copied_whole(writing, change):
    data = os.urandom(8 * KiB)
    folder = make_dataset(writing.incoming, "alice", "run2", {"img.tif": data})
    session = start_session(writing, "alice")
    sync = LiveSync(writing, Journal(writing.journal_url), session.id)
    assert sync.step(session).growing_bytes == len(data)
    path = folder / "img.tif"
    if change == "header rewritten at close":  # e.g. a TIFF writer's first IFD offset
        _append(path, os.urandom(2 * KiB))
        with open(path, "r+b") as handle:
            handle.write(b"II*\x00\x10\x00\x00\x00")
    elif change == "truncated":
        os.truncate(path, 3 * KiB)
    else:  # same size, other bytes
        path.write_bytes(os.urandom(8 * KiB))
    expected = path.read_bytes()

    last = sync.step(end_session(writing))

    assert (last.completed, last.copied_bytes) == (0, len(expected))
    assert Agent(writing).run(once=True).delivered
    assert _delivered(writing, "run2") == {"img.tif": expected}


def test_the_end_of_a_session_stages_what_is_left_and_delivery_copies_nothing(writing):
    """The agent's pass after the end: a last live-sync pass (no quiet: the user is done),
    then the claim in the same pass takes every file over from the staging area."""
    files = {"small.txt": b"notes", "big.raw": os.urandom(6 * KiB)}
    make_dataset(writing.incoming, "alice", "run3", files)
    start_session(writing, "alice")
    agent = Agent(writing)
    agent.run(once=True)  # during the session: big.raw staged in part, small.txt waits
    assert not (writing.destination / "alice" / "run3").exists()
    end_session(writing)

    summary = agent.run(once=True)

    assert len(summary.delivered) == 1
    assert _delivered(writing, "run3") == files
    journal = Journal(writing.journal_url)
    [row] = journal.datasets_in(["done"])
    assert {f.relpath: f.copies for f in journal.files_of(row.id)} == \
        {"small.txt": 0, "big.raw": 0}, "copied at delivery instead of taken over"
    [event] = [e for e in journal.recent_events(50) if e.kind == "live-synced"]
    assert "2 file(s)" in event.message


def test_no_last_pass_while_the_gate_is_closed_and_nothing_is_left_staged(writing):
    data = os.urandom(6 * KiB)
    make_dataset(writing.incoming, "alice", "run4", {"big.raw": data})
    session = start_session(writing, "alice")
    agent = Agent(writing)
    agent.run(once=True)
    part = staging_root(writing, session.id) / "run4" / "big.raw.part"
    assert part.is_file()
    control.suspend(writing, "acquisition running")
    end_session(writing)

    agent.run(once=True)  # the gate is closed: no last pass (its staged prefix removed)

    assert not part.exists()
    assert not (writing.destination / "alice" / "run4").exists()
    control.resume(writing)
    assert agent.run(once=True).delivered
    assert _delivered(writing, "run4") == {"big.raw": data}


def test_after_a_restart_a_file_staged_in_part_is_staged_again_from_its_start(writing):
    """What a range covers is known in memory only: a new agent starts the file over."""
    head, rest = os.urandom(5 * KiB), os.urandom(2 * KiB)
    folder = make_dataset(writing.incoming, "alice", "run5", {"big.raw": head})
    session = start_session(writing, "alice")
    journal = Journal(writing.journal_url)
    assert LiveSync(writing, journal, session.id).step(session).growing_bytes == len(head)
    _append(folder / "big.raw", rest)

    restarted = LiveSync(writing, journal, session.id)
    assert restarted.step(session).growing_bytes == len(head + rest)
    assert restarted.step(end_session(writing)).completed == 1

    assert Agent(writing).run(once=True).delivered
    assert _delivered(writing, "run5") == {"big.raw": head + rest}
    assert not any(p.is_file() for p in staging_root(writing, session.id).rglob("*"))
