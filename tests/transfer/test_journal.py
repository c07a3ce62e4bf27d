"""The journal on SQLite and on a real PostgreSQL server (started by the test through pgserver)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from autotx_lib.errors import JournalError
from autotx_lib.journal import Journal
from autotx_lib.transfer.agent import Agent
from autotx_lib.transfer.status import status

from .conftest import make_dataset, tree


@pytest.fixture(scope="module")
def postgres_url():
    pgserver = pytest.importorskip("pgserver", reason="pgserver (a PostgreSQL server packaged "
                                   "for pip) is installed by ./run-tests")
    # not under pytest's tmp folder: as root, pgserver runs PostgreSQL as another user, who
    # must be able to reach the data folder (pytest's base folder is private to root)
    data = Path(tempfile.mkdtemp(prefix="autotx-pg-"))
    server = pgserver.get_server(data, cleanup_mode="stop")
    url = server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    yield url
    server.cleanup()
    shutil.rmtree(data, ignore_errors=True)


def test_agent_on_postgresql_journal(facility, postgres_url):
    facility.journal = postgres_url
    make_dataset(facility.incoming, "alice", "exp", {"a.bin": os.urandom(5000), "b/c": b"c"})
    summary = Agent(facility).run(once=True)
    assert summary.ok and summary.delivered
    assert tree(facility.destination / "alice" / "exp")["b/c"] == b"c"
    snapshot = status(Journal(postgres_url))
    assert any(d.name == "exp" and d.state == "done" for d in snapshot.history)
    assert not (facility.managed / "autotx.sqlite").exists()


def test_settings_and_sessions_round_trip(tmp_path):
    journal = Journal(f"sqlite:///{tmp_path / 'j.sqlite'}")
    journal.set_setting("suspended", {"reason": "maintenance"})
    journal.set_setting("suspended", {"reason": "changed"})
    assert journal.get_setting("suspended") == {"reason": "changed"}
    first, unclean = journal.start_session("pc", 1, "0.1")
    assert unclean is None
    _, unclean = journal.start_session("pc", 2, "0.1")  # the first never ended
    assert unclean is not None and unclean.id == first


def test_unreachable_database_says_what_to_check():
    with pytest.raises(JournalError, match="Check the `journal` URL") as caught:
        Journal("postgresql+psycopg://nobody:secret@127.0.0.1:1/none")
    assert "secret" not in str(caught.value)
