"""Dataset rows: one per folder the agent took from incoming/."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.engine import Row

from autotx_lib.errors import JournalError
from autotx_lib.journal._base import Records
from autotx_lib.journal.schema import ACTIVE_STATES, datasets, utcnow


class DatasetRecords(Records):
    """Queries and updates of ``datasets``."""

    def add_dataset(self, **values: Any) -> int:
        """Insert a dataset row; returns its id."""
        now = utcnow()
        values.setdefault("created_at", now)
        values.setdefault("updated_at", now)
        with self.engine.begin() as conn:
            return conn.execute(insert(datasets).values(**values)).inserted_primary_key[0]

    def update_dataset(self, dataset_id: int, **values: Any) -> None:
        """Update columns of one dataset row (``updated_at`` is set too)."""
        values["updated_at"] = utcnow()
        with self.engine.begin() as conn:
            conn.execute(update(datasets).where(datasets.c.id == dataset_id).values(**values))

    def set_progress(self, dataset_id: int, copied_bytes: int, copied_files: int) -> None:
        """Update the live progress counters of a dataset."""
        with self.engine.begin() as conn:
            conn.execute(update(datasets).where(datasets.c.id == dataset_id).values(
                copied_bytes=copied_bytes, copied_files=copied_files, updated_at=utcnow()))

    def dataset(self, dataset_id: int) -> Row:
        """One dataset row by id."""
        with self.engine.connect() as conn:
            row = conn.execute(select(datasets).where(datasets.c.id == dataset_id)).first()
        if row is None:
            raise JournalError(f"no dataset with id {dataset_id} in the journal")
        return row

    def datasets_in(self, states: Iterable[str]) -> list[Row]:
        """Datasets whose state is one of ``states``, oldest first."""
        query = select(datasets).where(datasets.c.state.in_(list(states))).order_by(datasets.c.id)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def all_datasets(self, limit: int | None = None) -> list[Row]:
        """Datasets, newest first."""
        query = select(datasets).order_by(datasets.c.id.desc())
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def known_processing_paths(self) -> set[str]:
        """Processing paths of every dataset the journal knows."""
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(select(datasets.c.processing_path))}

    def known_incoming_paths(self) -> set[str]:
        """Incoming paths of datasets the agent is working on (not finished)."""
        query = select(datasets.c.incoming_path).where(datasets.c.state.in_(ACTIVE_STATES))
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(query)}

    def datasets_changed_after(self, start: dt.datetime, after: tuple[dt.datetime, int],
                               limit: int) -> list[Row]:
        """Datasets updated at or after ``start`` and after the (updated_at, id) position
        ``after``, in that order: a cursor over changed rows."""
        later = or_(datasets.c.updated_at > after[0],
                    and_(datasets.c.updated_at == after[0], datasets.c.id > after[1]))
        query = (select(datasets).where(datasets.c.updated_at >= start).where(later)
                 .order_by(datasets.c.updated_at, datasets.c.id).limit(limit))
        with self.engine.connect() as conn:
            return list(conn.execute(query))
