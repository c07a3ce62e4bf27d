"""What every kind of record shares: the journal's engine."""

from __future__ import annotations

from sqlalchemy import bindparam
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import BindParameter


class Records:
    """Base of the per-record mixins that make up :class:`~autotx_lib.journal.Journal`."""

    engine: Engine


def bind(name: str) -> BindParameter:
    """A bind parameter for executemany (prefixed, so it never clashes with a column)."""
    return bindparam("b_" + name)
