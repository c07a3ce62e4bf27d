"""File rows: one per file of a dataset, with its digest once verified."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import exists, false, insert, select, true, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql.dml import Insert, Update

from autotx_lib.journal._base import Records, bind
from autotx_lib.journal.schema import datasets, files, utcnow


class FileRecords(Records):
    """Queries and updates of ``files``."""

    def add_files(self, dataset_id: int, entries: Sequence[tuple[str, int, int]]) -> None:
        """Record the files of a dataset: (relpath, size, mtime_ns) each."""
        rows = [{"dataset_id": dataset_id, "relpath": r, "size": s, "mtime_ns": m, "copies": 0}
                for r, s, m in entries]
        with self.engine.begin() as conn:
            _execute_many(conn, _ADD_FILE, rows)

    def files_of(self, dataset_id: int, limit: int | None = None,
                 verified: bool | None = None) -> list[Row]:
        """The file rows of a dataset (all, or the first ``limit``), in path order.

        ``verified`` True or False: only the rows verified, or not verified, so far.
        """
        query = select(files).where(files.c.dataset_id == dataset_id).order_by(files.c.relpath)
        if verified is not None:
            query = query.where(files.c.verified == verified)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def any_verified(self, dataset_id: int) -> bool:
        """Whether any file of a dataset is verified (one indexed look-up, no rows read)."""
        query = select(exists().where(files.c.dataset_id == dataset_id)
                       .where(files.c.verified == true()))
        with self.engine.connect() as conn:
            return bool(conn.execute(query).scalar())

    def mark_verified(self, dataset_id: int, results: Sequence[dict[str, Any]],
                      copied_bytes: int, copied_files: int) -> None:
        """Record verified files in one transaction, with the dataset's progress.

        Each result has ``relpath``, ``digest``, ``size``, ``mtime_ns`` and ``copies``.
        """
        with self.engine.begin() as conn:
            if results:
                _execute_many(conn, _MARK_VERIFIED, [dict(r, dataset_id=dataset_id)
                                                    for r in results])
            conn.execute(update(datasets).where(datasets.c.id == dataset_id).values(
                copied_bytes=copied_bytes, copied_files=copied_files, updated_at=utcnow()))

    def reset_files(self, dataset_id: int, relpaths: Iterable[str] | None = None) -> None:
        """Mark files (all when ``relpaths`` is None) as not verified, to be copied again."""
        statement = update(files).where(files.c.dataset_id == dataset_id)
        if relpaths is not None:
            statement = statement.where(files.c.relpath.in_(list(relpaths)))
        with self.engine.begin() as conn:
            conn.execute(statement.values(verified=False, digest=None))


# Every value a bind parameter (the verified flag a SQL literal): one parameter set per file.
_ADD_FILE = insert(files).values(dataset_id=bind("dataset_id"), relpath=bind("relpath"),
                                 size=bind("size"), mtime_ns=bind("mtime_ns"),
                                 verified=false(), copies=bind("copies"))
_MARK_VERIFIED = (update(files)
                  .where(files.c.dataset_id == bind("dataset_id"))
                  .where(files.c.relpath == bind("relpath"))
                  .values(digest=bind("digest"), size=bind("size"), mtime_ns=bind("mtime_ns"),
                          verified=true(), copies=files.c.copies + bind("copies")))


def _execute_many(conn: Connection, statement: Insert | Update,
                  rows: Sequence[dict[str, Any]]) -> None:
    """Run ``statement`` once per row, as one executemany of the driver.

    SQLAlchemy builds each row's parameters in Python (about 30 us a row: a noticeable
    share of a 5,000-file dataset); here the statement is compiled once for the dialect
    and the rows go to the driver as they are. Every parameter of ``statement`` must be a
    :func:`bind` named after a key of the rows.
    """
    compiled = statement.compile(dialect=conn.dialect)
    if compiled.positional:
        names = [name[2:] for name in compiled.positiontup]
        params: list[Any] = [tuple(row[name] for name in names) for row in rows]
    else:
        names = [name[2:] for name in compiled.binds]
        params = [{"b_" + name: row[name] for name in names} for row in rows]
    conn.exec_driver_sql(compiled.string, params)
