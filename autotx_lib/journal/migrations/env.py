"""Alembic environment: runs on the connection :mod:`autotx_lib.journal.migrate` hands over.

There is no alembic.ini: the journal opens the database, takes the migration lock and
passes its connection in ``config.attributes["connection"]``. Offline mode (``--sql``)
prints the SQL for the dialect named in ``config.attributes["dialect"]``.
"""

from __future__ import annotations

from alembic import context

from autotx_lib.journal.schema import metadata


def run_migrations() -> None:
    """Run the migrations Alembic asked for, online (a connection) or offline (SQL text)."""
    config = context.config
    if context.is_offline_mode():
        context.configure(dialect_name=config.attributes.get("dialect", "sqlite"),
                          target_metadata=metadata, render_as_batch=True,
                          literal_binds=True, output_buffer=config.attributes.get("output"))
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes["connection"]
    # render_as_batch: SQLite cannot ALTER most things; batch mode copies the table instead
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():  # a no-op: the caller's transaction holds everything
        context.run_migrations()


if hasattr(context, "config"):  # inside an Alembic run (imported by anything else: nothing)
    run_migrations()
