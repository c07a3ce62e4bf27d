"""Schema migrations: a journal of the release before migrations upgrades in place and
loses nothing; readers change nothing; a newer journal is refused."""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from autotx_lib import journal as J
from autotx_lib.cli.main import app
from autotx_lib.errors import JournalError
from autotx_lib.journal import Journal, migrate
from autotx_lib.journal.core import upgrade_journal
from autotx_lib.transfer.agent import Agent
from autotx_lib.transfer.grace import grace_report

from .conftest import OLD_JOURNAL, make_dataset

TABLES = ("datasets", "files", "events", "sessions", "outbox", "jobs", "settings")


def raw_rows(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table, exactly as stored (no SQLAlchemy types in between)."""
    db = sqlite3.connect(path)
    try:
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in TABLES}
    finally:
        db.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def url(path: Path) -> str:
    return f"sqlite:///{path}"


def test_the_fixture_is_a_journal_of_the_old_release_with_every_kind_of_row():
    rows = raw_rows(OLD_JOURNAL)
    states = {r[4] for r in rows["datasets"]}
    assert {"done", "unmatched", "error", "queued"} <= states
    assert all(rows[t] for t in TABLES), {t: len(rows[t]) for t in TABLES}
    db = sqlite3.connect(OLD_JOURNAL)
    assert not db.execute("SELECT name FROM sqlite_master WHERE name='alembic_version'").fetchall()
    db.close()


def test_old_journal_upgrades_in_place_keeping_every_row(old_journal):
    before = raw_rows(old_journal)
    journal = Journal(url(old_journal))  # a read-write open upgrades
    after = raw_rows(old_journal)
    for table in TABLES:
        if table != "events":
            assert len(after[table]) == len(before[table]), table
        if table != "settings":
            assert after[table][:len(before[table])] == before[table], table
    [note] = after["events"][len(before["events"]):]  # the upgrade says so, once
    assert note[4:] == ("journal", "journal upgraded from schema of the release before "
                        f"migrations to {migrate.head()}, every row kept")
    settings_before, settings_after = dict((r[0], r[1:]) for r in before["settings"]), \
        dict((r[0], r[1:]) for r in after["settings"])
    assert settings_after.pop("schema_version")[0] == '"2"'
    settings_before.pop("schema_version")
    assert settings_after == settings_before
    with journal.engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.head()
    # read through the journal, the stored naive times are the same instants, in UTC
    done = journal.datasets_in([J.DONE])[0]
    stored = next(r for r in before["datasets"] if r[0] == done.id)
    assert done.finished_at == dt.datetime.fromisoformat(stored[-1]).replace(tzinfo=dt.UTC)
    assert done.finished_at.tzinfo is dt.UTC
    assert journal.get_setting("bandwidth_mb_s") == 50


def test_agent_runs_on_the_upgraded_journal(facility, old_journal):
    assert Path(facility.journal_url.removeprefix("sqlite:///")) == old_journal
    before = raw_rows(old_journal)
    make_dataset(facility.incoming, "alice", "after-upgrade", {"x.tif": b"x" * 5000})
    summary = Agent(facility).run(once=True)
    # the old queued dataset is tried too (--once ignores retry times): its folder is not
    # on this machine, so it stays queued for a retry
    queued = next(r[0] for r in before["datasets"] if r[4] == J.QUEUED)
    assert len(summary.delivered) == 1 and not summary.failed and summary.retrying == [queued]
    journal = Journal(facility.journal_url)
    new = journal.dataset(summary.delivered[0])
    assert new.state == J.DONE and new.id > max(r[0] for r in before["datasets"])
    assert (facility.destination / "alice" / "after-upgrade" / "x.tif").read_bytes() == \
        b"x" * 5000
    after = raw_rows(old_journal)
    for table in ("files", "events", "sessions"):  # appended to, never changed
        assert set(before[table]) <= set(after[table]), table
    for table in ("datasets", "outbox", "jobs"):  # rows may move on, none goes away
        assert {r[0] for r in before[table]} <= {r[0] for r in after[table]}, table
    old = {r[0]: r for r in before["datasets"]}
    for row in after["datasets"]:
        if row[0] in old:
            assert row[4] == old[row[0]][4]
    assert len(after["files"]) > len(before["files"])
    assert journal.owner == facility.agent_id
    report = grace_report(facility, journal)
    [entry] = report.entries
    assert entry.dataset_id == new.id and entry.age_source == "delivered"
    assert 0 <= entry.age_days < 0.01
    assert report.to_dict()["generated_at"].endswith("+00:00")


def test_reading_an_old_journal_runs_no_ddl_and_says_to_upgrade(old_journal):
    before = digest(old_journal)
    with pytest.raises(JournalError, match=r"needs an upgrade.*autotx journal upgrade -c"):
        Journal(url(old_journal), readonly=True)
    assert digest(old_journal) == before
    result = CliRunner().invoke(app, ["status", "-c", str(write_config(old_journal))])
    assert result.exit_code == 2 and "journal upgrade" in result.output
    assert digest(old_journal) == before


def test_reading_a_journal_that_does_not_exist_creates_nothing(tmp_path):
    missing = tmp_path / "managed" / "autotx.sqlite"
    with pytest.raises(JournalError, match="no journal at .* yet"):
        Journal(url(missing), readonly=True)
    assert not missing.parent.exists()


def test_a_reader_writes_nothing(tmp_path):
    Journal(url(tmp_path / "j.sqlite")).log("info", "note", "written")
    reader = Journal(url(tmp_path / "j.sqlite"), readonly=True)
    assert reader.recent_events(1)[0].message == "written"
    with pytest.raises(JournalError, match="read only"):
        reader.log("info", "note", "not written")


def write_config(journal_path: Path) -> Path:
    root = journal_path.parent.parent
    config = root / "autotx.toml"
    config.write_text(f'incoming = "{root / "incoming"}"\nmanaged = "{journal_path.parent}"\n'
                      f'destination = "{root / "storage"}"\n')
    return config


def test_upgrade_command_dry_run_then_upgrade(old_journal):
    config = write_config(old_journal)
    before = digest(old_journal)
    dry = CliRunner().invoke(app, ["journal", "upgrade", "-c", str(config), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would" in dry.output and "0001: stamp as the baseline" in dry.output
    assert "0002" in dry.output and "UPDATE alembic_version" in dry.output
    assert digest(old_journal) == before  # a dry run changes nothing
    done = CliRunner().invoke(app, ["journal", "upgrade", "-c", str(config)])
    assert done.exit_code == 0 and "did" in done.output, done.output
    again = CliRunner().invoke(app, ["journal", "upgrade", "-c", str(config), "--json"])
    assert again.exit_code == 0 and '"needed": false' in again.output
    assert Journal(url(old_journal), readonly=True).all_datasets()


def test_journal_of_a_newer_autotx_is_refused_with_its_version(old_journal):
    Journal(url(old_journal)).close()
    db = sqlite3.connect(old_journal)
    db.execute("UPDATE alembic_version SET version_num = '0099_future'")
    db.commit()
    db.close()
    before = digest(old_journal)
    for readonly in (False, True):
        with pytest.raises(JournalError, match=r"revision 0099_future, newer than this autotx"):
            Journal(url(old_journal), readonly=readonly)
    with pytest.raises(JournalError, match="0099_future"):
        upgrade_journal(url(old_journal), dry_run=True)
    result = CliRunner().invoke(app, ["journal", "upgrade", "-c", str(write_config(old_journal))])
    assert result.exit_code == 2 and "0099_future" in result.output
    assert digest(old_journal) == before


def test_tables_that_are_not_an_autotx_journal_are_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE datasets (id INTEGER PRIMARY KEY, title TEXT)")
    db.close()
    with pytest.raises(JournalError, match="datasets: missing user, name"):
        Journal(url(path))
    db = sqlite3.connect(path)
    assert not db.execute("SELECT name FROM sqlite_master WHERE name='alembic_version'").fetchall()


def test_migrations_build_exactly_the_schema_of_the_code(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    journal = Journal(url(tmp_path / "new.sqlite"))
    with journal.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), J.metadata)
    assert differences == []


def test_processes_opening_a_new_journal_at_once_upgrade_it_once(tmp_path):
    path = tmp_path / "managed" / "autotx.sqlite"
    start, errors = threading.Barrier(4), []

    def open_it() -> None:
        start.wait()
        try:
            Journal(url(path)).log("info", "note", threading.current_thread().name)
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    db = sqlite3.connect(path)
    assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(migrate.head(),)]
    assert db.execute("SELECT count(*) FROM events").fetchone() == (4,)


@pytest.mark.postgres
def test_old_postgresql_journal_upgrades_to_aware_times(postgres_url):
    """A journal of the old schema on PostgreSQL (naive timestamps) keeps its instants."""
    from alembic import command

    engine = create_engine(postgres_url)
    with engine.begin() as conn:  # the old schema, as the baseline migration builds it
        command.upgrade(migrate._alembic_config(connection=conn), migrate.BASELINE)
        conn.execute(text("DROP TABLE alembic_version"))  # the old release had none
        conn.execute(text(
            "INSERT INTO datasets (\"user\", name, stamp, state, incoming_path, "
            "processing_path, algorithm, total_files, total_bytes, copied_files, "
            "copied_bytes, attempts, created_at, updated_at, finished_at) VALUES ('alice', "
            "'exp', 's', 'done', 'i', 'p', 'xxh3_128', 1, 1, 1, 1, 0, "
            "'2026-11-30 10:00:00', '2026-11-30 10:00:00', '2026-11-30 23:30:00.25')"))
        conn.execute(text("INSERT INTO events (at, level, kind, message) VALUES "
                          "('2026-11-30 23:30:00', 'info', 'delivered', 'old')"))
    engine.dispose()
    plan = upgrade_journal(postgres_url, dry_run=True)  # shows the SQL, changes nothing
    assert plan.legacy and plan.steps[0].revision == migrate.BASELINE
    assert plan.steps[-1].revision == migrate.head()
    assert "TYPE TIMESTAMP WITH TIME ZONE USING finished_at AT TIME ZONE 'UTC'" in plan.sql
    assert upgrade_journal(postgres_url, dry_run=True).current is None
    journal = Journal(postgres_url)
    row = journal.datasets_in([J.DONE])[0]
    assert row.finished_at == dt.datetime(2026, 11, 30, 23, 30, 0, 250000, tzinfo=dt.UTC)
    old = [e for e in journal.recent_events(5) if e.message == "old"]
    assert old[0].at == dt.datetime(2026, 11, 30, 23, 30, tzinfo=dt.UTC)
    with journal.engine.connect() as conn:
        kind = conn.execute(text("SELECT data_type FROM information_schema.columns WHERE "
                                 "table_name = 'datasets' AND column_name = 'finished_at'"))
        assert kind.scalar() == "timestamp with time zone"
        from alembic.autogenerate import compare_metadata
        from alembic.migration import MigrationContext

        assert compare_metadata(MigrationContext.configure(conn), J.metadata) == []


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_times_are_aware_utc_whatever_zone_they_were_given_in(backend, tmp_path, request):
    target = url(tmp_path / "j.sqlite") if backend == "sqlite" else \
        request.getfixturevalue("postgres_url")
    journal = Journal(target)
    paris = dt.timezone(dt.timedelta(hours=1))
    job = journal.add_job("x", None, {})
    journal.update_job(job, started_at=dt.datetime(2026, 12, 1, 11, 0, tzinfo=paris),
                       finished_at=dt.datetime(2026, 12, 1, 10, 5))  # naive: taken as UTC
    row = journal.recent_jobs(1)[0]
    assert row.started_at == dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)
    assert row.started_at.utcoffset() == dt.timedelta(0)
    assert row.finished_at == dt.datetime(2026, 12, 1, 10, 5, tzinfo=dt.UTC)
    assert row.created_at.tzinfo is not None and J.utcnow() - row.created_at < dt.timedelta(
        minutes=5)
    # comparisons in SQL use the same instants
    early = dt.datetime(2026, 12, 1, 10, 30, tzinfo=dt.UTC)
    journal.update_job(job, state="error", next_attempt_at=early)
    assert [r.id for r in journal.due_jobs(["x"], early.astimezone(paris), early)] == [job]
    assert journal.due_jobs(["x"], early - dt.timedelta(seconds=1), early) == []


def test_journal_that_already_has_session_tables_keeps_them(old_journal):
    """Development builds before migrations created the session tables on first use."""
    db = sqlite3.connect(old_journal)
    db.executescript("""
        CREATE TABLE instrument_sessions (id INTEGER NOT NULL PRIMARY KEY,
            instrument VARCHAR(255) NOT NULL, user VARCHAR(255) NOT NULL, project VARCHAR(255),
            booking VARCHAR(255), note TEXT, started_by VARCHAR(32) NOT NULL,
            started_at DATETIME NOT NULL, last_activity_at DATETIME NOT NULL, ended_at DATETIME,
            end_reason VARCHAR(32));
        CREATE UNIQUE INDEX one_open_session_per_instrument ON instrument_sessions (instrument)
            WHERE ended_at IS NULL;
        INSERT INTO instrument_sessions VALUES (1, 'scope', 'alice', NULL, NULL, NULL, 'cli',
            '2026-11-30 08:00:00.000000', '2026-11-30 09:00:00.000000', NULL, NULL);
    """)
    db.close()
    journal = Journal(url(old_journal))
    from autotx_lib.journal.instrument_sessions import SessionStore

    session = SessionStore(journal).open_session("scope")
    assert session.user == "alice"
    assert session.started_at == dt.datetime(2026, 11, 30, 8, tzinfo=dt.UTC)
    assert {"live_files", "instrument_sessions"} <= set(raw_tables(old_journal))


def raw_tables(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    finally:
        db.close()
