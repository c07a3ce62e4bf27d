"""File rows: one per file of a dataset, with its digest once verified."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Row

from autotx_lib.journal._base import Records, bind
from autotx_lib.journal.schema import datasets, files, utcnow


class FileRecords(Records):
    """Queries and updates of ``files``."""

    def add_files(self, dataset_id: int, entries: Sequence[tuple[str, int, int]]) -> None:
        """Record the files of a dataset: (relpath, size, mtime_ns) each."""
        rows = [{"dataset_id": dataset_id, "relpath": r, "size": s, "mtime_ns": m,
                 "verified": False, "copies": 0} for r, s, m in entries]
        with self.engine.begin() as conn:
            for start in range(0, len(rows), 5000):
                conn.execute(insert(files), rows[start:start + 5000])

    def files_of(self, dataset_id: int, limit: int | None = None) -> list[Row]:
        """The file rows of a dataset (all, or the first ``limit``), in path order."""
        query = select(files).where(files.c.dataset_id == dataset_id).order_by(files.c.relpath)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def mark_verified(self, dataset_id: int, results: Sequence[dict[str, Any]],
                      copied_bytes: int, copied_files: int) -> None:
        """Record verified files in one transaction, with the dataset's progress.

        Each result has ``relpath``, ``digest``, ``size``, ``mtime_ns`` and ``copies``.
        """
        statement = (update(files)
                     .where(files.c.dataset_id == dataset_id)
                     .where(files.c.relpath == bind("relpath"))
                     .values(digest=bind("digest"), size=bind("size"),
                             mtime_ns=bind("mtime_ns"), verified=True,
                             copies=files.c.copies + bind("copies")))
        params = [{"b_" + k: v for k, v in r.items()} for r in results]
        with self.engine.begin() as conn:
            if params:
                conn.execute(statement, params)
            conn.execute(update(datasets).where(datasets.c.id == dataset_id).values(
                copied_bytes=copied_bytes, copied_files=copied_files, updated_at=utcnow()))

    def reset_files(self, dataset_id: int, relpaths: Iterable[str] | None = None) -> None:
        """Mark files (all when ``relpaths`` is None) as not verified, to be copied again."""
        statement = update(files).where(files.c.dataset_id == dataset_id)
        if relpaths is not None:
            statement = statement.where(files.c.relpath.in_(list(relpaths)))
        with self.engine.begin() as conn:
            conn.execute(statement.values(verified=False, digest=None))
