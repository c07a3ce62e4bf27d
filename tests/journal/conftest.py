"""Fixtures for journal tests: the facility of the transfer tests, a real PostgreSQL server
(pgserver) with a fresh database per test, and the journal of the release before
migrations (made by that release; see tools/make_journal_fixture.py)."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.transfer.conftest import facility, make_dataset, tree  # noqa: F401 - fixtures

OLD_JOURNAL = Path(__file__).parent / "fixtures" / "journal-451bb5e.sqlite"


@pytest.fixture(scope="session")
def postgres_server():
    pgserver = pytest.importorskip("pgserver", reason="pgserver (a PostgreSQL server packaged "
                                   "for pip) is installed by ./run-tests")
    # not under pytest's tmp folder: as root, pgserver runs PostgreSQL as another user, who
    # must be able to reach the data folder (pytest's base folder is private to root)
    data = Path(tempfile.mkdtemp(prefix="autotx-pg-journal-"))
    server = pgserver.get_server(data, cleanup_mode="stop")
    yield server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    server.cleanup()
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """The URL of a new, empty database on the test's PostgreSQL server."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"autotx_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return make_url(postgres_server).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def old_journal(tmp_path) -> Path:
    """A copy of the release-before-migrations journal, where a facility keeps it."""
    target = tmp_path / "managed" / "autotx.sqlite"
    target.parent.mkdir(parents=True)
    shutil.copyfile(OLD_JOURNAL, target)
    return target
