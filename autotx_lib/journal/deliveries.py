"""Delivery rows: one per (dataset, destination) when datasets go to several destinations."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import exists, insert, select, update
from sqlalchemy.engine import Row

from autotx_lib.journal._base import Records
from autotx_lib.journal.schema import DONE, datasets, deliveries, utcnow


class DeliveryRecords(Records):
    """Queries and updates of ``deliveries``."""

    def ensure_deliveries(self, dataset_id: int, targets: Sequence[tuple[str, bool]]) -> list[Row]:
        """The dataset's delivery rows, one per (name, required) of ``targets``, made where
        missing (state ``pending``); returned in the order of ``targets``."""
        known = {row.destination: row for row in self.deliveries_of(dataset_id)}
        missing = [{"dataset_id": dataset_id, "destination": name, "required": required,
                    "state": "pending", "attempts": 0, "updated_at": utcnow()}
                   for name, required in targets if name not in known]
        if missing:
            with self.engine.begin() as conn:
                conn.execute(insert(deliveries), missing)
            known = {row.destination: row for row in self.deliveries_of(dataset_id)}
        for name, required in targets:  # `required` follows the configuration
            if known[name].required != required:
                self.update_delivery(known[name].id, required=required)
        known = {row.destination: row for row in self.deliveries_of(dataset_id)}
        return [known[name] for name, _ in targets]

    def datasets_without(self, destination: str, since: dt.datetime | None = None
                         ) -> list[Row]:
        """Datasets done (delivered; the original in the grace area or purged) that have no
        delivery row for ``destination``, oldest first; with ``since``, only those finished
        at or after it (a destination added to the configuration later)."""
        has_row = select(deliveries.c.id).where(deliveries.c.dataset_id == datasets.c.id) \
            .where(deliveries.c.destination == destination)
        query = select(datasets).where(datasets.c.state == DONE).where(~exists(has_row)) \
            .order_by(datasets.c.id)
        if since is not None:
            query = query.where(datasets.c.finished_at >= since)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def deliveries_of(self, dataset_id: int) -> list[Row]:
        """Every delivery row of one dataset, in the order they were made."""
        query = select(deliveries).where(deliveries.c.dataset_id == dataset_id) \
            .order_by(deliveries.c.id)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def delivery(self, delivery_id: int) -> Row:
        """One delivery row by id."""
        with self.engine.connect() as conn:
            return conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)).one()

    def deliveries_for(self, dataset_ids: Iterable[int]) -> dict[int, list[Row]]:
        """Delivery rows of many datasets (for status): dataset id -> rows."""
        ids = list(dataset_ids)
        found: dict[int, list[Row]] = {i: [] for i in ids}
        if not ids:
            return found
        query = select(deliveries).where(deliveries.c.dataset_id.in_(ids)) \
            .order_by(deliveries.c.id)
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                found[row.dataset_id].append(row)
        return found

    def update_delivery(self, delivery_id: int, **values: Any) -> None:
        """Update columns of one delivery row (``updated_at`` is set too, and its dataset's:
        a delivery's change is a change of the dataset for those who follow it, the hub)."""
        values["updated_at"] = utcnow()
        dataset_id = select(deliveries.c.dataset_id).where(deliveries.c.id == delivery_id) \
            .scalar_subquery()
        with self.engine.begin() as conn:
            conn.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(**values))
            conn.execute(update(datasets).where(datasets.c.id == dataset_id)
                         .values(updated_at=values["updated_at"]))

    def catch_ups(self) -> list[Row]:
        """Deliveries still pending for datasets that are done (their original in the grace
        area): what optional destinations must catch up, oldest first."""
        query = (select(deliveries).join(datasets, datasets.c.id == deliveries.c.dataset_id)
                 .where(datasets.c.state == DONE).where(deliveries.c.state != "delivered")
                 .order_by(deliveries.c.id))
        with self.engine.connect() as conn:
            return list(conn.execute(query))
