"""Alembic migrations of the hub's database (run by :mod:`autotx_lib.hub.migrate`)."""
