"""Alembic migrations of the journal (run by :mod:`autotx_lib.journal.migrate`)."""
