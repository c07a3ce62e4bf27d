"""Alembic environment of the hub: runs on the connection :mod:`autotx_lib.hub.migrate`
hands over in ``config.attributes["connection"]`` (there is no alembic.ini).

The hub keeps its revision in ``hub_alembic_version``, so a hub database can never be
mistaken for a journal (``alembic_version``), even in one PostgreSQL database.
"""

from __future__ import annotations

from alembic import context

from autotx_lib.hub.store import metadata

VERSION_TABLE = "hub_alembic_version"


def run_migrations() -> None:
    """Run the migrations Alembic asked for on the caller's connection and transaction."""
    connection = context.config.attributes["connection"]
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                      version_table=VERSION_TABLE)
    with context.begin_transaction():  # a no-op: the caller's transaction holds everything
        context.run_migrations()


if hasattr(context, "config"):  # inside an Alembic run (imported by anything else: nothing)
    run_migrations()
