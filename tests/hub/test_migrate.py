"""The hub's database schema comes from its own Alembic migrations."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from autotx_lib.errors import HubError
from autotx_lib.hub import migrate
from autotx_lib.hub import store as S


def schema_differences(engine) -> list:
    """What differs between the database and the tables the code uses."""
    with engine.connect() as conn:
        found = compare_metadata(MigrationContext.configure(conn), S.metadata)
    return [d for d in found if not (d[0] == "remove_table" and d[1].name ==
                                     migrate.VERSION_TABLE)]


def test_a_new_database_gets_exactly_the_code_schema(database):
    store = S.HubStore(database)
    try:
        assert schema_differences(store.engine) == []
        with store.engine.connect() as conn:
            assert migrate.current_revision(conn) == migrate.head()
        assert migrate.upgrade(database) == []  # opened again: nothing to do
    finally:
        store.close()


def test_a_hub_database_from_before_migrations_is_stamped_and_upgraded(database):
    engine = create_engine(database)
    baseline = [S.tokens, S.agents, S.events, S.datasets, S.commands, S.audit]
    S.metadata.create_all(engine, tables=baseline)  # what that release's create_all made
    with engine.begin() as conn:  # ... before datasets had deliveries (migration 0003)
        conn.execute(text("ALTER TABLE datasets DROP COLUMN deliveries"))
    engine.dispose()
    old = S.HubStore(database, create=False)
    token = old.add_token("admin", "admin")
    old.close()
    store = S.HubStore(database)
    try:
        assert store.token_for(token).name == "admin"  # nothing lost
        assert schema_differences(store.engine) == []
        with store.engine.connect() as conn:
            assert migrate.current_revision(conn) == migrate.head()
        assert store.upsert_runs("pc", [{"run_id": 1, "workflow": "w", "status": "created",
                                         "created_at": S.now(), "observed_at": S.now()}]) == 1
    finally:
        store.close()


def test_a_newer_schema_is_refused_untouched(tmp_path):
    url = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    S.HubStore(url).close()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '0099'"))
    with pytest.raises(HubError, match="revision 0099, newer than this autotx knows"):
        S.HubStore(url)
    with engine.connect() as conn:
        assert migrate.current_revision(conn) == "0099"
    engine.dispose()


def test_a_database_with_other_tables_of_those_names_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'other.sqlite'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE tokens (id INTEGER PRIMARY KEY, owner TEXT)"))
    with pytest.raises(HubError, match=r"tokens: missing name, role.*hub's own database"):
        S.HubStore(url)
    assert inspect(engine).get_table_names() == ["tokens"]  # nothing was changed
    engine.dispose()
